"""Scoring throughput on precomputed embeddings: common app model + trend groups + one user head.

Trains (or loads, with --model) a bundle on a synthetic world with 512-d
embeddings, then scores batches of embeddings with ``score_embeddings(emb,
user=...)`` and prints the median photos per second over repeats.

    .venv/bin/python benchmarks/bench_scoring.py                 # build a world and a model in a temp dir
    .venv/bin/python benchmarks/bench_scoring.py --model MODEL   # an existing bundle
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def build_model(workdir: Path, n_photos: int, n_users: int, dim: int):
    from interest.labels import label_collection
    from interest.models import train_model
    from interest.synthetic.world import generate_world

    world = workdir / "world"
    t = time.perf_counter()
    generate_world(world, n_users=n_users, n_photos=n_photos, render=False, embed_dim=dim, seed=0, progress=False)
    label_collection(world, seed=0, progress=False)
    print(f"world + labels: {n_photos} photos, {n_users} users, {dim}-d in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    model = train_model(world, workdir / "model", progress=False)
    print(f"train: {time.perf_counter() - t:.1f} s  steps: {model.metadata['timings_s']}")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an existing bundle (default: train one on a synthetic world)")
    parser.add_argument("--photos", type=int, default=50_000, help="photos in the synthetic world")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batches", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    import interest
    from interest.collection import l2_normalize

    with tempfile.TemporaryDirectory() as tmp:
        model = interest.load(args.model) if args.model else build_model(Path(tmp), args.photos, args.users, args.dim)
        user = model.users[0]
        rng = np.random.default_rng(0)
        print(f"model: backbone {model.backbone_id}, {len(model.users)} user heads; "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, cpus={os.cpu_count()}")
        print(f"{'batch':>8} {'median s':>9} {'photos/s':>10}  (median of {args.repeats}, app model + groups + head)")
        for batch in args.batches:
            # contract embeddings are L2-normalised (read_embeddings_file makes them so)
            emb = l2_normalize(rng.normal(size=(batch, model.dim)).astype(np.float32))
            model.score_embeddings(emb[:1000], user=user)  # warm up
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                model.score_embeddings(emb, user=user)
                times.append(time.perf_counter() - t)
            med = statistics.median(times)
            print(f"{batch:>8} {med:>9.4f} {batch / med:>10.0f}")


if __name__ == "__main__":
    main()
