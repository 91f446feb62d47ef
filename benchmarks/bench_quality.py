"""Model quality on the default synthetic world: held-out CI against the split-half ceiling, user heads by activity.

Two versions of the default world (300 users, 3,000 photos, 24 topics), each
over several seeds: rendered as JPEGs and embedded with the weight-free
perceptual backbone (what `make demo` does), and with 64-d embeddings written
directly. Each is labelled, trained and evaluated with the package's own
protocol (`interest.evaluate`); we print the medians over seeds.

    .venv/bin/python benchmarks/bench_quality.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

BUCKETS = ("1-4", "5-19", "20-99", "100+", "20+")


def run_once(root: Path, *, render: bool, seed: int) -> dict:
    from interest.evaluate import evaluate
    from interest.features.embed import embed_collection
    from interest.labels import label_collection
    from interest.models.train import train_model
    from interest.synthetic.world import generate_world

    generate_world(root, render=render, embed_dim=None if render else 64, seed=seed, progress=False)
    if render:
        embed_collection(root, backbone_id="perceptual/v1", progress=False)
    label_collection(root, seed=seed, progress=False)
    model = train_model(root, root / "model", progress=False)
    metrics = evaluate(model, root, seed=seed, progress=False)
    buckets = {b["bucket"]: b for b in metrics["users"]["buckets"]}
    buckets["20+"] = metrics["users"]["20+"]
    row = {
        "spearman_heldout": metrics["ci"]["heldout"]["spearman"],
        "split_half_ceiling": metrics["reliability"]["split_half_spearman"],
        "ratio_to_split_half": metrics["ci"]["heldout"]["spearman_over_ceiling"],
        "ratio_to_full_set_ceiling": metrics["ci"]["heldout"]["spearman_over_full_ceiling"],
        "group_macro_f1": metrics["groups"]["macro_f1"],
        "spearman_vs_ground_truth_appeal": (metrics.get("ground_truth") or {}).get("spearman_predicted"),
    }
    for name in BUCKETS:
        bucket = buckets.get(name)
        row[f"auc_gain_{name}"] = None if bucket is None else bucket["auc_diff"]
        row[f"users_{name}"] = None if bucket is None else bucket["n_users"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    results = {}
    for name, render in (("rendered + perceptual/v1", True), ("direct 64-d embeddings", False)):
        rows = []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(run_once(Path(tmp) / "world", render=render, seed=seed))
            print(name, "seed", seed, json.dumps(rows[-1]), flush=True)
        results[name] = {
            key: statistics.median(r[key] for r in rows if r[key] is not None) if any(r[key] is not None for r in rows) else None
            for key in rows[0]
        }
    print(json.dumps({"seeds": args.seeds, "medians": results}, indent=2))


if __name__ == "__main__":
    main()
