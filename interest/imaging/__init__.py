"""Layer 1: images in, pixels and vectors out: image loading (images), pixel statistics (pixels), the
weight-free perceptual vector (perceptual), the backbones and the onnxruntime image encoder. Imports
only interest.core; never interest.learn."""
