"""The one image pipeline's local engine against the embed loop it replaced (git 69a39b1), same job, as a ratio.

The old ``interest.features.embed`` (a torch DataLoader of torchvision
transforms) is taken from git and run beside ``interest.pipeline.local`` on
fresh copies of the same rendered photos, with one loaded backbone (ViT-B-32,
random weights, the default encoder), the order alternating per repeat.
Prints the median times, their ratio and the largest difference between the
two tables' embeddings.

    .venv/bin/python benchmarks/bench_pipeline_ab.py [--photos 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

OLD = "69a39b1"  # the last commit with the DataLoader loop in interest/features/embed.py
BACKBONE = "openclip/ViT-B-32/none"


def old_embed_module(work: Path):
    source = subprocess.run(["git", "show", f"{OLD}:interest/features/embed.py"], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    path = work / "old_embed.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_embed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table(root: Path) -> np.ndarray:
    column = pq.read_table(root / "features" / BACKBONE / "embeddings.parquet").column("embedding")
    return np.stack(column.to_numpy(zero_copy_only=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/interest-bench-pipeline-ab"))
    args = parser.parse_args()

    from interest.imaging.backbones import load_backbone
    from interest.pipeline.local import embed_collection
    from interest.synthetic.world import generate_world

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    old = old_embed_module(args.work)
    world = args.work / "world"
    generate_world(world, n_users=20, n_photos=args.photos, n_topics=4, render=True, seed=0, progress=False)
    backbone = load_backbone(BACKBONE)
    engines = (("old", old.embed_collection), ("new", embed_collection))
    times: dict[str, list[float]] = {"old": [], "new": []}
    for r in range(args.repeats):
        for name, embed in engines if r % 2 == 0 else engines[::-1]:
            root = args.work / f"{name}{r}"
            shutil.copytree(world, root)
            start = time.perf_counter()
            embed(root, backbone=backbone, progress=False)
            times[name].append(time.perf_counter() - start)
    diff = float(np.abs(table(args.work / "old0") - table(args.work / "new0")).max())
    mo, mn = statistics.median(times["old"]), statistics.median(times["new"])
    print(f"{args.photos} photos, {BACKBONE}, encoder {backbone.encoder}, medians of {args.repeats}: "
          f"old loop {mo:.2f} s, pipeline {mn:.2f} s, pipeline/old {mn / mo:.3f}; "
          f"max |old - new| embedding {diff:.3g}")
    print("runs (s):", {k: [round(t, 2) for t in v] for k, v in times.items()})


if __name__ == "__main__":
    main()
