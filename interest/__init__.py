"""interest: learn what makes images commonly or subjectively interesting from Flickr user favourites.

The photo-app API::

    import interest
    model = interest.load("models/flickr-vitb32")
    df = model.score(["a.jpg", "b.jpg"], user="alice")

``import interest`` stays light: torch and LightGBM load only when a model
or backbone is used.
"""

from __future__ import annotations

import os
from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = _metadata.version("interest")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from interest.models.model import InterestModel

__all__ = ["InterestModel", "__version__", "load"]


def load(path: str | os.PathLike) -> "InterestModel":
    """Load a model bundle directory (see docs/models.md); raises InterestError if it is missing or damaged."""
    from interest.models.bundle import load_bundle

    return load_bundle(path)


def __getattr__(name: str) -> Any:
    if name == "InterestModel":
        from interest.models.model import InterestModel

        return InterestModel
    raise AttributeError(f"module 'interest' has no attribute {name!r}")
