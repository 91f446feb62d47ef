"""What a model is given to score, turned into embeddings: input dispatch and the backbone holder.

:func:`read_inputs` works out what kind of input :meth:`InterestModel.score`
got (image paths or folders, PIL images, an embeddings array, a DataFrame of
(photo_id, embedding), Parquet embeddings files) and returns embeddings of
the model's backbone. Images go through the image pipeline's shard runner
(:mod:`interest.pipeline.runner`), the very decoder and encoder that
``interest embed`` uses, so a file scores from the same embedding it would
have in a collection. :class:`BackboneHolder` loads the backbone once per
process, behind a lock, and checks it is the one the bundle was trained on.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from interest.errors import InterestError
from interest.features.backbones import BackboneOptions

DEFAULT_BACKBONE_OPTIONS = {"device": "cpu", "precision": "fp32", "cache_dir": None, "weights": None, "encoder": "auto"}


class BackboneHolder:
    """A model's image backbone: loaded on first use, once, with :meth:`configure`'s options.

    Models reloaded from a bundle of the same backbone share one holder, so
    a long-running service loads the backbone once per process.
    """

    def __init__(self) -> None:
        self.options = dict(DEFAULT_BACKBONE_OPTIONS)
        self.backbone = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the backbone is in memory already."""
        return self.backbone is not None

    def configure(self, options: BackboneOptions) -> None:
        """Where and how the backbone runs (see :meth:`InterestModel.configure_backbone`), checked now."""
        self.options = options.check().as_dict()

    def get(self, spec: dict, dim: int, name: str):
        """The backbone of bundle metadata ``spec`` (its ``backbone`` entry), loaded and checked once."""
        with self._lock:
            if self.backbone is None:
                self.backbone = _load_checked(str(spec["id"]), spec.get("preprocessing"), dim, name, self.options)
            return self.backbone


def _load_checked(backbone_id: str, want: dict | None, dim: int, name: str, options: dict):
    from interest.features.backbones import load_backbone

    options = dict(options)
    if options.get("precision") == "int8" and not backbone_id.endswith("@int8"):
        raise InterestError(
            f"{name} was trained on the fp32 embeddings of '{backbone_id}', and precision int8 embeds into its "
            f"own space ('{backbone_id}@int8'): load with precision='fp32', or train a model on "
            "`interest embed --precision int8` embeddings"
        )
    if backbone_id.startswith(("perceptual/", "synthetic/")):
        options["device"] = "cpu"  # weight-free: nothing to place on an accelerator
    elif options.get("device") == "auto":
        from interest.features.backbones import resolve_device

        options["device"] = resolve_device("auto")
    backbone = load_backbone(backbone_id, **options)
    have = getattr(backbone, "preprocessing", None)
    if want and have and want.get("checkpoint_sha256") and want.get("checkpoint_sha256") != have.get("checkpoint_sha256"):
        raise InterestError(
            f"backbone '{backbone_id}': the checkpoint loaded (sha256 {str(have.get('checkpoint_sha256'))[:12]}...) "
            f"is not the one {name} was trained on ({want['checkpoint_sha256'][:12]}...); give that file as "
            "weights= / --weights"
        )
    if want and have and "checkpoint_sha256" not in want:
        # trained on a tag's weights, given them as a file (weights=): the file's hash is not in the bundle
        have = {k: v for k, v in have.items() if k != "checkpoint_sha256"}
    if want and have:
        have, want = _jsonable(have), _jsonable(want)
        if have != want:
            differ = "; ".join(f"{k}: {have.get(k)!r} here, {want.get(k)!r} in training"
                               for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k))
            raise InterestError(
                f"backbone '{backbone_id}' preprocesses images unlike the embeddings {name} was trained on "
                f"({differ}); use the same backbone version the training embeddings came from"
            )
    if int(backbone.dim) != dim:
        raise InterestError(f"backbone '{backbone_id}' gives {backbone.dim}-d embeddings, {name} expects {dim}")
    return backbone


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, sort_keys=True, default=str))


def _runner(model: Any, batch_size: int):
    from interest.pipeline.runner import shard_runner

    return shard_runner(model.backbone, batch_size=batch_size)


def embed_images(model: Any, images: list, batch_size: int = 64) -> np.ndarray:
    """PIL images as the (n, dim) embeddings ``model.score_embeddings`` takes (raw rows for a head on raw features)."""
    emb = _runner(model, batch_size).embed_images(list(images), raw=model.needs_raw_features)
    return model._check_embeddings(emb)


def embed_files(model: Any, files: list[Path], errors: str, batch_size: int, progress: bool,
                cache: str | os.PathLike | None = None):
    """(embeddings (n, dim), per-file reason or None) of image files; ``errors="raise"``: the first bad file raises.

    ``cache``: a folder of embeddings by file content (:mod:`interest.pipeline.file_cache`); files seen
    before are not embedded again."""
    from interest.features.images import BadImage
    from interest.progress import progress_bar

    with progress_bar(total=len(files), desc="score", unit="img", enabled=progress, leave=False) as bar:
        if cache is None:
            emb, failures = _runner(model, batch_size).embed_files(files, raw=model.needs_raw_features, on_batch=bar.update)
        else:
            from interest.pipeline.file_cache import embed_files_cached

            emb, failures = embed_files_cached(_runner(model, batch_size), model.backbone, files, cache,
                                               raw=model.needs_raw_features, on_batch=bar.update)
    first = next((f for f in failures if f is not None), None)
    if first is not None and errors == "raise":
        raise BadImage(files[first.index], first.reason, first.detail)
    ok = np.array([f is None for f in failures], dtype=bool)
    if ok.any():
        emb[ok] = model._check_embeddings(emb[ok])
    return emb, [None if f is None else f.reason for f in failures]


