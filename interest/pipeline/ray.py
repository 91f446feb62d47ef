"""The Ray engine: the image pipeline as Ray tasks and actors, for collections that outgrow one machine.

Embedding runs the local engine's stages (:mod:`interest.pipeline`): the
reader on the driver (hashing, cache lookup), then Ray tasks and actors that
call the shard runner's own steps: decode tasks on the CPUs, encoder actors
(one per GPU when they ask for GPUs; the model is loaded once per actor),
write tasks that write Parquet parts; the driver then consolidates the parts
into one ``embeddings.parquet`` exactly as the local engine does, so cache,
resume, limits and precision behave the same and downstream stages cannot
tell which engine ran. The driver submits the batches itself, with a bounded
window, rather than through Ray Data stages: Ray Data starts its actor pool
only once its executor runs, about 3 s into every job on two cores, where a
plain actor starts with the job (measured on 224 photos, BENCHMARKS.md:
Ray / local 1.09 this way, 1.20 with the same steps as Ray Data stages;
1.00 once the actors also start before the driver loads its backbone).
Batch scoring on Ray Data is :mod:`interest.apps.ray_scoring` (it loads model bundles, a layer above).

On a cluster, every node must see the collection (and the model bundle) at
the same path: a shared file system (NFS, Lustre, a mounted bucket). Only
photo ids, paths, decoded pixels and embeddings travel through Ray's object store.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from interest.core.errors import InterestError
from interest.imaging.images import DEFAULT_MAX_PIXELS
from interest.pipeline.writer import DEFAULT_PART_SIZE

if TYPE_CHECKING:
    from interest.imaging.backbones import Backbone


def init_ray(address: str | None = None, *, num_cpus: int | None = None) -> Any:
    """Connect to the Ray cluster at ``address`` ("auto" for the local node's), or start a local one.

    A Ray instance already initialised in this process is reused as is.
    """
    from interest.core.errors import require

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


def _decode_task(columns: dict[str, np.ndarray], transform: Any, max_pixels: int, shape: tuple) -> dict[str, np.ndarray]:
    """Ray decode task: the decoder's :func:`~interest.pipeline.decoder.decode_files` on one batch of work items.

    Unreadable files keep their row with zero pixels and a reason, so every batch has one fixed tensor shape.
    """
    from interest.pipeline.decoder import decode_files

    decoded = decode_files(list(columns["path"]), 0, transform, max_pixels)
    pixels = np.zeros((len(columns["path"]), *shape), dtype=np.float32)
    reason = np.full(len(pixels), "", dtype=object)
    if decoded.pixels is not None:
        pixels[decoded.index] = decoded.pixels
    for failure in decoded.failed:
        reason[failure.index] = failure.reason
    return {"row": columns["row"], "photo_id": columns["photo_id"], "sha256": columns["sha256"], "pixels": pixels,
            "reason": reason}


class _EncoderActor:
    """A Ray actor holding one encoder: the encoder step of the shard runner on decoded batches.

    It starts empty, so it can start before the driver has loaded its
    backbone; :meth:`prepare` builds the encoder of a setup (see
    :func:`_encoder_setup`), and every :meth:`encode` carries the same setup,
    so an actor that Ray restarted builds it again. On a CPU the setup holds
    the driver's onnxruntime tower, whose session the actor opens with the
    setup's threads; otherwise the actor loads the backbone itself (torch: on
    a GPU, or where onnxruntime does not encode). The tower's file lies in
    the driver's encoder cache; an actor on a node that does not see it loads
    the backbone as well (exporting the tower into that node's cache), so a
    cluster without a shared cache still runs, only with a slower first start.
    """

    def __init__(self) -> None:
        self.runner: Any = None
        self.tower: Any = None

    def prepare(self, setup: dict) -> None:
        """Build the encoder of ``setup`` unless it is built."""
        if self.runner is None:
            self._build(**setup)

    def _build(self, backbone_id: str, options: dict, threads: int | None, tower: Any, dim: int) -> None:
        from interest.pipeline.encoder import TowerEncoder
        from interest.pipeline.runner import ShardRunner

        files = [getattr(t, "path", None) for t in (tower, getattr(tower, "reference", None)) if t is not None]
        if not all(Path(f).is_file() for f in files):
            tower = None  # not on this node: see above
        if tower is not None:
            if threads:  # Ray gives an actor one thread per CPU it reserves; the tower uses the cores as locally
                tower.threads = threads
            self.tower, self.runner = tower, ShardRunner(None, TowerEncoder(tower, dim))  # the decode tasks decode
            return
        from interest.imaging.backbones import load_backbone
        from interest.pipeline.runner import shard_runner

        if threads:
            import torch

            torch.set_num_threads(threads)
        backbone = load_backbone(backbone_id, **options)
        self.tower = getattr(backbone, "image_encoder", None)  # int8: measures its agreement here
        self.runner = shard_runner(backbone)

    def encode(self, batch: dict[str, np.ndarray], setup: dict) -> dict[str, np.ndarray]:
        """Raw embeddings of a decoded batch's readable rows (zero rows where unreadable)."""
        self.prepare(setup)
        ok = batch["reason"] == ""
        raw = np.zeros((len(ok), self.runner.encoder.dim), dtype=np.float32)
        raw[ok] = self.runner.encode(batch["pixels"][ok])
        return {"row": batch["row"], "photo_id": batch["photo_id"], "sha256": batch["sha256"], "raw": raw,
                "reason": batch["reason"]}

    def agreement_cosines(self) -> list[float]:
        """int8 only: the cosines with fp32 this actor measured (see :class:`~interest.imaging.onnx_encoder.Agreement`)."""
        measured = getattr(self.tower, "agreement", None)
        return [] if measured is None else list(measured.cosines)


def _write_task(folder: str, part_size: int, *batches: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Ray write task: the embedded rows of some encoded batches as parts, through the runner's own write step.

    Parts are named by the first batch's photos (content-addressed), so a retried task rewrites its own parts.
    """
    import hashlib

    from interest.pipeline.runner import ShardRunner
    from interest.pipeline.writer import PartWriter

    block = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    ok = block["reason"] == ""
    key = hashlib.sha256("\0".join(map(str, batches[0]["photo_id"])).encode()).hexdigest()[:16]
    writer = PartWriter(Path(folder), part_size, prefix=f"ray-{key}-")
    ShardRunner.write(writer, block["photo_id"][ok], block["sha256"][ok], block["raw"][ok])
    writer.flush()
    return {"row": block["row"], "reason": block["reason"]}


def embed_collection_ray(
    root: str | os.PathLike,
    backbone_id: str | None = None,
    *,
    model: str = "ViT-B-32",
    pretrained: str | None = "laion2b_s34b_b79k",
    backbone: Backbone | None = None,
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
    image_roots: Sequence[str | os.PathLike] = (),
) -> Path:
    """Embed a collection's photos on Ray; writes ``features/<backbone-id>/embeddings.parquet``.

    The image pipeline's steps as Ray tasks and actors: the reader on the
    driver (hashes, cache lookup: unchanged photos are not embedded again,
    parts of a killed run are kept), decode tasks on the CPUs (``workers`` at
    most at once; 0 or None: one per CPU of the cluster), encoder actors (one
    per GPU with ``num_gpus``, else ``concurrency`` or one, running the
    driver's onnxruntime tower when it has one and using the cores as the
    local engine does), write tasks writing parts; then the same
    consolidation and photos.status as the local engine
    (:mod:`interest.pipeline.job`), so the table is the same. ``precision``,
    ``encoder``, ``batch_size``, ``max_pixels`` and ``part_size`` mean what
    they mean locally, and so does ``image_roots``. ``address`` is the cluster's (None starts Ray on this
    machine); every node must see the collection at the same path.
    """
    from interest.core.collection import embeddings_path
    from interest.pipeline.decoder import backbone_transform, default_batch_size
    from interest.pipeline.job import finish_run, open_backbone, read_work
    from interest.core.progress import progress_bar

    root = Path(root).resolve()
    # In a session already connected to Ray (``ray.init`` paid once), the encoder actors start now, while the
    # driver loads its backbone and reads the work: on two cores that start was about 0.9 s of every job
    ray = _connected_ray()
    actors = _encoder_actors(ray, concurrency, num_gpus) if ray is not None else []
    status: dict[int, str | None] = {}
    try:
        if backbone is None:  # on a CPU the driver's backbone also resolves (exports and checks, once) the
            # onnxruntime tower the actors run; for GPU actors it only names the space and its preprocessing
            backbone = open_backbone(model, pretrained, backbone_id, cache_dir, "cpu", precision,
                                     encoder="torch" if num_gpus else encoder)
        batch_size = batch_size or default_batch_size("cuda" if num_gpus else "cpu")
        photos, work = read_work(root, backbone, progress, image_roots)
        started = time.perf_counter()
        if work.todo:
            ray = ray or init_ray(address)
            actors = actors or _encoder_actors(ray, concurrency, num_gpus)
            setup = ray.put(_encoder_setup(backbone, cache_dir, precision, encoder, num_gpus))
            for actor in actors:  # builds the encoders while the first batches decode
                actor.prepare.remote(setup)
            with progress_bar(total=len(work.todo), unit="img", desc=f"embed {backbone.id} (ray)",
                              enabled=progress) as bar:
                for done in _run_batches(ray, actors, setup, backbone_transform(backbone), work.todo_columns(),
                                         batch_size, workers, max_pixels, part_size,
                                         embeddings_path(root, backbone.id).parent, bar.update):
                    status.update({int(r): (reason or None) for r, reason in zip(done["row"], done["reason"])})
            measured = getattr(getattr(backbone, "image_encoder", None), "agreement", None)
            if measured is not None:  # int8: what the actors measured is the driver's backbone's to report
                for cosines in ray.get([actor.agreement_cosines.remote() for actor in actors]):
                    measured.add(np.asarray(cosines))
    finally:
        for actor in actors:  # their cores (or GPUs) are free for the next job at once
            ray.kill(actor)
    embedded = sum(1 for s in status.values() if s is None)
    return finish_run(root, backbone, photos, work, status, embedded, time.perf_counter() - started, engine="ray")


def _connected_ray() -> Any:
    """The ray module when this process is already connected to Ray, else None (nothing is started)."""
    try:
        import ray
    except ImportError:
        return None
    return ray if ray.is_initialized() else None


def _encoder_actors(ray: Any, concurrency: int | None, num_gpus: float) -> list:
    """The encoder actors, empty: one per GPU with ``num_gpus``, else ``concurrency`` or one."""
    if num_gpus:
        n = concurrency or max(1, int(ray.cluster_resources().get("GPU", 0) / num_gpus))
        resources = {"num_gpus": num_gpus, "num_cpus": 1}
    else:
        # On a CPU the encoder reserves no slot: its model uses the cores through its threads, as the local
        # engine's model does beside the decoding workers; a reserved slot only kept a decode task waiting
        # (measured: Ray/local 1.86 with one, 1.50 without, 96 photos)
        n, resources = concurrency or 1, {"num_cpus": 0}
    remote = ray.remote(_EncoderActor).options(max_restarts=2, max_task_retries=2, **resources)
    return [remote.remote() for _ in range(n)]


def _encoder_setup(backbone: Backbone, cache_dir: str | None, precision: str, encoder: str, num_gpus: float) -> dict:
    """What an encoder actor builds its encoder from (see :meth:`_EncoderActor.prepare`)."""
    heavy = bool(getattr(backbone, "has_text", False))  # a model (not the perceptual statistics) runs there
    tower = None if num_gpus else getattr(backbone, "image_encoder", None)
    options = {"device": "cuda" if num_gpus else "cpu", "precision": precision, "cache_dir": cache_dir}
    if heavy:  # on a CPU without a tower the driver found onnxruntime unusable: torch eager, as it chose
        options["encoder"] = "torch" if not num_gpus and tower is None else encoder
    return {"backbone_id": backbone.id, "options": options, "threads": _torch_threads() if heavy and not num_gpus
            else None, "tower": tower, "dim": int(backbone.dim)}


def _run_batches(ray: Any, actors: list, setup: Any, transform: Any, columns: dict[str, np.ndarray],
                 batch_size: int, workers: int | None, max_pixels: int, part_size: int, folder: Path,
                 on_batch: Any) -> Iterator[dict[str, np.ndarray]]:
    """Decode -> encode -> write every batch of ``columns``; yields each write task's (row, reason).

    At most ``workers`` decode tasks run at once, and a bounded number of
    decoded batches wait for an encoder, so memory stays flat however large
    the job; batches reach the actors in order, round robin.
    """
    from collections import deque

    shape = np.asarray(transform(_probe_image())).shape
    decode = ray.remote(_decode_task).options(num_cpus=1)
    write = ray.remote(_write_task).options(num_cpus=0)
    parts = folder / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    slots = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    decoding: list = []
    encoding: deque = deque()  # (rows, encoded ref), in batch order
    group: list = []
    group_rows = 0
    writes: list = []

    def flush() -> None:  # the grouped batches as one write task (parts of about part_size rows)
        nonlocal group, group_rows
        if group:
            writes.append(write.remote(str(parts), part_size, *group))
            group, group_rows = [], 0

    def collect_oldest() -> None:  # wait for the oldest batch's encoding and group it for writing
        nonlocal group_rows
        rows, ref = encoding.popleft()
        ray.wait([ref], fetch_local=False)
        group.append(ref)
        group_rows += rows
        on_batch(rows)
        if group_rows >= part_size:
            flush()

    for start in range(0, len(columns["row"]), batch_size):
        while len(decoding) >= slots:
            _, decoding = ray.wait(decoding, num_returns=1, fetch_local=False)
        while len(encoding) >= slots + 2 * len(actors):
            collect_oldest()
        batch = {k: v[start : start + batch_size] for k, v in columns.items()}
        decoded = decode.remote(batch, transform, max_pixels, shape)
        decoding.append(decoded)
        actor = actors[(start // batch_size) % len(actors)]
        encoding.append((len(batch["row"]), actor.encode.remote(decoded, setup)))
    while encoding:
        collect_oldest()
    flush()
    yield from ray.get(writes)


def _probe_image():
    """A small grey image: run through the transform once to learn the shape of its output."""
    from PIL import Image

    return Image.new("RGB", (32, 32), (128, 128, 128))


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
