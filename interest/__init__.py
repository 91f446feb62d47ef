"""interest: learn what makes images commonly or subjectively interesting from Flickr user favourites.

The photo-app API::

    import interest
    model = interest.load("models/flickr-vitb32")
    df = model.score(["a.jpg", "b.jpg"], user="alice")

``import interest`` stays light: torch and LightGBM load only when a model
or backbone is used.
"""

from __future__ import annotations

from importlib import metadata as _metadata
from typing import Any


try:
    __version__ = _metadata.version("interest")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["InterestModel", "__version__", "load"]


def __getattr__(name: str) -> Any:
    # imported on first use: ``import interest`` stays light (torch, pandas and LightGBM load with a model)
    if name == "load":
        from interest.scoring import load

        return load
    if name == "InterestModel":
        from interest.models.model import InterestModel

        return InterestModel
    raise AttributeError(f"module 'interest' has no attribute {name!r}")
