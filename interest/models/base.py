"""What both kinds of bundle are in memory: a model over embeddings, arrays in, scores out.

:class:`EmbeddingModel` is the base of :class:`~interest.models.model.InterestModel`
(the trained full model) and :class:`~interest.models.study.LinearHeadModel` (the
study's imported head): the user heads, model.json, the checks every input goes
through, ``score`` over embeddings inputs, reloading and saving. What a subclass
says: ``capabilities``, ``score_embeddings``, ``check_embeddings``, ``personalize``,
``bundle_parts`` and ``from_bundle``. Images reach a model through
:mod:`interest.scoring`, whose models override :meth:`EmbeddingModel.read_inputs`.
"""

from __future__ import annotations

import copy
import os
import threading
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd

from interest.bundle.format import FULL_KIND
from interest.bundle.io import Bundle, read_bundle, write_bundle
from interest.core.errors import InterestError
from interest.core.hub import is_hub_name

Self = TypeVar("Self", bound="EmbeddingModel")

#: What :meth:`EmbeddingModel.read_inputs` gives: the id column's name, the ids, the embeddings, per-row problems.
Inputs = tuple[str, np.ndarray, np.ndarray, list]


class Heads(Protocol):
    """A table of user heads (:class:`~interest.learn.heads.UserHeads`, or the study's
    :class:`~interest.models.study.DirectionHeads`): personalising replaces it whole, never edits it."""

    users_: np.ndarray

    def has(self, user: str) -> bool: ...

    def deviations(self, users: list[str], Z: np.ndarray) -> np.ndarray: ...


