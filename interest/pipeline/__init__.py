"""The one image pipeline: image files to embeddings, for every caller and every engine.

Stages, one small module each: ``reader`` (files or collection rows to work
items, hashing, the content-addressed cache), ``decoder`` (worker processes:
load with every guard of :mod:`interest.imaging.images`, preprocess in
NumPy), ``encoder`` (the slot a :class:`~interest.imaging.backbones.Backbone`
or an onnxruntime session fills), ``writer`` (Parquet parts, then one
table). ``runner`` composes them for one shard; the engines map that runner:
``local`` (this machine) and ``ray`` (a Ray cluster).
"""
