"""Image features: loading (images), backbones, the embedding pipeline (embed),
characteristics, pixel statistics (pixels) and metadata features (metadata).

Import the submodules directly; this package imports nothing heavy on its own.
"""
