"""The Ray engine: the image pipeline and batch scoring on Ray Data, for collections that outgrow one machine.

Embedding runs the local engine's stages (:mod:`interest.pipeline`): the
reader on the driver (hashing, cache lookup), then Ray Data stages that call
the shard runner's own steps: decode tasks on the CPUs, encoder actors (one
per GPU when they ask for GPUs; the model is loaded once per actor), write
tasks that write Parquet parts; the driver then consolidates the parts into
one ``embeddings.parquet`` exactly as the local engine does, so cache,
resume, limits and precision behave the same and downstream stages cannot
tell which engine ran. Scoring maps an actor pool of bundles over Parquet
embeddings.

On a cluster, every node must see the collection (and the model bundle) at
the same path: a shared file system (NFS, Lustre, a mounted bucket). Only
photo ids, paths, decoded pixels and embeddings travel through Ray's object store.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interest.errors import InterestError
from interest.features.images import DEFAULT_MAX_PIXELS
from interest.pipeline.writer import DEFAULT_PART_SIZE


def init_ray(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """Connect to the Ray cluster at ``address`` ("auto" for the local node's), or start a local one.

    A Ray instance already initialised in this process is reused as is.
    """
    from interest.errors import require

    ray = require("ray", "ray", "the Ray engine")
    if ray.is_initialized():
        return ray
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    except ConnectionError as exc:
        raise InterestError(
            f"Ray cluster at {address}: cannot connect ({exc}); start one with `ray start --head` "
            "and pass its address (e.g. 10.0.0.1:6379)"
        ) from None
    return ray


def _start(address: str | None, progress: bool) -> Any:
    """Ray, initialised, with Ray Data set to keep the input's row order (and quiet without ``progress``)."""
    ray = init_ray(address)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = progress
    if not progress:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray


def _actor_pool(concurrency: int | None, num_gpus: float) -> dict:
    """map_batches arguments for an actor pool: one actor per GPU, or per CPU slot."""
    import ray

    resources = ray.cluster_resources()
    if num_gpus > 0:
        n = concurrency or max(1, int(resources.get("GPU", 0) / num_gpus))
        return {"compute": ray.data.ActorPoolStrategy(size=n), "num_gpus": num_gpus}
    # one CPU slot stays free for Ray Data's read tasks: with every slot held
    # by an actor, the reads that feed them could never be scheduled
    n = concurrency or max(1, int(resources.get("CPU", 1)) - 1)
    return {"compute": ray.data.ActorPoolStrategy(size=n), "num_cpus": 1}


def _decode_stage(batch: dict[str, np.ndarray], transform: Any, max_pixels: int, shape: tuple) -> dict[str, np.ndarray]:
    """Ray decode task: the decoder's :func:`~interest.pipeline.decoder.decode_files` on one block of work items.

    Unreadable files keep their row with zero pixels and a reason, so every block has one fixed tensor shape.
    """
    from interest.pipeline.decoder import decode_files

    decoded = decode_files(list(batch["path"]), 0, transform, max_pixels)
    pixels = np.zeros((len(batch["path"]), *shape), dtype=np.float32)
    reason = np.full(len(pixels), "", dtype=object)
    if decoded.pixels is not None:
        pixels[decoded.index] = decoded.pixels
    for failure in decoded.failed:
        reason[failure.index] = failure.reason
    return {"row": batch["row"], "photo_id": batch["photo_id"], "sha256": batch["sha256"], "pixels": pixels,
            "reason": reason}


class _EncodeStage:
    """A Ray actor holding one backbone: the encoder step of the shard runner on decoded blocks."""

    def __init__(self, backbone_id: str, options: dict, threads: int | None) -> None:
        from interest.features.backbones import load_backbone
        from interest.pipeline.runner import shard_runner

        if threads:  # Ray gives an actor one thread per CPU it reserves; the model uses the cores as locally
            import torch

            torch.set_num_threads(threads)
            # Ray also sets OMP_NUM_THREADS=1 in an actor that reserves no CPU, and the onnxruntime encoder
            # (the CPU default) takes its threads from it: one thread ran Ray at 1.8x the local time
            os.environ["OMP_NUM_THREADS"] = str(threads)
        self.runner = shard_runner(load_backbone(backbone_id, **options))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.asarray([r == "" for r in batch["reason"]], dtype=bool)
        raw = np.zeros((len(ok), self.runner.encoder.dim), dtype=np.float32)
        raw[ok] = self.runner.encode(np.asarray(batch["pixels"])[ok])
        return {"row": batch["row"], "photo_id": batch["photo_id"], "sha256": batch["sha256"], "raw": raw,
                "reason": batch["reason"]}


def _write_stage(batch: dict[str, np.ndarray], folder: str, part_size: int) -> dict[str, np.ndarray]:
    """Ray write task: the embedded rows of a block as parts, through the runner's own write step.

    Parts are named by the block's first photo (content-addressed), so a retried task rewrites its own part.
    """
    import hashlib

    from interest.pipeline.runner import ShardRunner
    from interest.pipeline.writer import PartWriter

    ok = np.asarray([r == "" for r in batch["reason"]], dtype=bool)
    key = hashlib.sha256("\0".join(map(str, batch["photo_id"])).encode()).hexdigest()[:16]
    writer = PartWriter(Path(folder), part_size, prefix=f"ray-{key}-")
    ShardRunner.write(writer, np.asarray(batch["photo_id"])[ok], np.asarray(batch["sha256"])[ok],
                      np.asarray(batch["raw"], dtype=np.float32)[ok])
    writer.flush()
    return {"row": batch["row"], "reason": batch["reason"]}


def embed_collection_ray(
    root: str | os.PathLike,
    backbone_id: str | None = None,
    *,
    model: str = "ViT-B-32",
    pretrained: str | None = "laion2b_s34b_b79k",
    backbone: Any = None,
    address: str | None = None,
    cache_dir: str | None = None,
    precision: str = "fp32",
    encoder: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    part_size: int = DEFAULT_PART_SIZE,
    concurrency: int | None = None,
    num_gpus: float = 0.0,
    progress: bool = True,
) -> Path:
    """Embed a collection's photos on Ray; writes ``features/<backbone-id>/embeddings.parquet``.

    The image pipeline's stages on Ray Data: the reader on the driver (hashes,
    cache lookup: unchanged photos are not embedded again, parts of a killed
    run are kept), decode tasks on the CPUs (``workers`` at most at once),
    encoder actors (one per GPU with ``num_gpus``, else ``concurrency`` or
    one, using the cores as the local engine does), write tasks writing parts;
    then the same consolidation and photos.status as the local engine
    (:mod:`interest.pipeline.job`), so the table is the
    same. ``precision``, ``encoder``, ``batch_size``, ``max_pixels`` and
    ``part_size`` mean what they mean locally. ``address`` is the cluster's
    (None starts Ray on this machine); every node must see the collection at
    the same path.
    """
    import pyarrow as pa

    from interest.collection import embeddings_path
    from interest.pipeline.decoder import backbone_transform, default_batch_size
    from interest.pipeline.job import finish_run, open_backbone, read_work

    root = Path(root).resolve()
    if backbone is None:  # the driver's copy only names the space and its preprocessing: the actors encode,
        # so it skips building an onnxruntime encoder
        backbone = open_backbone(model, pretrained, backbone_id, cache_dir, "cpu", precision, encoder="torch")
    actor_device = "cuda" if num_gpus else "cpu"
    batch_size = batch_size or default_batch_size(actor_device)
    photos, work = read_work(root, backbone, progress)
    started = time.perf_counter()
    status: dict[int, str | None] = {}
    if work.todo:
        ray = _start(address, progress)
        transform = backbone_transform(backbone)
        shape = np.asarray(transform(_probe_image())).shape
        columns = work.todo_columns()
        table = pa.table({k: pa.array(list(v)) for k, v in columns.items()})
        # one block per batch, so decode tasks run side by side from the start (no repartition stage)
        ds = ray.data.from_arrow([table.slice(s, batch_size) for s in range(0, len(table), batch_size)])
        ds = ds.map_batches(
            _decode_stage, fn_kwargs={"transform": transform, "max_pixels": max_pixels, "shape": shape},
            batch_size=batch_size, batch_format="numpy", concurrency=workers, num_cpus=1,
        )
        heavy = bool(getattr(backbone, "has_text", False))  # a model (not the perceptual statistics) runs there
        threads = _torch_threads() if heavy and not num_gpus else None
        options = {"device": actor_device, "precision": precision, "cache_dir": cache_dir}
        if heavy:
            options["encoder"] = encoder
        # On a CPU the encoder actor reserves no slot: its model uses the cores through its threads, as the
        # local engine's model does beside the decoding workers; a reserved slot only kept a decode task waiting
        # (measured: Ray/local 1.86 with one, 1.50 without, 96 photos). Resources unlike the decode stage's
        # also keep Ray Data from fusing decoding into the actors, where it would run serially between batches.
        pool = {"num_gpus": num_gpus, "num_cpus": 0} if num_gpus else {"num_cpus": 0}
        n_actors = concurrency or (max(1, int(ray.cluster_resources().get("GPU", 0) / num_gpus)) if num_gpus else 1)
        ds = ds.map_batches(
            _EncodeStage, fn_constructor_kwargs={"backbone_id": backbone.id, "options": options, "threads": threads},
            batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=n_actors), **pool,
        )
        parts = embeddings_path(root, backbone.id).parent / "parts"
        parts.mkdir(parents=True, exist_ok=True)
        ds = ds.map_batches(_write_stage, fn_kwargs={"folder": str(parts), "part_size": part_size},
                            batch_size=part_size, batch_format="numpy", num_cpus=0)
        for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
            status.update({int(r): (reason or None) for r, reason in zip(batch["row"], batch["reason"])})
    embedded = sum(1 for s in status.values() if s is None)
    return finish_run(root, backbone, photos, work, status, embedded, time.perf_counter() - started, engine="ray")


