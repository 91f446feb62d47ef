"""What drives CI: rank correlations, the model's own contributions and partial dependence.

Without a model, :func:`correlations` says how each characteristic and
metadata feature moves with the CI score of the collection. With one, the
LightGBM "full" variant of the common model (the one that sees metadata and
characteristics besides the embedding) explains its per-photo predictions
(:meth:`~interest.models.model.InterestModel.explain`: exact TreeSHAP
contributions), and
partial-dependence curves show how its mean prediction changes with each top
feature. The PCA components of the embedding and the first-level predictions
stacked under the booster (ridge, nearest prototype) are summed into one
"embedding (content)" row: individually they mean nothing to a reader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats as sps

from interest.core.numeric import spearman

if TYPE_CHECKING:
    from interest.models.model import Explanation

EMBEDDING = "embedding (content)"
# First-level predictions from the embedding that the booster is stacked on: part of the embedding row.
STACKED = ("ridge", "prototype")


def correlations(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Spearman correlation of each column with ``ci_score`` over the photos (model-free)."""
    rows = {}
    for col in columns:
        data = frame[[col, "ci_score"]].dropna()
        if len(data) < 3 or data[col].nunique() < 2:
            continue
        rho, p = sps.spearmanr(data[col], data["ci_score"])
        rows[col] = {"spearman": float(rho), "p": float(p), "n": len(data)}
    out = pd.DataFrame.from_dict(rows, orient="index", columns=["spearman", "p", "n"])
    out.index.name = "feature"
    if len(out):
        out = out.iloc[np.argsort(-out["spearman"].abs().to_numpy(), kind="stable")]
    return out


def explain(model, frame: pd.DataFrame, photo_ids: np.ndarray, emb: np.ndarray) -> Explanation:
    """The model's explanation of its full variant's predictions for these photos.

    ``frame`` holds the photo-table and characteristic columns, indexed by
    photo_id; the model builds its inputs itself, so the analysis explains
    exactly what the model computes. Raises InterestError when the model has
    no full variant.
    """
    return model.explain(emb, frame.loc[photo_ids].reset_index(drop=True))


def importance(explanation: Explanation) -> pd.DataFrame:
    """Mean |contribution| of each feature to the predicted CI, embedding parts summed into one row.

    ``direction`` is the Spearman correlation between a feature's value and
    its contribution: positive when higher values raise the predicted CI.
    """
    X, names, contrib = explanation.inputs, explanation.features, explanation.contributions
    is_embedding = np.array([n.startswith("pca_") or n in STACKED for n in names])
    rows = {
        EMBEDDING: {
            "mean_abs_contribution": float(np.abs(contrib[:, is_embedding].sum(axis=1)).mean()),
            "direction": np.nan,
        }
    }
    for j in np.flatnonzero(~is_embedding):
        x, c = X[:, j], contrib[:, j]
        ok = np.isfinite(x)
        direction = np.nan
        if ok.sum() > 2 and np.ptp(x[ok]) > 0 and np.ptp(c[ok]) > 0:
            direction = spearman(x[ok], c[ok])
        rows[names[j]] = {"mean_abs_contribution": float(np.abs(c).mean()), "direction": direction}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out["share_%"] = 100 * out["mean_abs_contribution"] / out["mean_abs_contribution"].sum()
    out.index.name = "feature"
    return out.sort_values("mean_abs_contribution", ascending=False, kind="stable")


def partial_dependence(
    explanation: Explanation, features: list[str], *, rows: np.ndarray | None = None, grid: int = 20
) -> pd.DataFrame:
    """Mean predicted CI as each feature is set to each of ``grid`` quantiles of its values (others as observed).

    ``rows``: the photos (indices into the explanation) to average over; all when None.
    """
    X = explanation.inputs if rows is None else explanation.inputs[rows]
    names = explanation.features
    out = []
    for feat in features:
        j = names.index(feat)
        values = X[:, j][np.isfinite(X[:, j])]
        if len(values) == 0 or np.ptp(values) == 0:
            continue
        for v in np.unique(np.quantile(values, np.linspace(0.02, 0.98, grid))):
            Xv = X.copy()
            Xv[:, j] = v
            out.append({"feature": feat, "value": float(v), "mean_prediction": float(explanation.predict(Xv).mean())})
    return pd.DataFrame(out, columns=["feature", "value", "mean_prediction"])
