"""The evaluation protocol: how well a model predicts commonality on held-out photos and users.

:mod:`.protocol` runs it (and its docstring describes it), :mod:`.metrics`
measures, :mod:`.baselines` gives the scores every figure stands beside,
:mod:`.ground_truth` reads a synthetic world's truth and :mod:`.formatting`
prints the result.
"""

from interest.stages.evaluate.formatting import format_metrics
from interest.stages.evaluate.metrics import (
    NDCG_AT,
    auc,
    group_metrics,
    ndcg_at,
    new_user_ranking,
    photo_level_commonality,
    spearman_or_none,
    split_half_reliability,
    user_ranking,
)
from interest.stages.evaluate.protocol import SPLIT_KEYS, evaluate, split_model

__all__ = [
    "NDCG_AT",
    "SPLIT_KEYS",
    "auc",
    "evaluate",
    "format_metrics",
    "group_metrics",
    "ndcg_at",
    "new_user_ranking",
    "photo_level_commonality",
    "spearman_or_none",
    "split_half_reliability",
    "split_model",
    "user_ranking",
]