class EmbeddingModel:
    """A model bundle in memory, over embeddings of one backbone. Build one with :func:`interest.load`.

    Attributes: ``backbone_id`` (the embedding space it was trained on),
    ``users`` (ids with a head), ``label_settings`` (how the training labels
    were made, incl. the trend-group cuts), ``metadata`` (the model.json
    content), ``dim`` (the embedding's size) and ``name`` (how error messages
    refer to it: its bundle path once loaded).
    """

    #: whether the common head reads raw (un-normalised) features; see interest.models.study
    needs_raw_features: bool = False
    #: the kind of bundle it is saved as (model.json ``kind``; see :mod:`interest.bundle.format`)
    kind: str = FULL_KIND

    def __init__(self, *, heads: Heads, metadata: dict, name: str = "model") -> None:
        self._heads = heads
        self.metadata = metadata
        self.name = name  # how error messages refer to the model (its bundle path once loaded)
        self._lock = threading.Lock()
        self.dim = int(metadata["backbone"]["dim"])
        self._k, self._h = 0, self.dim  # the full model sets its PCA's sizes

    @classmethod
    def from_bundle(cls: type[Self], bundle: Bundle) -> Self:
        """The model of a bundle read by :func:`interest.bundle.io.read_bundle` (of this class's kind)."""
        raise NotImplementedError

    @property
    def capabilities(self) -> frozenset[str]:
        """What this model can answer (columns of :meth:`score_embeddings`, ``metadata_model``)."""
        raise NotImplementedError

    def score_embeddings(self, emb: np.ndarray, user: str | None = None, metadata: pd.DataFrame | None = None,
                         backbone_id: str | None = None) -> pd.DataFrame:
        """Score precomputed embeddings (n, dim): one row each."""
        raise NotImplementedError

    def check_embeddings(self, emb: Any) -> np.ndarray:
        """Embeddings as the (n, dim) float32 rows the model scores; a wrong shape or a NaN is an InterestError."""
        raise NotImplementedError

    def personalize(self: Self, user: str, liked: Any, disliked: Any = None) -> Self:
        """Fit (or replace) ``user``'s head from photos they like (and dislike). Returns self."""
        raise NotImplementedError

    def bundle_parts(self) -> tuple[dict[str, bytes], dict]:
        """The bundle's part files as bytes by file name, and what model.json says of the estimators."""
        raise NotImplementedError

    def read_inputs(self, inputs: Any, errors: str = "raise", batch_size: int = 64, progress: bool = False,
                    cache: str | os.PathLike | None = None) -> Inputs:
        """(id column name, ids, embeddings, per-row problem or None) of embeddings inputs: an array, a DataFrame
        (photo_id, embedding) or Parquet embeddings files. Images need the backbone: :mod:`interest.scoring`."""
        read = read_embedding_inputs(self, inputs)
        if read is None:
            raise InterestError(
                f"{self.name} scores embeddings here (an array, a DataFrame (photo_id, embedding) or Parquet "
                "embeddings files); load it with interest.load to score images"
            )
        return read

    @property
    def backbone_id(self) -> str:
        """The id of the embedding space the model was trained on."""
        return str(self.metadata["backbone"]["id"])

    @property
    def label_settings(self) -> dict:
        """How the training labels were made (commonality, trend-group cuts, clusters, seed, ...)."""
        return dict(self.metadata.get("label_settings", {}))

    @property
    def users(self) -> list[str]:
        """Ids of the users that have a head."""
        return [str(u) for u in self._heads.users_]

    @property
    def heads(self) -> Heads:
        """The per-user heads (a :class:`UserHeads`; personalizing replaces it whole, never edits it)."""
        return self._heads

    @property
    def booster_components(self) -> int:
        """How many leading PCA components the LightGBM model and the group classifier see."""
        return self._k

    @property
    def head_components(self) -> int:
        """How many leading PCA components a user head lives in."""
        return self._h

    def with_heads(self: Self, heads: Heads) -> Self:
        """A copy of this model with other user heads (a :class:`UserHeads`), everything else shared."""
        new = copy.copy(self)
        new._heads = heads
        new._lock = threading.Lock()
        return new

    def reloaded(self: Self, path: str | os.PathLike) -> Self:
        """The bundle at ``path`` loaded again, sharing this model's backbone (loaded once per process).

        For a long-running service whose bundle another process personalized;
        ``path`` must hold a bundle of the same backbone.
        """
        bundle = read_bundle(path)
        if bundle.kind != self.kind:
            raise InterestError(f"{path}: holds a {bundle.kind} bundle, the running model is a {self.kind} one; restart with it")
        fresh = type(self).from_bundle(bundle)
        if fresh.backbone_id != self.backbone_id:
            raise InterestError(f"{path}: backbone {fresh.backbone_id} differs from the running model's {self.backbone_id}")
        fresh.backbone_holder = self.backbone_holder
        return fresh

    # ------------------------------------------------------------ scoring

    def score(
        self,
        inputs: Any,
        user: str | None = None,
        metadata: pd.DataFrame | None = None,
        errors: str = "raise",
        *,
        batch_size: int = 64,
        progress: bool = True,
        cache: str | os.PathLike | None = None,
    ) -> pd.DataFrame:
        """Score photos: image paths or folders (searched recursively, sorted), PIL images,
        an array of embeddings, a DataFrame (photo_id, embedding) or a Parquet embeddings file
        (images need the backbone: a model from :func:`interest.load`, see :mod:`interest.scoring`).

        The first column names each row: ``path`` (image files), ``photo_id``
        (embeddings with ids) or ``index`` (PIL images, a bare array). Then
        the columns of :meth:`score_embeddings`.

        Which common model: the ``app`` model (embedding only) unless
        ``metadata`` is given, a DataFrame with the photos-table columns
        (views, faves, comments, upload_date, owner_ispro, owner_occupation,
        and characteristic columns if the model used them; missing values are
        fine) for *every* photo: by ``photo_id`` when both sides have one,
        else one row per input in order. Then the ``full`` model is used.

        ``errors="raise"``: an unreadable image raises InterestError naming the
        file; ``"coerce"``: its row gets NaN scores and the reason in an ``error`` column.
        ``cache``: a folder that keeps image files' embeddings by their content
        (:mod:`interest.pipeline.file_cache`): scoring them again embeds only new or changed files.
        """
        if errors not in ("raise", "coerce"):
            raise InterestError(f"errors={errors!r}: choose 'raise' or 'coerce'")
        kind, ids, emb, problems = self.read_inputs(inputs, errors, batch_size, progress, cache)
        ok = np.array([p is None for p in problems], dtype=bool)
        meta = None if metadata is None else _align_metadata(metadata, kind, ids)
        if ok.all():
            scores = self.score_embeddings(emb, user=user, metadata=meta)
        else:
            if ok.any():
                good = self.score_embeddings(
                    emb[ok], user=user, metadata=None if meta is None else meta[ok].reset_index(drop=True)
                )
            else:  # nothing readable: score a placeholder row only to get the columns, then drop it
                good = self.score_embeddings(np.ones((1, self.dim), dtype=np.float32), user=user).iloc[:0]
            # failed rows point at row -1, which reindex fills with NaN
            scores = good.reindex(np.where(ok, np.cumsum(ok) - 1, -1)).reset_index(drop=True)
            if "trend_group" in scores:  # a bundle with only a common head may have no trend groups
                scores["trend_group"] = scores["trend_group"].astype("Int64")
        scores.insert(0, kind, ids)
        if errors == "coerce":
            scores["error"] = pd.array(problems, dtype="string")
        return scores

    def save(self, path: str | os.PathLike) -> None:
        """Write the model as a bundle directory (atomically: a crash leaves the old bundle intact)."""
        if is_hub_name(str(path)):
            raise InterestError(f"{path}: a Hub bundle is read-only here; save to a local directory instead")

        parts, described = self.bundle_parts()
        self.metadata = write_bundle(path, self.metadata, parts, described)  # with the parts' checksums and the time it was saved
        self.name = str(path)

    def __repr__(self) -> str:
        return f"InterestModel({self.name!r}, backbone={self.backbone_id!r}, users={len(self._heads.users_)})"

    # ------------------------------------------------------------ internals

    def _checked_rows(self, emb: Any) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings as (n, dim) float32 rows and their squared norms; a wrong shape or a NaN is an InterestError."""
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim == 1:
            emb = emb[None, :]
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise InterestError(
                f"embeddings of shape {emb.shape} cannot be scored by {self.name}: it expects (n, {self.dim}) "
                f"embeddings of backbone '{self.backbone_id}'; embed the photos with that backbone"
            )
        # a NaN or infinite value anywhere in a row makes its squared norm non-finite: one cheap pass
        sq = np.einsum("ij,ij->i", emb, emb)
        finite = np.isfinite(sq)
        if not finite.all():
            raise InterestError(
                f"embedding row {int(np.argmin(finite))} has NaN or infinite values; re-embed that photo"
            )
        return emb, sq

    def _check_user(self, heads: Heads, user: str) -> None:
        if not heads.has(user):
            raise InterestError(f"user {user} has no head in {self.name}; run `interest personalize` for them first")

def _align_metadata(metadata: pd.DataFrame, kind: str, ids: np.ndarray) -> pd.DataFrame:
    """``metadata`` with one row per input, in input order (by photo_id when both sides have one)."""
    if not isinstance(metadata, pd.DataFrame):
        raise InterestError(f"metadata must be a pandas DataFrame, not {type(metadata).__name__}")
    if kind == "photo_id" and "photo_id" in metadata.columns:
        keyed = metadata.assign(photo_id=metadata["photo_id"].astype(str)).drop_duplicates("photo_id")
        keyed = keyed.set_index("photo_id")
        missing = pd.Index(ids).difference(keyed.index)
        if len(missing):
            raise InterestError(
                f"metadata: no row for photo_id {missing[0]} ({len(missing)} missing); the full model needs "
                "metadata for every photo, or pass none to use the app model"
            )
        return keyed.loc[list(ids)].reset_index()
    if len(metadata) != len(ids):
        raise InterestError(
            f"metadata has {len(metadata)} rows for {len(ids)} inputs; give one row per input (or a photo_id column)"
        )
    return metadata.reset_index(drop=True)


def read_embedding_inputs(model: EmbeddingModel, inputs: Any) -> Inputs | None:
    """What :meth:`EmbeddingModel.read_inputs` reads of embeddings inputs; None when ``inputs`` are not embeddings
    (image files, folders, PIL images: :mod:`interest.scoring` reads those)."""
    if isinstance(inputs, np.ndarray):
        emb = model.check_embeddings(inputs)
        return "index", np.arange(len(emb)), emb, [None] * len(emb)
    if isinstance(inputs, pd.DataFrame):
        return embeddings_of_frame(model, inputs)
    single = isinstance(inputs, (str, os.PathLike)) or not hasattr(inputs, "__iter__")
    items = [inputs] if single else list(inputs)
    if items and all(isinstance(x, (str, os.PathLike)) for x in items):
        paths = [Path(x) for x in items]
        if all(p.suffix.lower() == ".parquet" and not p.is_dir() for p in paths):
            return embeddings_of_parquet(model, paths)
    return None


def embeddings_of_frame(model: EmbeddingModel, inputs: pd.DataFrame) -> Inputs:
    """The embeddings of a DataFrame (photo_id, embedding[, norm]), checked by ``model``."""
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
    return "photo_id", inputs["photo_id"].astype(str).to_numpy(), model.check_embeddings(emb), [None] * len(emb)


def embeddings_of_parquet(model: EmbeddingModel, paths: list[Path]) -> Inputs:
    """The embeddings of Parquet embeddings files, in order, checked by ``model`` (another backbone's are refused)."""
    from interest.core.collection import embeddings_file_backbone, read_embeddings_file

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
    emb = model.check_embeddings(np.concatenate([r[1] for r in read]))
    return "photo_id", ids, emb, [None] * len(ids)


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
    from interest.core.collection import read_embedding_norms

    norms = read_embedding_norms(path)
    if norms is None:
        raise InterestError(
            f"{path}: no 'norm' column, but {name} applies to raw (un-normalised) features; re-embed with "
            "`interest embed` (which writes it) or score the raw embeddings as an array"
        )
    return norms_checked(norms, ids, str(path))
