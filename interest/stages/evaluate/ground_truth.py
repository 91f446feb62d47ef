"""A synthetic world's truth: the evaluation against the photos' true commonality and common appeal."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from interest.core.collection import read_parquet_checked
from interest.stages.evaluate.metrics import spearman_or_none

if TYPE_CHECKING:
    from interest.models.base import EmbeddingModel


def truth_metrics(
    root: str | os.PathLike,
    model: EmbeddingModel,
    test_ids: pd.Series,
    scores: dict,
    baselines: dict,
    backbone_id: str,
    app_bundle: EmbeddingModel | None = None,
) -> dict | None:
    """Spearman against the true commonality: test photos, and photos the collection never held (by
    ``app_bundle`` too, when given: the bundle learned from the whole collection, never from those)."""
    gt = Path(root) / "ground_truth"
    if not (gt / "photos.parquet").is_file():
        return None
    truth = read_parquet_checked(gt / "photos.parquet", ["photo_id", "true_commonality"])
    if "true_commonality" not in truth:
        return None
    target = truth.set_index(truth["photo_id"].astype(str))["true_commonality"].reindex(test_ids.astype(str)).to_numpy(float)
    known = np.isfinite(target)
    out = {"test": {name: spearman_or_none(score[known], target[known]) for name, score in scores.items()}, "never_held": None}
    heldout_emb = gt / "heldout" / "embeddings.parquet"
    if heldout_emb.is_file() and (gt / "heldout" / "photos.parquet").is_file():
        from interest.synthetic.family import heldout_photos

        photos, emb = heldout_photos(root)
        # the generator writes held-out embeddings only in its own synthetic space
        if backbone_id == f"synthetic/d{emb.shape[1]}":
            target = photos["true_commonality"].to_numpy(float)
            never = {"model": model.score_embeddings(emb)["ci_score"].to_numpy(float)}
            never.update({name: np.asarray(b["score"](emb), dtype=float) for name, b in baselines.items()})
            if app_bundle is not None:
                never["app_bundle"] = app_bundle.score_embeddings(emb)["ci_score"].to_numpy(float)
            out["never_held"] = {name: spearman_or_none(v, target) for name, v in never.items()}
            out["n_never_held"] = int(len(photos))
    out["n_test"] = int(known.sum())
    return out


def ground_truth_metrics(
    root: str | os.PathLike, photo_ids: pd.Series, pred_ci: np.ndarray, label_ci: np.ndarray
) -> dict | None:
    """Spearman of the predicted and of the label CI against the test photos' true ``common_appeal`` (None off a synthetic world)."""
    path = Path(root) / "ground_truth" / "photos.parquet"
    if not path.is_file():
        return None
    truth = read_parquet_checked(path, ["photo_id", "common_appeal"])
    appeal = (
        truth.set_index(truth["photo_id"].astype(str).to_numpy())["common_appeal"]
        .reindex(photo_ids.astype(str).to_numpy())
        .to_numpy(dtype=float)
    )
    known = np.isfinite(appeal)
    return {
        "spearman_predicted": spearman_or_none(pred_ci[known], appeal[known]),
        "spearman_label": spearman_or_none(label_ci[known], appeal[known]),
        "n_photos": int(known.sum()),
    }
