"""Model quality over the synthetic world family: truth, new users, photo-level counts; median and worst world.

For every world of ``interest.synthetic.family.FAMILY`` (four structures x two
seeds, 64-d embeddings written directly): generate, ``label`` (default), ``train``
(the app bundle: every user and photo), then score the 1,000 held-out photos the
collection never held through the public API
(``interest.load(bundle).score_embeddings``) and compare with their true
commonality; ``evaluate`` gives the new-user ranking and the photo-level
held-out counts (of the same training refitted on the label split, as it
evaluates an app bundle). In the same run, on the same split:

* ``model_split`` — the evaluation bundle (``train --evaluation-only``: the
  label split's training photos and users only, what every bundle learned
  from before the app bundle learned from everyone), on the same photos;

* ``study_recipe`` — the study's recipe done plainly (k-means 200, distinct
  users per cluster, no merge, ridge), computed by ``evaluate``;
* ``ridge_photo_users`` — a ridge from the embedding to each training photo's
  count of distinct (not held-out) users;
* ``package_paper`` — this package with ``label --method paper`` (Ward merge)
  and the same ``train``;
* ``model_booster`` — the same model scored with the booster's app score
  (``common_score: booster``), the default before the image-level score;
* ``random`` — a seeded random score.

    nice -n 10 .venv/bin/python benchmarks/bench_quality.py [--worlds flat-s0 ...] [--dim 512] [--json out.json]

``--dim`` generates every world with that embedding size instead of the family's 64.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path


def run_world(name: str, root: Path, dim: int | None = None) -> dict:
    import pandas as pd

    import interest
    from interest.core.collection import read_embeddings
    from interest.stages.evaluate import evaluate, spearman_or_none as _spearman
    from interest.stages.labels import label_collection, read_labels
    from interest.learn.linear import Ridge
    from interest.stages.train import TrainConfig, train_model
    from interest.synthetic.family import heldout_photos, make_family_world

    t0 = time.perf_counter()
    make_family_world(name, root, **({} if dim is None else {"embed_dim": dim}))
    photos, emb = heldout_photos(root)
    truth = photos["true_commonality"].to_numpy(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        label_collection(root, seed=0, progress=False)
    train_model(root, root / "model", progress=False)
    model = interest.load(root / "model")
    m = evaluate(model, root, progress=False)
    row = {"never_held": {k: v for k, v in m["truth"]["never_held"].items() if k != "app_bundle"}}
    # evaluate measured the app bundle refitted on the label split: the evaluation bundle
    row["never_held"]["model_split"] = row["never_held"].pop("model")
    row["never_held"]["model"] = _spearman(model.score_embeddings(emb)["ci_score"].to_numpy(float), truth)
    # the same fit with the booster's app score (common_score: booster, the default before the image-level score):
    # trained again with that setting, which changes nothing of the fit but the app score
    booster_model = train_model(root, None, config=TrainConfig(common_score="booster"), progress=False)
    row["never_held"]["model_booster"] = _spearman(booster_model.score_embeddings(emb)["ci_score"].to_numpy(float),
                                                   truth)

    # ridge on photo-level distinct users, on the same training photos and users
    labels = read_labels(root)
    train = labels[labels["set"] == "train"]
    _, ids, all_emb = read_embeddings(root)
    X = all_emb[pd.Index(ids).get_indexer(train["photo_id"].astype(str))]
    ridge = Ridge(seed=0).fit(X, train["distinct_users"].to_numpy(float))
    row["never_held"]["ridge_photo_users"] = _spearman(ridge.predict(emb), truth)

    # this package with the study's labelling recipe
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        label_collection(root, seed=0, method="paper", progress=False)
    paper_model = train_model(root, None, progress=False)
    row["never_held"]["package_paper"] = _spearman(paper_model.score_embeddings(emb)["ci_score"].to_numpy(float), truth)
    paper_m = evaluate(paper_model, root, progress=False)

    row["new_user_auc"] = {k: m["new_users"][k]["auc"] for k in ("model", "study_recipe", "random")}
    row["new_user_auc"]["package_paper"] = paper_m["new_users"]["model"]["auc"]
    row["new_user_ndcg"] = {k: m["new_users"][k]["ndcg"] for k in ("model", "study_recipe", "random")}
    row["photo_level_spearman"] = {k: m["photo_level"][k]["spearman"] for k in ("model", "study_recipe", "random")}
    row["photo_level_deviance_explained"] = {
        k: m["photo_level"][k]["deviance_explained"] for k in ("model", "study_recipe", "random")
    }
    row["test_truth"] = dict(m["truth"]["test"])
    row["n_new_users"] = m["new_users"]["n_users"]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def summarise(rows: dict[str, dict]) -> dict:
    """Median and worst (minimum) over worlds of every figure."""
    out = {}
    first = next(iter(rows.values()))
    for figure, values in first.items():
        if not isinstance(values, dict):
            continue
        out[figure] = {}
        for key in values:
            got = [r[figure][key] for r in rows.values() if r[figure].get(key) is not None]
            out[figure][key] = {"median": statistics.median(got), "worst": min(got)} if got else None
    return out


def main() -> None:
    from interest.synthetic.family import FAMILY

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", default=FAMILY)
    parser.add_argument("--dim", type=int, default=None, help="embedding size of every world (default: the family's 64)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.worlds:
            rows[name] = run_world(name, Path(tmp) / name, args.dim)
            print(name, json.dumps(rows[name]), flush=True)
    result = {"worlds": rows, "summary": summarise(rows)}
    print(json.dumps(result["summary"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
