"""Engines that run the image pipeline over many images: local worker processes, or a Ray cluster (`ray.py`)."""
