"""The public model: what a photo app imports (``interest.load(...)`` returns an :class:`InterestModel`).

An InterestModel scores photos given as image files, folders, PIL images or
precomputed embeddings: a common CI score, a trend group with calibrated
probabilities and, for a user with a head, a personal score and its
deviation from the common one. It is safe to use from several threads: the
backbone is loaded once behind a lock, and ``personalize`` swaps in a new
table of heads (copy-on-write) that readers pick up whole, never half-made.
"""

from __future__ import annotations

import copy
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from interest.errors import InterestError
from interest.models.bundle import MODEL_KINDS, load_bundle, part_bytes, save_bundle
from interest.models.common import matmul64
from interest.models.groups import centred_sq, novelty_at
from interest.models.inputs import BackboneHolder, embed_images, read_inputs
from interest.numeric import l2_normalize
from interest.vocabulary import GROUP_PROBABILITY_COLUMNS


@dataclass(frozen=True)
class Explanation:
    """What the full (metadata) model's CI predictions for some photos are made of; see :meth:`InterestModel.explain`.

    ``prediction = bias + contributions.sum(axis=1)`` row by row (LightGBM's
    exact TreeSHAP values). Among the ``features``, ``pca_*`` and the stacked
    first-level predictions (``ridge``, ``prototype``) come from the embedding;
    the rest are metadata and characteristics.
    """

    features: list[str]  # the full model's inputs, in column order
    inputs: np.ndarray  # (n, features) float32: what the model saw for each photo (NaN where unknown)
    contributions: np.ndarray  # (n, features) float64: each input's additive part of the prediction
    bias: np.ndarray  # (n,) float64: the rest of the prediction (the model's expected value)
    _booster: Any = field(repr=False)

    def predict(self, inputs: np.ndarray | None = None) -> np.ndarray:
        """The full model's prediction for ``inputs`` (n, features), e.g. :attr:`inputs` with one column changed
        (partial dependence); for :attr:`inputs` themselves when None."""
        return self._booster.predict(self.inputs if inputs is None else inputs)


