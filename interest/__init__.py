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

from interest.errors import InterestError

try:
    __version__ = _metadata.version("interest")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from interest.models.model import InterestModel

__all__ = ["InterestModel", "__version__", "load"]


def load(
    path: str | os.PathLike,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    cache_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    encoder: str = "auto",
) -> "InterestModel":
    """Load a model bundle: a directory, or a Hugging Face Hub name ``hf-hub:ORG/NAME[@REVISION]``.

    A Hub bundle is fetched once into the Hugging Face cache (``HF_HOME``, or
    ``cache_dir``) and read from there afterwards, offline too. ``device``
    (cpu, cuda[:N], mps, auto), ``precision`` (fp32, fp16, bf16), ``cache_dir``
    (the backbone's weights cache or the folder of its local checkpoint) and
    ``weights`` (the backbone checkpoint file itself) and ``encoder`` (auto,
    torch or onnx: what runs the image tower) say how images are embedded;
    scoring embeddings needs none of them. Raises InterestError (one line) if
    the bundle is missing, damaged or not cached while offline.
    """
    from interest.hub import is_hub_name, resolve_bundle

    try:
        from interest.models.bundle import load_bundle

        if is_hub_name(str(path)):
            model = load_bundle(resolve_bundle(str(path), cache_dir=cache_dir))
            model.name = str(path)
        else:
            model = load_bundle(path)
    except ImportError as exc:  # a torch-free install (interest[onnx]) has no LightGBM or scipy
        raise InterestError(
            f"{path}: loading a model bundle needs {(exc.name or 'lightgbm').split('.')[0]}: "
            "pip install 'interest[research]' (or score an ONNX export with interest.onnx)"
        ) from None
    return model.configure_backbone(device=device, precision=precision, cache_dir=cache_dir, weights=weights,
                                    encoder=encoder)


def __getattr__(name: str) -> Any:
    if name == "InterestModel":
        from interest.models.model import InterestModel

        return InterestModel
    raise AttributeError(f"module 'interest' has no attribute {name!r}")
