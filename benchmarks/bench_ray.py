"""Ray vs local engine for the same job on this machine, as a ratio: the overhead of the option to scale out.

Two jobs, each run by both engines on identical copies of one collection:
embedding the rendered photos with ViT-B-32 (random weights) and scoring
the embeddings of a larger synthetic collection. Ray's start-up (ray.init)
is reported apart: a cluster pays it once, not per job.

    .venv/bin/python benchmarks/bench_ray.py [--photos 96] [--scored 50000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

from bench_service import BACKBONE


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=96)
    parser.add_argument("--scored", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/interest-bench-ray"))
    args = parser.parse_args()

    import interest
    from interest.collection import embeddings_path
    from interest.features.embed import embed_collection
    from interest.labels import label_collection
    from interest.models.train import train_model
    from interest.pipeline.ray import embed_collection_ray, init_ray, score_ray
    from interest.synthetic.world import generate_world

    work = args.work
    images = work / "images_world"
    generate_world(images, n_users=30, n_photos=args.photos, n_topics=4, render=True, seed=0, progress=False, overwrite=True)
    scored = work / "scored_world"
    generate_world(scored, n_users=300, n_photos=args.scored, n_topics=24, render=False, embed_dim=512, seed=0,
                   progress=False, overwrite=True)
    label_collection(scored, progress=False)
    bundle = scored / "model"
    train_model(scored, bundle, progress=False)
    model = interest.load(bundle)
    source = embeddings_path(scored, model.backbone_id)

    start_up = timed(lambda: init_ray())
    embed_local, embed_ray, score_local, score_ray_s = [], [], [], []
    for i in range(args.repeats):
        a, b = work / f"local_{i}", work / f"ray_{i}"
        for copy in (a, b):
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(images, copy)
        embed_local.append(timed(lambda: embed_collection(a, backbone_id=BACKBONE, workers=0, batch_size=32, progress=False)))
        embed_ray.append(timed(lambda: embed_collection_ray(b, BACKBONE, batch_size=32, progress=False)))
        score_local.append(timed(lambda: model.score(source, progress=False)))
        score_ray_s.append(timed(lambda: score_ray(bundle, source, batch_size=8192, progress=False)))
        shutil.rmtree(a), shutil.rmtree(b)

    el, er = statistics.median(embed_local), statistics.median(embed_ray)
    sl, sr = statistics.median(score_local), statistics.median(score_ray_s)
    print(f"medians of {args.repeats} runs; local Ray instance on this machine (ray.init took {start_up:.1f} s, paid once)")
    print(f"embed {args.photos} photos with {BACKBONE}: local {el:6.2f} s   ray {er:6.2f} s   ray/local {er / el:.2f}")
    print(f"score {args.scored} embeddings (512-d):        local {sl:6.2f} s   ray {sr:6.2f} s   ray/local {sr / sl:.2f}")


if __name__ == "__main__":
    main()
