"""Models: the common model, the trend-group classifier, per-user heads, the bundle and training.

Light to import: the parts load LightGBM and scikit-learn only when used.
"""

from interest.models.bundle import load_bundle, save_bundle
from interest.models.model import InterestModel
from interest.models.study import LinearHeadModel
from interest.models.train import TrainConfig, train_model

__all__ = ["InterestModel", "LinearHeadModel", "TrainConfig", "load_bundle", "save_bundle", "train_model"]
