"""The synthetic Flickr world: a seeded collection with known ground truth (see docs/synthetic.md)."""

from interest.synthetic.world import generate_world

__all__ = ["generate_world"]
