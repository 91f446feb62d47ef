"""Label variants against the true commonality over the synthetic world family: median and worst world.

    nice -n 10 .venv/bin/python benchmarks/labels_ground_truth.py [--worlds flat-s0 ...]

For every world of ``interest.synthetic.family.FAMILY``: generate, then label
it with each variant (same seed, same photo and user split) and take the
Spearman correlation of ``ci_score`` with the photo's true commonality
(expected distinct users of the population, ``ground_truth/photos.parquet``),
over the definition photos and over the test photos:

* ``paper`` — ``--method paper``: k-means 200, Ward merge to 120, D_p / U;
* ``paper size-adjusted`` — the same, ``--commonality size_adjusted``;
* ``clusters, no merge`` — ``--method paper --merge-ratio 1``: the 200 clusters' D_c / U;
* ``photo distinct users`` — each photo's own count of distinct definition
  users (the ``distinct_users`` column), no smoothing;
* ``image (default)`` — the default label.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

VARIANTS = {
    "paper": dict(method="paper"),
    "paper size-adjusted": dict(method="paper", commonality="size_adjusted"),
    "clusters, no merge": dict(method="paper", merge_ratio=1.0),
    "photo distinct users": dict(method="paper"),  # reads the distinct_users column
    "image (default)": dict(),
}


def compare(root: Path) -> dict[str, float]:
    from interest.stages.labels import label_collection

    truth = pd.read_parquet(root / "ground_truth" / "photos.parquet").set_index("photo_id")["true_commonality"]
    out = {}
    for name, kwargs in VARIANTS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            labels = label_collection(root, seed=0, progress=False, **kwargs)
        score = labels["distinct_users"] if name == "photo distinct users" else labels["ci_score"]
        target = truth.reindex(labels["photo_id"]).to_numpy()
        for part in ("train", "test"):
            sel = (labels["set"] == part).to_numpy()
            out[f"{name} ({part})"] = spearmanr(score[sel], target[sel])[0]
    return out


def main() -> None:
    from interest.synthetic.family import FAMILY, make_family_world

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", default=FAMILY)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.worlds:
            root = Path(tmp) / name
            make_family_world(name, root, heldout_photos=0)
            rows[name] = compare(root)
            print(name, {k: round(v, 3) for k, v in rows[name].items()}, flush=True)
    table = pd.DataFrame(rows)
    table["median"] = table[list(rows)].median(axis=1)
    table["worst"] = table[list(rows)].min(axis=1)
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
