"""Paper scale: label + train (user heads included) on 2,500 users and 500,000 photos, 512-d.

The world is generated once into benchmarks/out/paper-scale (embeddings written
directly, not rendered); label and train then run in a fresh process whose
wall time and peak resident memory are what we report.

    .venv/bin/python benchmarks/bench_paper_scale.py [--users 2500] [--photos 500000] [--dim 512]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from interest.stages.labels import label_collection
from interest.stages.train import train_model
root, out = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
label_collection(root, seed=0, progress=False)
t1 = time.perf_counter()
model = train_model(root, out, progress=False)
t2 = time.perf_counter()
print(json.dumps({"label_s": t1 - t0, "train_s": t2 - t1, "total_s": t2 - t0,
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
                  "user_heads": len(model.users), "train_steps_s": model.metadata["timings_s"],
                  "train_photos": model.metadata["data"]["n_train_photos"],
                  "train_favourites": model.metadata["data"]["n_favourites"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2500)
    parser.add_argument("--photos", type=int, default=500_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/paper-scale"))
    args = parser.parse_args()

    from interest.synthetic.world import generate_world

    world = args.out / f"world-{args.users}-{args.photos}-{args.dim}"
    if not (world / "favorites.parquet").exists():
        t0 = time.perf_counter()
        generate_world(world, n_users=args.users, n_photos=args.photos, render=False, embed_dim=args.dim, seed=0)
        gen_s = time.perf_counter() - t0
        gen_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        print(f"generated the world in {gen_s:.0f} s (peak RSS {gen_rss:.2f} GB)")
    model = args.out / "model"
    shutil.rmtree(model, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(world), str(model)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(proc.stderr)
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    figures["wall_s_with_startup"] = wall
    figures.update(users=args.users, photos=args.photos, dim=args.dim)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
