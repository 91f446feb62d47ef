"""What the collection's counts allow: the package against honest and cheat ceilings on the world family.

For every world of ``interest.synthetic.family.FAMILY``: generate, ``label``
(default, seed 0), ``train``, then Spearman against the true commonality of the
1,000 held-out photos the collection never held, in the same run on the same
split (the training photos of ``labels.parquet``):

* ``package`` — ``interest.load(bundle).score_embeddings(emb)["ci_score"]``,
  the headline of bench_quality.py;
* ``ztp_linear`` — honest baseline: the package's zero-truncated Poisson
  (``interest.learn.linear.ZeroTruncatedPoisson``) from each training photo's
  embedding to its ``distinct_users``, no groups;
* ``cheat_ztp_true_unit`` — CHEAT: the same, with each photo's true sub-topic
  (``unit`` of ``ground_truth/photos.parquet``) as its group, and the held-out
  photos scored with their own true unit's effect;
* ``cheat_ztp_true_unit_owner`` — CHEAT: that, plus each photo's true
  ``owner_popularity`` as a fitted column, left out when scoring (the exposure
  removed);
* ``cheat_ridge_log_truth`` — CHEAT: ``interest.learn.linear.Ridge`` from the
  embedding to the log TRUE commonality (a target no collection has);
* ``cheat_ridge_log_truth_clusters`` — CHEAT: that, plus the mean truth
  residual of the photo's k-means cluster (100 clusters, seed 0, the package's
  ``fit_clusters``).

Every cheat uses ground truth no user has: they bound what a model of this
family could reach, not what the package should.

    nice -n 10 .venv/bin/python benchmarks/bench_ceiling.py [--worlds confounded-s1 ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

from bench_quality import summarise

COLUMNS = (
    "package",
    "ztp_linear",
    "cheat_ztp_true_unit",
    "cheat_ztp_true_unit_owner",
    "cheat_ridge_log_truth",
    "cheat_ridge_log_truth_clusters",
)
N_CLUSTERS = 100


def ceilings(name: str, root: Path) -> dict:
    """Generate, label and train world ``name`` under ``root``; Spearman of every column against the truth."""
    import numpy as np
    import pandas as pd

    import interest
    from interest.core.collection import read_embeddings
    from interest.stages.evaluate import spearman_or_none
    from interest.stages.labels import label_collection, read_labels
    from interest.stages.labels.ci import fit_clusters
    from interest.learn.linear import Ridge, ZeroTruncatedPoisson
    from interest.stages.train import train_model
    from interest.core.numeric import nearest_centroid
    from interest.synthetic.family import heldout_photos, make_family_world

    started = time.perf_counter()
    make_family_world(name, root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small world's labelling warnings are not what this measures
        label_collection(root, seed=0, progress=False)
    train_model(root, root / "model", progress=False)
    heldout, emb = heldout_photos(root)
    truth = heldout["true_commonality"].to_numpy(float)
    heldout_unit = heldout["unit"].to_numpy()

    train = read_labels(root).query("set == 'train'")
    train_ids = train["photo_id"].astype(str).to_numpy()
    _, ids, all_emb = read_embeddings(root)
    X = all_emb[pd.Index(ids).get_indexer(train_ids)]
    counts = train["distinct_users"].to_numpy(float)
    gt = pd.read_parquet(root / "ground_truth" / "photos.parquet")
    gt = gt.set_index(gt["photo_id"].astype(str)).loc[train_ids]
    unit = gt["unit"].to_numpy()

    def true_unit_effect(model: ZeroTruncatedPoisson) -> np.ndarray:
        # a held-out photo in a unit no training photo had gets no effect
        return pd.Series(model.group_effect_, index=model.groups_).reindex(heldout_unit).fillna(0.0).to_numpy()

    scores = {"package": interest.load(root / "model").score_embeddings(emb)["ci_score"].to_numpy(float)}
    scores["ztp_linear"] = ZeroTruncatedPoisson(seed=0).fit(X, counts).predict(emb)
    by_unit = ZeroTruncatedPoisson(seed=0).fit(X, counts, groups=unit)
    scores["cheat_ztp_true_unit"] = by_unit.predict(emb) + true_unit_effect(by_unit)
    with_owner = ZeroTruncatedPoisson(seed=0).fit(
        np.column_stack([X, gt["owner_popularity"].to_numpy(float)]), counts, groups=unit
    )
    scores["cheat_ztp_true_unit_owner"] = emb @ with_owner.coef_[:-1] + true_unit_effect(with_owner)
    log_truth = np.log(gt["true_commonality"].to_numpy(float))
    ridge = Ridge(seed=0).fit(X, log_truth)
    scores["cheat_ridge_log_truth"] = ridge.predict(emb)
    cluster, centroids = fit_clusters(X, N_CLUSTERS, seed=0)
    residual = np.bincount(cluster, log_truth - ridge.predict(X), N_CLUSTERS) / np.maximum(
        np.bincount(cluster, minlength=N_CLUSTERS), 1
    )
    scores["cheat_ridge_log_truth_clusters"] = ridge.predict(emb) + residual[nearest_centroid(emb, centroids)]

    row = {"spearman": {key: spearman_or_none(scores[key], truth) for key in COLUMNS}}
    row["seconds"] = round(time.perf_counter() - started, 1)
    print(name, json.dumps(row), flush=True)
    return row


def print_table(rows: dict[str, dict], summary: dict) -> None:
    """One line a world, then the median and the worst world of every column."""
    print(f"{'world':<16}" + "".join(f"{key:>32}" for key in COLUMNS))
    for name, row in rows.items():
        print(f"{name:<16}" + "".join(f"{row['spearman'][key]:>32.3f}" for key in COLUMNS))
    for stat in ("median", "worst"):
        print(f"{stat:<16}" + "".join(f"{summary['spearman'][key][stat]:>32.3f}" for key in COLUMNS))


def main() -> None:
    from interest.synthetic.family import FAMILY

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", default=FAMILY, help="family worlds to run (default: all eight)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = {name: ceilings(name, Path(tmp) / name) for name in args.worlds}
    summary = summarise(rows)
    print_table(rows, summary)
    if args.json is not None:
        args.json.write_text(json.dumps({"worlds": rows, "summary": summary}, indent=2, default=float))

if __name__ == "__main__":
    main()
