"""Ray vs local engine for the same job on this machine, as a ratio: the overhead of the option to scale out.

Both engines run the one image pipeline (interest.pipeline) with the same
settings (backbone, batch size, precision, encoder, decoding workers: the
defaults) and start from the backbone id, as ``interest embed`` does: each
job loads the model it needs (Ray: in its encoder actor).
Jobs, each on fresh identical copies:

- embed a collection of rendered photos with ViT-B-32 (random weights);
- embed the same photos as a plain folder (``interest embed FOLDER``);
- re-run each on Ray: a cache hit (nothing embedded), timed too;
- score the embeddings of a larger synthetic collection.

Ray's start-up (``ray.init``) is reported apart: a cluster pays it once, not
per job. Each run checks that Ray's table equals the local one bit for bit.

    .venv/bin/python benchmarks/bench_ray.py [--photos 224] [--scored 20000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from bench_service import BACKBONE


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def stored(root: Path) -> tuple[list, np.ndarray]:
    from interest.core.collection import embeddings_path

    table = pq.read_table(embeddings_path(root, BACKBONE))
    return table.column("photo_id").to_pylist(), np.stack(table.column("embedding").to_numpy(zero_copy_only=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=224)
    parser.add_argument("--scored", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/interest-bench-ray"))
    args = parser.parse_args()

    import interest
    from interest.core.collection import embeddings_path, read_manifest
    from interest.imaging.backbones import load_backbone
    from interest.stages.labels import label_collection
    from interest.stages.train import train_model
    from interest.pipeline.local import embed_collection, embed_folder
    from interest.apps.ray_scoring import score_ray
    from interest.pipeline.ray import embed_collection_ray, init_ray
    from interest.pipeline.reader import folder_collection
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
    load_backbone(BACKBONE)  # once before timing: the onnxruntime encoder's one-off export is not part of a job

    start_up = timed(lambda: init_ray())
    times: dict[str, list[float]] = {k: [] for k in ("coll_local", "coll_ray", "coll_rerun", "dir_local", "dir_ray",
                                                      "dir_rerun", "score_local", "score_ray")}
    identical, cache_hits = True, True
    for i in range(args.repeats):
        for kind in ("coll", "dir"):
            a, b = work / f"{kind}_local_{i}", work / f"{kind}_ray_{i}"
            for copy in (a, b):
                shutil.rmtree(copy, ignore_errors=True)
            if kind == "coll":
                for copy in (a, b):
                    shutil.copytree(images, copy)
                local = lambda: embed_collection(a, backbone_id=BACKBONE, progress=False)  # noqa: E731
                remote = lambda: embed_collection_ray(b, BACKBONE, progress=False)  # noqa: E731
            else:
                local = lambda: embed_folder(images / "images", a, backbone_id=BACKBONE, progress=False)  # noqa: E731
                remote = lambda: embed_collection_ray(folder_collection(images / "images", b), BACKBONE,  # noqa: E731
                                                      progress=False, image_roots=[images / "images"])
            times[f"{kind}_local"].append(timed(local))
            times[f"{kind}_ray"].append(timed(remote))
            times[f"{kind}_rerun"].append(timed(remote))
            entry = read_manifest(b)["tables"][f"features/{BACKBONE}"]
            cache_hits &= entry["embedded"] == 0 and entry["cached"] == entry["rows"] > 0
            (ids_a, emb_a), (ids_b, emb_b) = stored(a), stored(b)
            identical &= ids_a == ids_b and np.array_equal(emb_a, emb_b)
            shutil.rmtree(a), shutil.rmtree(b)
        times["score_local"].append(timed(lambda: model.score(source, progress=False)))
        times["score_ray"].append(timed(lambda: score_ray(bundle, source, batch_size=8192, progress=False)))

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"medians of {args.repeats} runs; local Ray instance on this machine (ray.init took {start_up:.1f} s, paid once)")
    for kind, what in (("coll", "a collection"), ("dir", "a plain folder")):
        print(f"embed {args.photos} photos of {what} with {BACKBONE}: local {med[kind + '_local']:6.2f} s   "
              f"ray {med[kind + '_ray']:6.2f} s   ray/local {med[kind + '_ray'] / med[kind + '_local']:.2f}   "
              f"ray re-run (cache hit) {med[kind + '_rerun']:5.2f} s")
    print(f"score {args.scored} embeddings (512-d): local {med['score_local']:6.2f} s   ray {med['score_ray']:6.2f} s   "
          f"ray/local {med['score_ray'] / med['score_local']:.2f}")
    print(f"Ray's tables equal the local ones bit for bit: {identical}; every Ray re-run embedded nothing: {cache_hits}")


if __name__ == "__main__":
    main()
