"""Scoring throughput on precomputed embeddings, with and without a user head, and personalize's latency.

Trains (or loads, with --model) a bundle on a synthetic world with 512-d
embeddings, then, for each batch size, scores the same embeddings with
``score_embeddings(emb)`` and ``score_embeddings(emb, user=...)`` in
alternation (so both see the same machine load) and prints the median photos
per second of each and the ratio of their median times. Then
``personalize(user, liked)`` from ``--liked`` liked photos given as
embeddings: median milliseconds over ``--personalize-repeats`` calls.

``--against DIR`` runs the same measurements, round by round in alternation
with this checkout, in a child process that imports ``interest`` from DIR
(another version's source tree, e.g. ``git archive COMMIT | tar -x -C DIR``)
on the same bundle: a before/after comparison measured in one run.

    .venv/bin/python benchmarks/bench_scoring.py                 # build a world and a model in a temp dir
    .venv/bin/python benchmarks/bench_scoring.py --model MODEL   # an existing bundle
    .venv/bin/python benchmarks/bench_scoring.py --model MODEL --against /tmp/before --rounds 5
    .venv/bin/python benchmarks/bench_scoring.py --model MODEL --breakdown 100000   # each step's time
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_model(workdir: Path, n_photos: int, n_users: int, dim: int):
    from interest.stages.labels import label_collection
    from interest.stages.train import train_model
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


def measure(model, batches: list[int], repeats: int, liked: int, personalize_repeats: int) -> dict:
    """{"batches": {n: {"common_s", "user_s"}}, "personalize_ms"}: medians, common and head alternating."""
    from interest.core.numeric import l2_normalize

    user = model.users[0]
    rng = np.random.default_rng(0)
    out = {"batches": {}}
    for batch in batches:
        # contract embeddings are L2-normalised (read_embeddings_file makes them so)
        emb = l2_normalize(rng.normal(size=(batch, model.dim)).astype(np.float32))
        model.score_embeddings(emb[:1000], user=user)  # warm up
        times = {"common_s": [], "user_s": []}
        for _ in range(repeats):
            for name, kwargs in (("common_s", {}), ("user_s", {"user": user})):
                t = time.perf_counter()
                model.score_embeddings(emb, **kwargs)
                times[name].append(time.perf_counter() - t)
        out["batches"][str(batch)] = {name: statistics.median(v) for name, v in times.items()}
    # liked photos near the collection's photos (a head from random directions would lie "nowhere")
    anchors = model.heads.anchors_ if hasattr(model.heads, "anchors_") else None
    liked_emb = l2_normalize(rng.normal(size=(liked, model.dim)).astype(np.float32))
    if anchors is not None and anchors.shape[1] <= model.dim:
        # PCA coordinates back to embeddings: photos at some anchors of the heads
        back = model.pca.components_[: anchors.shape[1]].T @ anchors[rng.choice(len(anchors), liked)].T
        liked_emb = l2_normalize((back.T + model.pca.mean_).astype(np.float32))
    model.personalize("bench-personalize", liked_emb)  # warm up
    times = []
    for _ in range(personalize_repeats):
        t = time.perf_counter()
        model.personalize("bench-personalize", liked_emb)
        times.append(time.perf_counter() - t)
    out["personalize_ms"] = 1000 * statistics.median(times)
    out["personalize_worst_ms"] = 1000 * max(times)
    return out


def breakdown(model, batch: int, repeats: int) -> dict:
    """Median wall seconds of each step of scoring ``batch`` embeddings with a head, beside what the 2026-11-27
    code computed instead (a float32 projection; a head that was one dot product with the PCA features)."""
    from interest.learn.groups import centred_sq, novelty_at
    from interest.core.numeric import l2_normalize, matmul64

    rng = np.random.default_rng(0)
    emb = l2_normalize(rng.normal(size=(batch, model.dim)).astype(np.float32))
    user = model.users[0]
    Z, stack, nearest_score = model._project(emb, nearest_score=True)
    dist_sq = centred_sq(emb, model.pca.mean_)
    ci = model.booster.predict(Z[:, : model.booster_components], stack)
    F = np.column_stack([Z[:, : model.head_components], dist_sq])
    w = rng.normal(size=model.head_components).astype(np.float32)
    steps = {
        "projection, float64 accumulation (matmul64; since 1068d9e)": lambda: matmul64(emb, model._projection),
        "projection, float32 BLAS (the 11-27 code)": lambda: emb @ model._projection,
        "nearest prototype and its score": lambda: model.prototypes.predict_nearest(Z),
        "|x - mean|^2": lambda: centred_sq(emb, model.pca.mean_),
        "common score, trend group and probabilities": lambda: (
            model.booster.predict(Z[:, : model.booster_components], stack), model.groups.predict(ci),
            model.groups.predict_proba(ci, novelty_at(dist_sq, nearest_score))),
        "head on its own anchors: memberships times the user's row (since cf4cf49)": lambda: model.heads.deviation(user, F),
        "nearest prototype, with the head's memberships from its scores (heads on the prototypes)": lambda: (
            model.prototypes.predict_nearest(Z, lambda start, scores, top: model.heads.deviation_from_scores(
                user, scores, top, dist_sq[start : start + len(top)]))),
        "head: one dot product with the PCA features (the 11-27 head)": lambda: Z[:, : model.head_components] @ w,
        "whole call without a head": lambda: model.score_embeddings(emb),
        "whole call with a head": lambda: model.score_embeddings(emb, user=user),
    }
    out = {}
    for name, step in steps.items():
        step()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    return out


def cpu_name() -> str:
    """The CPU's model name (lscpu's, as BENCHMARKS.md records it)."""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an existing bundle (default: train one on a synthetic world)")
    parser.add_argument("--photos", type=int, default=50_000, help="photos in the synthetic world")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batches", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per batch and round")
    parser.add_argument("--liked", type=int, default=10, help="liked photos given to personalize")
    parser.add_argument("--personalize-repeats", type=int, default=21)
    parser.add_argument("--against", type=Path, help="another source tree of interest, measured in alternation")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds with --against")
    parser.add_argument("--breakdown", type=int, metavar="BATCH",
                        help="only time each step of scoring BATCH embeddings with a head (this checkout)")
    parser.add_argument("--child-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    import interest

    if args.child_json:  # one round, in the process that imports the other source tree
        model = interest.load(args.model)
        print(json.dumps(measure(model, args.batches, args.repeats, args.liked, args.personalize_repeats)))
        return

    if args.breakdown and args.model:
        model = interest.load(args.model)
        print(f"cpu {cpu_name()!r}; {args.breakdown} embeddings, median wall seconds of {args.repeats} calls")
        for name, seconds in breakdown(model, args.breakdown, args.repeats).items():
            print(f"{seconds:8.4f}  {name}")
        return

    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model_path = Path(args.model)
        else:
            build_model(Path(tmp), args.photos, args.users, args.dim)
            model_path = Path(tmp) / "model"
        model = interest.load(model_path)
        print(f"model: backbone {model.backbone_id}, {len(model.users)} user heads; cpu {cpu_name()!r}, "
              f"cpus={os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
        sources = {"this": Path(interest.__file__).resolve().parents[1]}
        if args.against:
            sources["against"] = args.against.resolve()
        rounds = {name: [] for name in sources}
        for _ in range(args.rounds if args.against else 1):
            for name, src in sources.items():
                cmd = [sys.executable, __file__, "--model", str(model_path), "--child-json", "--repeats", str(args.repeats),
                       "--liked", str(args.liked), "--personalize-repeats", str(args.personalize_repeats),
                       "--batches", *map(str, args.batches)]
                env = {**os.environ, "PYTHONPATH": str(src)}
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                rounds[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"median over {len(rounds['this'])} round(s) of the median of {args.repeats} calls; "
              "common = app model + trend groups, head = the same + one user head")
        print(f"{'source':>8} {'batch':>8} {'common/s':>10} {'head/s':>10} {'head/common time':>17}")
        summary = {}
        for name, results in rounds.items():
            for batch in map(str, args.batches):
                common = statistics.median(r["batches"][batch]["common_s"] for r in results)
                user = statistics.median(r["batches"][batch]["user_s"] for r in results)
                print(f"{name:>8} {batch:>8} {int(batch) / common:>10.0f} {int(batch) / user:>10.0f} {user / common:>17.2f}")
                summary[f"{name}/{batch}"] = {"common_per_s": int(batch) / common, "head_per_s": int(batch) / user,
                                              "ratio": user / common}
        for name, results in rounds.items():
            ms = statistics.median(r["personalize_ms"] for r in results)
            worst = max(r["personalize_worst_ms"] for r in results)
            print(f"{name:>8} personalize from {args.liked} liked embeddings: median {ms:.1f} ms, worst {worst:.1f} ms")
            summary[f"{name}/personalize_ms"] = ms
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
