"""What the safety checks cost: `interest.load` against a bare load of the same bundle, in the same run.

The bundle is trained with the default TrainConfig on the default synthetic
world (300 users, 3000 photos, 64-d embeddings). The baseline is what loading
did before the checks: read each part, check its sha256, ``np.load`` every
array (allow_pickle=False) and hand the LightGBM text straight to
``lgb.Booster``. ``interest.load`` adds the bounded JSON read, the npz header
and size checks, the per-tree LightGBM checks with the canonical rewrite, the
model.json type checks, and builds the InterestModel.

    nice -n 10 .venv/bin/python benchmarks/bench_bundle_load.py [--repeats 30] [--work /tmp/interest-bench-bundle]

Prints the median of each and their ratio, and the share of the LightGBM checks.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import statistics
import time
from pathlib import Path

import numpy as np


def build(work: Path) -> Path:
    from interest.stages.labels import label_collection
    from interest.stages.train import train_model
    from interest.synthetic.world import generate_world

    model = work / "model"
    if not (model / "model.json").is_file():
        generate_world(work / "world", render=False, embed_dim=64, seed=0, progress=False)
        label_collection(work / "world", seed=0, progress=False)
        train_model(work / "world", model, progress=False)
    return model


def bare_load(path: Path) -> None:
    import lightgbm as lgb

    meta = json.loads((path / "model.json").read_text())
    for name, digest in meta["parts"].items():
        data = (path / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest
        if name.endswith(".npz"):
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                {k: npz[k] for k in npz.files}
        else:
            lgb.Booster(model_str=data.decode())


def lgb_checks(path: Path) -> None:
    from interest.bundle import safe_io

    for name in sorted(p.name for p in path.glob("*.lgb.txt")):
        safe_io._canonical_lgb((path / name).read_text(), name, "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--work", type=Path, default=Path("/tmp/interest-bench-bundle"))
    args = parser.parse_args()
    import interest

    path = build(args.work)
    sizes = {p.name: p.stat().st_size for p in sorted(path.iterdir())}
    print("bundle:", ", ".join(f"{k} {v / 1024:.0f} kB" for k, v in sizes.items()))
    timings: dict[str, list[float]] = {"bare": [], "interest.load": [], "lgb checks": []}
    runs = {"bare": lambda: bare_load(path), "interest.load": lambda: interest.load(path), "lgb checks": lambda: lgb_checks(path)}
    for fn in runs.values():
        fn()  # warm: imports and page cache
    for _ in range(args.repeats):
        for name, fn in runs.items():  # interleaved, so a busy moment hits all three alike
            t = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in timings.items()}
    for k, v in med.items():
        print(f"{k:14s} median {v * 1000:7.1f} ms over {args.repeats}")
    print(f"ratio interest.load / bare: {med['interest.load'] / med['bare']:.2f}; "
          f"LightGBM checks are {med['lgb checks'] / med['interest.load']:.0%} of interest.load")


if __name__ == "__main__":
    main()
