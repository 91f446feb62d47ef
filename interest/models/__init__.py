"""Models: the common model and the study's model over embeddings (bundles on disk: interest.bundle; training:
interest.stages.train).

Light to import: the parts load LightGBM and scikit-learn only when used, and this package's names
are imported on first use (``interest.bundle`` reads the estimators here without loading the models).
"""

from typing import Any

__all__ = ["InterestModel", "LinearHeadModel"]

_HOMES = {"InterestModel": "model", "LinearHeadModel": "study"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(f"interest.models.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'interest.models' has no attribute {name!r}")
