"""Batch scoring on Ray Data: an actor pool of model bundles mapped over Parquet embeddings.

``score_ray`` gives the same table as ``interest.load(model_path).score(parquet)``;
it lives in apps/ because it loads bundles through the :func:`interest.load`
facade, while :mod:`interest.pipeline.ray` (the embedding engine it connects
through) stays below the models.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from interest.core.errors import InterestError
from interest.pipeline.ray import init_ray


def start_ray(address: str | None, progress: bool) -> Any:
    """Ray, initialised, with Ray Data set to keep the input's row order (and quiet without ``progress``)."""
    ray = init_ray(address)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = progress
    if not progress:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray


def actor_pool(concurrency: int | None, num_gpus: float) -> dict:
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


class _Scorer:
    """A Ray actor holding one model bundle; scores batches of (photo_id, embedding) rows."""

    def __init__(self, model_path: str, user: str | None) -> None:
        import interest

        self.model = interest.load(model_path)
        self.user = user

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from interest.core.numeric import l2_normalize

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
    from interest.core.collection import check_parquet, embeddings_path

    model_path = Path(model_path).resolve()
    model = interest.load(model_path)
    if user is not None and user not in model.users:
        raise InterestError(f"user {user}: no head in {model_path}; run `interest personalize` first")
    source = Path(source).resolve()
    path = embeddings_path(source, model.backbone_id) if source.is_dir() else source
    check_parquet(path, ["photo_id", "embedding"])
    ray = start_ray(address, progress)
    ds = ray.data.read_parquet(str(path)).select_columns(["photo_id", "embedding"])
    ds = ds.map_batches(
        _Scorer,
        fn_constructor_kwargs={"model_path": str(model_path), "user": user},
        batch_size=batch_size,
        batch_format="numpy",
        **actor_pool(concurrency, 0.0),
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
