"""What float64 accumulation costs in scoring: the projection step and a whole score_embeddings call.

Scoring accumulates its matmuls in float64 (``interest.core.numeric.matmul64``)
so that a photo's score does not depend on its batch. This measures, on one
trained model in one run, the embedding projection (PCA + ridge, the costliest
step) in plain float32 (the earlier code) against matmul64, and the whole
``score_embeddings`` call, and checks the batch independence that pays for it.

    nice -n 10 .venv/bin/python benchmarks/bench_scoring_precision.py
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=10_000, help="photos in the synthetic training world")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=50_000, help="embeddings scored per call")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    from interest.core.collection import l2_normalize
    from interest.stages.labels import label_collection
    from interest.stages.train import train_model
    from interest.core.numeric import matmul64
    from interest.synthetic.world import generate_world

    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp) / "world"
        generate_world(world, n_users=200, n_photos=args.photos, render=False, embed_dim=args.dim, seed=0, progress=False)
        label_collection(world, seed=0, progress=False)
        model = train_model(world, Path(tmp) / "model", progress=False)
    emb = l2_normalize(np.random.default_rng(0).standard_normal((args.batch, args.dim)).astype(np.float32))
    P, b = model._projection, model._projection_offset
    user = model.users[0]

    float32 = timed(lambda: emb @ P + b, args.repeats)
    float64 = timed(lambda: (matmul64(emb, P) + b).astype(np.float32), args.repeats)
    whole = timed(lambda: model.score_embeddings(emb, user=user), args.repeats)
    whole_batches = model.score_embeddings(emb[:1000], user=user)
    split = [model.score_embeddings(emb[s : min(s + 128, 1000)], user=user) for s in range(0, 1000, 128)]
    import pandas as pd

    joined = pd.concat(split, ignore_index=True)
    same = joined.equals(whole_batches)
    differ = {c: int((joined[c].to_numpy() != whole_batches[c].to_numpy()).sum()) for c in joined}
    print(f"{args.batch} embeddings of {args.dim}-d, projection to {P.shape[1]} columns, median of {args.repeats}")
    print(f"projection float32 (baseline)  {float32 * 1e3:8.1f} ms  1.00")
    print(f"projection matmul64            {float64 * 1e3:8.1f} ms  {float64 / float32:.2f}")
    print(f"score_embeddings (whole call)  {whole * 1e3:8.1f} ms  {whole / float32:.2f}  ({args.batch / whole:,.0f} photos/s)")
    print(f"matmul64 share of the whole call: {float64 / whole:.2f}; batches of 128 equal one call bit for bit: {same}")
    if not same:
        print("values that differ, per column (of 1000):", {c: n for c, n in differ.items() if n})


if __name__ == "__main__":
    main()
