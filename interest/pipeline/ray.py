"""The Ray engine: embedding and batch scoring with Ray Data, for collections that outgrow one machine.

The same library functions as the local engine do the work; Ray only spreads
the batches. An actor pool holds the model (the backbone for embedding, the
bundle for scoring), one actor per GPU when the actors ask for GPUs, else one
per CPU slot (all but one, which Ray Data's read tasks need), so each model is
loaded once per actor, not once per batch.
Results stream back to the driver in input order and are written through the
on-disk contract (one ``embeddings.parquet``), so downstream stages cannot tell
which engine ran.

On a cluster, every node must see the collection (and the model bundle) at
the same path: a shared file system (NFS, Lustre, a mounted bucket). Only
photo ids, paths and embeddings travel through Ray's object store.
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


class _Embedder:
    """A Ray actor holding one backbone; embeds batches of (photo_id, path) rows of the photos table.

    Each file is read and transformed exactly as the local engine does it
    (:func:`interest.features.embed.embed_paths`), and hashed for the
    photos table's sha256 column.
    """

    def __init__(self, root: str, backbone_id: str, device: str, cache_dir: str | None) -> None:
        from interest.features.backbones import load_backbone

        self.root = Path(root)
        self.backbone = load_backbone(backbone_id, device=device, cache_dir=cache_dir)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from interest.features.embed import embed_paths, sha256_file

        keep = np.array([p is not None for p in batch["path"]], dtype=bool)  # photos without a file are skipped, as locally
        ids, rel = np.asarray(batch["photo_id"])[keep].astype(str), np.asarray(batch["path"])[keep]
        files = [self.root / str(p) for p in rel]
        shas = [sha256_file(f) for f in files]
        emb = np.full((len(files), self.backbone.dim), np.nan, dtype=np.float32)
        reasons = ["" for _ in files]
        readable = [i for i, sha in enumerate(shas) if sha is not None]
        for i, sha in enumerate(shas):
            if sha is None:
                reasons[i] = "file_not_found" if not files[i].exists() else "unreadable"
        if readable:
            got, why = embed_paths([files[i] for i in readable], self.backbone, batch_size=max(1, len(readable)))
            emb[readable] = got
            for i, reason in zip(readable, why):
                reasons[i] = reason or ""
        return {
            "photo_id": ids,
            "sha256": np.array([sha or "" for sha in shas], dtype=object),
            "reason": np.array(reasons, dtype=object),
            "embedding": emb,
        }


def embed_collection_ray(
    root: str | os.PathLike,
    backbone_id: str,
    *,
    address: str | None = None,
    cache_dir: str | None = None,
    batch_size: int = 64,
    concurrency: int | None = None,
    num_gpus: float = 0.0,
    progress: bool = True,
) -> Path:
    """Embed a collection's photos on Ray; writes ``features/<backbone_id>/embeddings.parquet``.

    The same table (photo ids, order, embeddings, sha256), manifest entry and
    photos.status as :func:`interest.features.embed.embed_collection` with
    the same backbone; every photo is embedded (the local engine's cache of
    unchanged files is not consulted). ``address`` is the cluster's (None
    starts Ray on this machine); ``num_gpus`` per actor (e.g. 1) puts one
    actor on each GPU; ``concurrency`` overrides the number of actors.
    """
    import pyarrow as pa

    from interest.collection import (
        embeddings_path,
        embeddings_to_arrow,
        read_table,
        table_path,
        update_manifest,
        write_parquet_atomic,
    )
    from interest.features.backbones import load_backbone
    from interest.features.embed import record_photo_status

    root = Path(root).resolve()
    photos = read_table(root, "photos", required=["photo_id", "path"])
    if len(photos) == 0:
        raise InterestError(f"{root / 'photos.parquet'}: no photos in this collection; collect or import some first")
    # the driver's copy only names the space and its preprocessing; the actors do the work
    backbone = load_backbone(backbone_id, device="cpu", cache_dir=cache_dir)
    ray = _start(address, progress)
    started = time.perf_counter()
    ds = ray.data.read_parquet(str(table_path(root, "photos"))).select_columns(["photo_id", "path"])
    ds = ds.map_batches(
        _Embedder,
        fn_constructor_kwargs={"root": str(root), "backbone_id": backbone_id, "device": "cuda" if num_gpus else "cpu", "cache_dir": cache_dir},
        batch_size=batch_size,
        batch_format="numpy",
        **_actor_pool(concurrency, num_gpus),
    )
    ids, shas, embs, bad, hashed = [], [], [], {}, {}
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        ok = np.array([r == "" for r in batch["reason"]], dtype=bool)
        ids.extend(np.asarray(batch["photo_id"])[ok].astype(str))
        shas.extend(np.asarray(batch["sha256"])[ok])
        embs.append(np.asarray(batch["embedding"], dtype=np.float32)[ok])
        bad.update({str(p): str(r) for p, r in zip(batch["photo_id"], batch["reason"]) if r != ""})
        hashed.update({str(p): str(h) for p, h in zip(batch["photo_id"], batch["sha256"]) if h != ""})
    seconds = time.perf_counter() - started
    emb = np.concatenate(embs) if embs else np.zeros((0, backbone.dim), dtype=np.float32)
    path = embeddings_path(root, backbone.id)
    table = embeddings_to_arrow(np.asarray(ids, dtype=str), emb).append_column("sha256", pa.array(list(shas), pa.string()))
    write_parquet_atomic(path, table)
    update_manifest(
        root, f"features/{backbone.id}", rows=len(ids), dim=int(backbone.dim), backbone_id=backbone.id,
        preprocessing=backbone.preprocessing, embedded=len(ids), cached=0, failed=len(bad),
        seconds=round(seconds, 3), random_weights=bool(getattr(backbone, "random_weights", False)), engine="ray",
    )
    # like the local engine, a damaged file's new hash is recorded too
    record_photo_status(root, ok=ids, bad=bad, hashes=hashed)
    return path


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
