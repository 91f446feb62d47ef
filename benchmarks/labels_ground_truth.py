"""Paper CI vs size-adjusted CI against a synthetic world's ground truth.

    .venv/bin/python benchmarks/labels_ground_truth.py [--seeds 0 1 2] [--workdir DIR]

Generates the default synthetic world (generate_world defaults, embed_dim=64,
not rendered) once per seed, labels it with the default settings, and prints,
for ``ci_users`` (the paper's measure) and ``ci_size_adjusted``, Spearman
correlations over all labelled photos with

* the partition-mean true common appeal of the photos (``common_appeal``),
* the partition-mean true topic appeal (the topic's ``broad_appeal``, how much
  every user likes the topic, i.e. its popularity),

and the same over partitions (one value per partition, unweighted). Medians
over seeds are printed last.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

from interest.labels import label_collection
from interest.labels.ci import partitions_path
from interest.synthetic.world import generate_world


def compare(root: Path) -> dict[str, float]:
    """Spearman of both CI variants vs ground truth on one labelled world."""
    labels = pd.read_parquet(root / "labels.parquet")
    truth = pd.read_parquet(root / "ground_truth" / "photos.parquet")
    topics = pd.read_parquet(root / "ground_truth" / "topics.parquet")
    df = labels.merge(truth[["photo_id", "common_appeal", "topic"]], on="photo_id")
    df["topic_appeal"] = topics.set_index("topic")["broad_appeal"].reindex(df["topic"]).to_numpy()
    # Partition means over the definition photos: what the partition's CI describes.
    train = df[df["set"] == "train"]
    means = train.groupby("partition")[["common_appeal", "topic_appeal"]].mean()
    per_photo = df.join(means.add_suffix("_partition"), on="partition")
    parts = pd.read_parquet(partitions_path(root)).set_index("partition").join(means, how="inner")
    out = {}
    for ci in ("ci_users", "ci_size_adjusted"):
        for truth_col in ("common_appeal", "topic_appeal"):
            out[f"{ci} vs {truth_col} (photos)"] = spearmanr(per_photo[ci], per_photo[f"{truth_col}_partition"])[0]
            out[f"{ci} vs {truth_col} (partitions)"] = spearmanr(parts[ci], parts[truth_col])[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for seed in args.seeds:
            root = Path(tmp) / f"world{seed}"
            generate_world(root, render=False, embed_dim=64, seed=seed, progress=False)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                label_collection(root, seed=seed, progress=False)
            rows[f"seed {seed}"] = compare(root)
    table = pd.DataFrame(rows)
    table["median"] = table.median(axis=1)
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