def _probe_image():
    """A small grey image: run through the transform once to learn the shape of its output."""
    from PIL import Image

    return Image.new("RGB", (32, 32), (128, 128, 128))


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


class _Scorer:
    """A Ray actor holding one model bundle; scores batches of (photo_id, embedding) rows."""

    def __init__(self, model_path: str, user: str | None) -> None:
        import interest

        self.model = interest.load(model_path)
        self.user = user

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from interest.numeric import l2_normalize

        # the local engine's reader normalises the same way, so both score bit-identical inputs
        emb = l2_normalize(np.stack(batch["embedding"]).astype(np.float32), in_place=True)
        table = self.model.score_embeddings(emb, user=self.user)
        return {"photo_id": np.asarray(batch["photo_id"]).astype(str), **{c: table[c].to_numpy() for c in table.columns}}


def score_ray(
    model_path: str | os.PathLike,
    source: str | os.PathLike,
    *,
    user: str | None = None,
    address: str | None = None,
    batch_size: int = 4096,
    concurrency: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Score precomputed embeddings on Ray: the same table as ``interest.load(model_path).score(parquet)``.

    ``source`` is a Parquet file of (photo_id, embedding) or a collection
    directory (its embeddings for the model's backbone). Rows come back in
    the input's order.
    """
    import interest
    from interest.collection import check_parquet, embeddings_path

    model_path = Path(model_path).resolve()
    model = interest.load(model_path)
    if user is not None and user not in model.users:
        raise InterestError(f"user {user}: no head in {model_path}; run `interest personalize` first")
    source = Path(source).resolve()
    path = embeddings_path(source, model.backbone_id) if source.is_dir() else source
    check_parquet(path, ["photo_id", "embedding"])
    ray = _start(address, progress)
    ds = ray.data.read_parquet(str(path)).select_columns(["photo_id", "embedding"])
    ds = ds.map_batches(
        _Scorer,
        fn_constructor_kwargs={"model_path": str(model_path), "user": user},
        batch_size=batch_size,
        batch_format="numpy",
        **_actor_pool(concurrency, 0.0),
    )
    # rebuilt from NumPy batches so the dtypes are the local engine's, not Arrow-backed ones
    columns: dict[str, list[np.ndarray]] = {}
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        for name, values in batch.items():
            columns.setdefault(name, []).append(np.asarray(values))
    if not columns:
        raise InterestError(f"{path}: no embeddings in this file")
    table = pd.DataFrame({name: np.concatenate(parts) for name, parts in columns.items()})
    table["photo_id"] = table["photo_id"].to_numpy().astype(str)
    return table