def read_inputs(model: Any, inputs: Any, errors: str = "raise", batch_size: int = 64, progress: bool = False,
                cache: str | os.PathLike | None = None):
    """(id column name, ids, embeddings, per-row problem or None) for any input :meth:`InterestModel.score` accepts;
    ``cache``: see :func:`embed_files`."""
    import pandas as pd
    from PIL import Image

    from interest.collection import embeddings_file_backbone, read_embeddings_file

    if isinstance(inputs, np.ndarray):
        emb = model._check_embeddings(inputs)
        return "index", np.arange(len(emb)), emb, [None] * len(emb)
    if isinstance(inputs, pd.DataFrame):
        for col in ("photo_id", "embedding"):
            if col not in inputs.columns:
                raise InterestError(f"input DataFrame: missing column '{col}'; give photo_id and embedding")
        try:
            emb = np.stack([np.asarray(e, dtype=np.float32) for e in inputs["embedding"]]) if len(inputs) else None
        except ValueError:
            raise InterestError("input DataFrame: column 'embedding' has rows of different lengths") from None
        if emb is None:
            raise InterestError("input DataFrame: no rows to score")
        if model.needs_raw_features and "norm" in inputs.columns:
            norms = norms_checked(np.asarray(inputs["norm"], dtype=np.float32), inputs["photo_id"], "input DataFrame")
            emb = emb * norms[:, None]
        return "photo_id", inputs["photo_id"].astype(str).to_numpy(), model._check_embeddings(emb), [None] * len(emb)
    single = isinstance(inputs, (str, os.PathLike, Image.Image)) or not hasattr(inputs, "__iter__")
    items = [inputs] if single else list(inputs)
    if not items:
        raise InterestError("nothing to score: give image files, folders, PIL images or embeddings")
    if all(isinstance(x, Image.Image) for x in items):
        emb = embed_images(model, items, batch_size)
        return "index", np.arange(len(items)), emb, [None] * len(items)
    if any(isinstance(x, Image.Image) for x in items):
        raise InterestError("inputs mix PIL images and paths; score them in separate calls")
    bad = next((x for x in items if not isinstance(x, (str, os.PathLike))), None)
    if bad is not None:
        raise InterestError(
            f"cannot score a {type(bad).__name__}: give image paths, folders, PIL images, an embeddings array, "
            "a DataFrame (photo_id, embedding) or a Parquet embeddings file"
        )
    paths = [Path(x) for x in items]
    parquet = [p.suffix.lower() == ".parquet" and not p.is_dir() for p in paths]
    if any(parquet):
        if not all(parquet):
            raise InterestError("inputs mix Parquet embeddings and images; score them in separate calls")
        for p in paths:  # a collection's table names its backbone: another's embeddings are refused, not scored
            named = embeddings_file_backbone(p)
            if named is not None and named != model.backbone_id:
                raise InterestError(
                    f"{p}: embeddings of backbone '{named}' cannot be scored by {model.name}, trained on "
                    f"'{model.backbone_id}'; embed the photos with that backbone"
                )
        read = [read_embeddings_file(p) for p in paths]
        if model.needs_raw_features:
            read = [(ids, emb * stored_norms(p, ids, model.name)[:, None]) for p, (ids, emb) in zip(paths, read)]
        for p, (_, e) in zip(paths, read):
            if e.shape[1] != model.dim:
                raise InterestError(
                    f"{p}: {e.shape[1]}-d embeddings, but {model.name} expects {model.dim}-d embeddings of "
                    f"backbone '{model.backbone_id}'; embed the photos with that backbone"
                )
        ids = np.concatenate([r[0] for r in read])
        emb = model._check_embeddings(np.concatenate([r[1] for r in read]))
        return "photo_id", ids, emb, [None] * len(ids)
    from interest.features.images import expand_image_paths

    files = expand_image_paths(paths, strict=errors == "raise")
    emb, problems = embed_files(model, files, errors, batch_size, progress, cache)
    return "path", np.array([str(f) for f in files], dtype=object), emb, problems


def norms_checked(norms: np.ndarray, ids: Any, where: str) -> np.ndarray:
    """``norms`` when every one is a positive number; else one line naming the first photo without one."""
    bad = ~(np.isfinite(norms) & (norms > 0))
    if bad.any():
        raise InterestError(
            f"{where}: photo_id {np.asarray(ids)[np.argmax(bad)]} has no valid norm; re-embed it with `interest embed`"
        )
    return norms


def stored_norms(path: Path, ids: np.ndarray, name: str) -> np.ndarray:
    """The ``norm`` column of embeddings file ``path`` (rows ``ids``), for a head trained on raw features.

    One line naming the file when the column is missing, or the photo when its norm is.
    """
    from interest.collection import read_embedding_norms

    norms = read_embedding_norms(path)
    if norms is None:
        raise InterestError(
            f"{path}: no 'norm' column, but {name} applies to raw (un-normalised) features; re-embed with "
            "`interest embed` (which writes it) or score the raw embeddings as an array"
        )
    return norms_checked(norms, ids, str(path))
