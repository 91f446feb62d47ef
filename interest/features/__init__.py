"""Image features: loading (images), backbones, characteristics, pixel statistics (pixels) and metadata features (metadata).

Import the submodules directly; this package imports nothing heavy on its own.
"""