class InterestModel:
    """A trained model bundle in memory. Build it with :func:`interest.load` or ``train_model``.

    Attributes: ``backbone_id`` (the embedding space it was trained on),
    ``users`` (ids with a head), ``label_settings`` (how the training labels
    were made, incl. the trend-group cuts) and ``metadata`` (the model.json
    content: features, training config, data fingerprint, metrics).
    """

    #: whether the common head reads raw (un-normalised) features; see interest.models.study
    needs_raw_features: bool = False

    def __init__(self, *, pca, ridge, prototypes, booster, groups, heads, metadata: dict, name: str = "model"):
        self.pca = pca
        self.ridge = ridge
        self.prototypes = prototypes
        self.booster = booster
        self.groups = groups
        self._heads = heads
        self.metadata = metadata
        self.name = name  # how error messages refer to the model (its bundle path once loaded)
        self._lock = threading.Lock()
        self.backbone_holder = BackboneHolder()  # the image backbone, loaded on first use (interest.models.inputs)
        features = metadata["features"]
        self.dim = int(metadata["backbone"]["dim"])
        self._k = int(features["pca_components"])
        self._h = int(features["head_components"])
        self._extra = list(features.get("full", []))[len(features["app"]) :]
        # PCA and ridge are both linear in the embedding: one (d, components + 1) matrix serves both
        (pca_w, pca_b), (ridge_w, ridge_b) = pca.linear_form(), ridge.linear_form()
        self._projection = np.hstack([pca_w, ridge_w[:, None]]).astype(np.float32)
        self._projection_offset = np.append(pca_b, ridge_b).astype(np.float32)
        self._n_pca = pca_w.shape[1]

    @property
    def backbone_id(self) -> str:
        """The id of the embedding space the model was trained on."""
        return str(self.metadata["backbone"]["id"])

    @property
    def label_settings(self) -> dict:
        """How the training labels were made (commonality, trend-group cuts, clusters, seed, ...)."""
        return dict(self.metadata.get("label_settings", {}))

    @property
    def backbone(self):
        """The image backbone (loaded on first use, once, with :meth:`configure_backbone`'s options)."""
        return self.backbone_holder.get(self.metadata["backbone"], self.dim, self.name)

    @property
    def backbone_loaded(self) -> bool:
        """Whether the image backbone is in memory already (scoring images will not wait for it)."""
        return self.backbone_holder.loaded

    def embed_images(self, images: list, batch_size: int = 64) -> np.ndarray:
        """PIL images as the (n, dim) embeddings :meth:`score_embeddings` takes (raw rows for a head on raw features).

        Embedding is the costly step: a service embeds the images of several
        requests in one call and scores each request's rows apart.
        """
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return embed_images(self, list(images), batch_size)

    @property
    def capabilities(self) -> frozenset[str]:
        """What this model can answer: ``ci_score``, ``trend_group``, ``group_probabilities``,
        ``user_heads`` and ``metadata_model`` (the full model, given photo metadata).

        A bundle may hold fewer parts (e.g. only the study's common head): ask here
        rather than assuming every column of :meth:`score_embeddings` is there.
        """
        caps = {"ci_score", "trend_group", "group_probabilities", "user_heads"}
        if self.booster.full_booster_ is not None:
            caps.add("metadata_model")
        return frozenset(caps)

    @property
    def users(self) -> list[str]:
        """Ids of the users that have a head."""
        return [str(u) for u in self._heads.users_]

    @property
    def heads(self):
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

    def with_heads(self, heads) -> "InterestModel":
        """A copy of this model with other user heads (a :class:`UserHeads`), everything else shared."""
        new = copy.copy(self)
        new._heads = heads
        new._lock = threading.Lock()
        return new

    def reloaded(self, path: str | os.PathLike) -> "InterestModel":
        """The bundle at ``path`` loaded again, sharing this model's backbone (loaded once per process).

        For a long-running service whose bundle another process personalized;
        ``path`` must hold a bundle of the same backbone.
        """
        fresh = load_bundle(path)
        if fresh.backbone_id != self.backbone_id:
            raise InterestError(f"{path}: backbone {fresh.backbone_id} differs from the running model's {self.backbone_id}")
        fresh.backbone_holder = self.backbone_holder
        return fresh

    # ------------------------------------------------------------ scoring

    def score_embeddings(
        self,
        emb: np.ndarray,
        user: str | None = None,
        metadata: pd.DataFrame | None = None,
        backbone_id: str | None = None,
    ) -> pd.DataFrame:
        """Score precomputed embeddings (n, dim) of this model's backbone.

        Returns one row per embedding: ``ci_score``, ``trend_group`` (0
        common, 1 interplay, 2 subjective), ``p_common``, ``p_interplay``,
        ``p_subjective`` and, with ``user``, ``user_score`` and ``deviation``
        (user_score - ci_score). ``metadata`` (a photos-table-like frame, one
        row per embedding in order) switches to the full model; see
        :meth:`score`. ``backbone_id``, when given, must be the model's own.
        """
        if backbone_id is not None and str(backbone_id) != self.backbone_id:
            raise InterestError(
                f"embeddings of backbone '{backbone_id}' cannot be scored by {self.name}, trained on "
                f"'{self.backbone_id}'; embed the photos with that backbone"
            )
        emb = self._check_embeddings(emb)
        heads = self._heads  # one consistent table of heads for this whole call
        if user is not None:
            self._check_user(heads, user)
        extra = None if metadata is None else self._extra_matrix(metadata, len(emb))
        Z, stack, nearest_score = self._project(emb, nearest_score=True)
        Zk = Z[:, : self._k]
        ci = self.booster.predict(Zk, stack, extra)
        dist_sq = centred_sq(emb, self.pca.mean_)
        # the group is the band of this very score; how sure, widens with the distance to the training photos
        proba = self.groups.predict_proba(ci, novelty_at(dist_sq, nearest_score))
        out = {"ci_score": ci, "trend_group": self.groups.predict(ci)}
        out.update({col: proba[:, i] for i, col in enumerate(GROUP_PROBABILITY_COLUMNS)})
        if user is not None:
            dev = heads.deviation(user, np.column_stack([Z[:, : self._h], dist_sq]))
            out["user_score"] = ci + dev
            out["deviation"] = dev
        return pd.DataFrame(out)

    def full_model_inputs(self, emb: np.ndarray, metadata: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """The full LightGBM model's input matrix for these photos, and its feature names.

        For explaining the model (LightGBM's ``pred_contrib``, SHAP): the same
        matrix :meth:`score_embeddings` builds when given ``metadata`` (one row
        per embedding, in order). InterestError when the model has no full variant.
        """
        emb = self._check_embeddings(emb)
        extra = self._extra_matrix(metadata, len(emb))
        Z, stack = self._project(emb)
        X = np.hstack([self.booster.app_matrix(Z[:, : self._k], stack), extra])
        return X.astype(np.float32), list(self.booster.full_features_)

    def explain(self, emb: np.ndarray, metadata: pd.DataFrame) -> Explanation:
        """The full (metadata) model's CI prediction for each photo split into its features' additive contributions.

        ``emb`` (n, dim) and ``metadata`` (one row per embedding, in order: the
        photo-table columns and characteristics) as :meth:`score_embeddings`
        takes them. InterestError when the model was trained without metadata
        (``"metadata_model"`` is not among its :attr:`capabilities`).
        """
        if "metadata_model" not in self.capabilities:
            raise InterestError(
                f"{self.name}: the model was trained without metadata or characteristics; "
                "there is nothing but the embedding to attribute CI to"
            )
        X, names = self.full_model_inputs(emb, metadata)
        booster = self.booster.full_booster_
        contrib = booster.predict(X, pred_contrib=True)  # last column: the expected value
        return Explanation(features=names, inputs=X, contributions=contrib[:, :-1], bias=contrib[:, -1], _booster=booster)

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
        an array of embeddings, a DataFrame (photo_id, embedding) or a Parquet embeddings file.

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
        kind, ids, emb, problems = read_inputs(self, inputs, errors, batch_size, progress, cache)
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

    def user_deviation(self, user: str, emb: np.ndarray) -> np.ndarray:
        """``user``'s deviation from the common score for embeddings (n, dim): (n,) float32."""
        heads = self._heads
        self._check_user(heads, user)
        return heads.deviation(user, self.head_inputs(emb))

    def user_deviations(self, users: list[str], emb: np.ndarray) -> np.ndarray:
        """Deviations of several users at once, projecting the embeddings once: (n, len(users)) float32."""
        heads = self._heads
        for user in users:
            self._check_user(heads, user)
        return heads.deviations(users, self.head_inputs(emb))

    def head_inputs(self, emb: np.ndarray) -> np.ndarray:
        """What the user heads see of embeddings (n, dim): the first ``head_components`` PCA features and,
        last, the squared distance to the PCA mean (n, h + 1) float64 (see :class:`~interest.models.user_heads.UserHeads`)."""
        emb = self._check_embeddings(emb)
        return np.column_stack([self._pca(emb), centred_sq(emb, self.pca.mean_)])

    def personalize(self, user: str, liked: Any, disliked: Any = None) -> "InterestModel":
        """Fit (or replace) ``user``'s head from photos they like (and, optionally, dislike).

        ``liked``/``disliked`` take anything :meth:`score` takes. The head is
        built by the same rule as in training: the user's factor over the taste
        shared by all training users is fitted to the liked photos (one or two
        liked photos already move the user's niche and its community's other
        niches up), and the photos like the disliked ones go down. Photos unlike every training photo carry no weight.
        Deterministic; takes milliseconds on embeddings. Returns self (call
        :meth:`save` to keep it).
        """
        empty = liked is None or (isinstance(liked, (list, tuple)) and not liked)
        liked_emb = np.empty((0, self.dim)) if empty else read_inputs(self, liked)[2]
        if len(liked_emb) == 0:
            raise InterestError(f"personalize {user}: no liked photos given; pass images or embeddings the user likes")
        disliked_emb = None if disliked is None else read_inputs(self, disliked)[2]
        # joint heads: what the common score already says of these photos is not taken for the user's taste
        common_liked = common_disliked = None
        if getattr(self._heads, "method", "templates") == "joint":
            common_liked = self.score_embeddings(liked_emb)["ci_score"].to_numpy(np.float64)
            if disliked_emb is not None:
                common_disliked = self.score_embeddings(disliked_emb)["ci_score"].to_numpy(np.float64)
        with self._lock:
            weights = self._heads.fit_one(
                self.head_inputs(liked_emb), None if disliked_emb is None else self.head_inputs(disliked_emb),
                common_liked=common_liked, common_disliked=common_disliked,
            )
            self._heads = self._heads.with_head(user, weights, len(liked_emb))
            personalized = dict(self.metadata.get("personalized", {}))
            personalized[str(user)] = {"liked": len(liked_emb), "disliked": 0 if disliked_emb is None else len(disliked_emb)}
            self.metadata = {**self.metadata, "personalized": personalized}
        return self

    def configure_backbone(
        self,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        cache_dir: str | os.PathLike | None = None,
        weights: str | os.PathLike | None = None,
        encoder: str = "auto",
    ) -> "InterestModel":
        """Where and how the backbone runs when images are scored: ``device`` (cpu, cuda[:N], mps or
        auto), ``precision`` (fp32, fp16, bf16), ``cache_dir`` (where its weights are cached or its
        local checkpoint lies), ``weights`` (a checkpoint file to use) and ``encoder`` (auto, torch or
        onnx: what runs the image tower, see ``load_openclip``). Takes effect at the next image scored
        if the backbone is not loaded yet. Returns self.
        """
        from interest.features.backbones import BackboneOptions

        self.backbone_holder.configure(BackboneOptions(device=device, precision=precision, cache_dir=cache_dir,
                                                       weights=weights, encoder=encoder))
        return self

    def save(self, path: str | os.PathLike) -> None:
        """Write the model as a bundle directory (atomically: a crash leaves the old bundle intact)."""
        from interest.hub import is_hub_name

        if is_hub_name(str(path)):
            raise InterestError(f"{path}: a Hub bundle is read-only here; save to a local directory instead")

        self.metadata = save_bundle(self, path)  # with the parts' checksums and the time it was saved
        self.name = str(path)

    def bundle_parts(self) -> tuple[dict[str, bytes], dict]:
        """The bundle's part files as bytes by file name, and what model.json says of the estimators."""
        return part_bytes(self)

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

    def _check_embeddings(self, emb: Any) -> np.ndarray:
        emb, sq = self._checked_rows(emb)
        # training embeddings were L2-normalised; only rows that are not get rescaled, so a row's
        # values (and scores) never depend on which other rows share its batch
        off = np.abs(sq - 1.0) > 1e-4
        if off.any():
            emb = emb.copy()
            emb[off] = l2_normalize(emb[off])
        return emb

    def _project(self, emb: np.ndarray, nearest_score: bool = False):
        """PCA features (n, components) and first-level predictions (n, 2: ridge, prototype) and, with
        ``nearest_score``, each photo's score at its nearest prototype (for its novelty; the same product).

        One matrix product, the costliest step of scoring.
        """
        out = (matmul64(emb, self._projection) + self._projection_offset).astype(np.float32)
        Z = out[:, : self._n_pca]
        prototype, score = self.prototypes.predict_nearest(Z)
        stack = np.column_stack([out[:, self._n_pca], prototype])
        return (Z, stack, score) if nearest_score else (Z, stack)

    def _pca(self, emb: np.ndarray) -> np.ndarray:
        """The PCA features a user head needs (no first-level predictions)."""
        return (matmul64(emb, self._projection[:, : self._h]) + self._projection_offset[: self._h]).astype(np.float32)

    def _check_user(self, heads, user: str) -> None:
        if not heads.has(user):
            raise InterestError(f"user {user} has no head in {self.name}; run `interest personalize` for them first")

    def _extra_matrix(self, metadata: pd.DataFrame, n: int) -> np.ndarray:
        """The full model's extra columns for ``n`` photos (NaN where a value is unknown)."""
        from interest.features.metadata import METADATA_FEATURES, metadata_features

        if self.booster.full_booster_ is None:
            raise InterestError(
                f"{self.name} has no full (metadata) model: it was trained without metadata; score without metadata"
            )
        if not isinstance(metadata, pd.DataFrame) or len(metadata) != n:
            raise InterestError(
                f"metadata must be a DataFrame with one row per photo ({n}); got "
                f"{len(metadata) if isinstance(metadata, pd.DataFrame) else type(metadata).__name__}"
            )
        frame = metadata.reset_index(drop=True).copy()
        frame["photo_id"] = np.arange(n).astype(str)  # positional here: alignment happened in score()
        as_of = self.metadata.get("data", {}).get("metadata_as_of")
        feats = metadata_features(frame, as_of=pd.Timestamp(as_of) if as_of else None).reset_index(drop=True)
        cols = []
        for name in self._extra:
            source = feats[name] if name in METADATA_FEATURES else frame.get(name)
            cols.append(np.full(n, np.nan) if source is None else pd.to_numeric(source, errors="coerce"))
        return np.column_stack([np.asarray(c, dtype=np.float32) for c in cols]) if cols else np.empty((n, 0))


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


MODEL_KINDS["full"] = InterestModel
