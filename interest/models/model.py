"""The model over embeddings: arrays in, scores out.

An :class:`InterestModel` scores precomputed embeddings (an array, a
DataFrame of (photo_id, embedding), Parquet embeddings files): a common CI
score, a trend group with calibrated probabilities and, for a user with a
head, a personal score and its deviation from the common one. Both kinds of
bundle (this full model and the study's :class:`~interest.models.study.LinearHeadModel`)
are an :class:`EmbeddingModel`. Images reach them through
:mod:`interest.scoring` (what ``interest.load`` returns adds the backbone).
It is safe to use from several threads: ``personalize`` swaps in a new table
of heads (copy-on-write) that readers pick up whole, never half-made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from interest.bundle.format import ESTIMATORS, FULL_KIND, full_parts
from interest.bundle.io import Bundle
from interest.core.errors import InterestError, one_line
from interest.models.base import EmbeddingModel
from interest.learn.groups import centred_sq, novelty_at
from interest.core.numeric import affine32, l2_normalize
from interest.core.vocabulary import GROUP_PROBABILITY_COLUMNS


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


class InterestModel(EmbeddingModel):
    """A trained model bundle in memory. Build it with :func:`interest.load` or ``train_model``.

    Attributes: ``backbone_id`` (the embedding space it was trained on),
    ``users`` (ids with a head), ``label_settings`` (how the training labels
    were made, incl. the trend-group cuts) and ``metadata`` (the model.json
    content: features, training config, data fingerprint, metrics).
    """

    #: the kind of bundle it is saved as (model.json ``kind``; see :mod:`interest.bundle.format`)
    kind: str = FULL_KIND

    def __init__(self, *, pca, ridge, prototypes, booster, groups, heads, metadata: dict, name: str = "model"):
        super().__init__(heads=heads, metadata=metadata, name=name)
        self.pca = pca
        self.ridge = ridge
        self.prototypes = prototypes
        self.booster = booster
        self.groups = groups
        features = metadata["features"]
        self._k = int(features["pca_components"])
        self._h = int(features["head_components"])
        self._extra = list(features.get("full", []))[len(features["app"]) :]
        # PCA and ridge are both linear in the embedding: one (d, components + 1) matrix serves both
        (pca_w, pca_b), (ridge_w, ridge_b) = pca.linear_form(), ridge.linear_form()
        self._projection = np.hstack([pca_w, ridge_w[:, None]]).astype(np.float32)
        self._projection_offset = np.append(pca_b, ridge_b).astype(np.float32)
        self._n_pca = pca_w.shape[1]

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> "InterestModel":
        """The model of a full bundle read by :func:`interest.bundle.io.read_bundle`."""
        try:
            return cls(**bundle.parts, metadata=bundle.metadata, name=str(bundle.path))
        except (KeyError, TypeError, ValueError) as exc:
            raise InterestError(f"{bundle.path / 'model.json'}: incomplete model description ({one_line(exc)}); "
                                "restore the bundle or retrain") from None

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
        emb = self.check_embeddings(emb)
        heads = self._heads  # one consistent table of heads for this whole call
        if user is not None:
            self._check_user(heads, user)
        extra = None if metadata is None else self._extra_matrix(metadata, len(emb))
        dist_sq = centred_sq(emb, self.pca.mean_)
        dev = on_block = None
        if user is not None and self._heads_on_prototypes(heads):
            # the head's memberships come from the prototype search's own scores: no second search
            dev = np.empty(len(emb), dtype=np.float32)

            def on_block(start, scores, top):
                dev[start : start + len(top)] = heads.deviation_from_scores(
                    user, scores, top, dist_sq[start : start + len(top)])

        Z, stack, nearest_score = self._project(emb, nearest_score=True, on_block=on_block)
        Zk = Z[:, : self._k]
        ci = self.booster.predict(Zk, stack, extra)
        # the group is the band of this very score; how sure, widens with the distance to the training photos
        proba = self.groups.predict_proba(ci, novelty_at(dist_sq, nearest_score))
        out = {"ci_score": ci, "trend_group": self.groups.predict(ci)}
        out.update({col: proba[:, i] for i, col in enumerate(GROUP_PROBABILITY_COLUMNS)})
        if user is not None:
            if dev is None:
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
        emb = self.check_embeddings(emb)
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
        last, the squared distance to the PCA mean (n, h + 1) float64 (see :class:`~interest.learn.heads.UserHeads`)."""
        emb = self.check_embeddings(emb)
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
        liked_emb = np.empty((0, self.dim)) if empty else self.read_inputs(liked)[2]
        if len(liked_emb) == 0:
            raise InterestError(f"personalize {user}: no liked photos given; pass images or embeddings the user likes")
        disliked_emb = None if disliked is None else self.read_inputs(disliked)[2]
        # joint heads: what the common score already says of these photos is not taken for the user's taste
        common_liked = common_disliked = None
        if getattr(self._heads, "method_", "templates") == "joint":
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

    def bundle_parts(self) -> tuple[dict[str, bytes], dict]:
        """The bundle's part files as bytes by file name, and what model.json says of the estimators."""
        return full_parts({attr: getattr(self, attr) for attr in ESTIMATORS})

    def check_embeddings(self, emb: Any) -> np.ndarray:
        """Embeddings as the (n, dim) float32 rows the model scores: checked, and L2-normalised where they are not."""
        emb, sq = self._checked_rows(emb)
        # training embeddings were L2-normalised; only rows that are not get rescaled, so a row's
        # values (and scores) never depend on which other rows share its batch
        off = np.abs(sq - 1.0) > 1e-4
        if off.any():
            emb = emb.copy()
            emb[off] = l2_normalize(emb[off])
        return emb

    def _project(self, emb: np.ndarray, nearest_score: bool = False, on_block=None):
        """PCA features (n, components) and first-level predictions (n, 2: ridge, prototype) and, with
        ``nearest_score``, each photo's score at its nearest prototype (for its novelty; the same product).
        ``on_block`` sees the prototype search's scores block by block (:meth:`Prototypes.predict_nearest`).

        One matrix product, the costliest step of scoring.
        """
        out = affine32(emb, self._projection, self._projection_offset)
        Z = out[:, : self._n_pca]
        prototype, score = self.prototypes.predict_nearest(Z, on_block)
        stack = np.column_stack([out[:, self._n_pca], prototype])
        return (Z, stack, score) if nearest_score else (Z, stack)

    def _pca(self, emb: np.ndarray) -> np.ndarray:
        """The PCA features a user head needs (no first-level predictions)."""
        return affine32(emb, self._projection[:, : self._h], self._projection_offset[: self._h])

    def _heads_on_prototypes(self, heads) -> bool:
        """Whether the heads' anchors are the prototypes, in all of the PCA features the prototypes are searched in:
        then the search's scores are the heads' anchor scores (``train`` fits them so by default)."""
        anchors = getattr(heads, "anchors_", None)
        return (anchors is not None and self._h == self._n_pca and anchors.shape == self.prototypes.centroids_.shape
                and np.array_equal(anchors, self.prototypes.centroids_))

    def _extra_matrix(self, metadata: pd.DataFrame, n: int) -> np.ndarray:
        """The full model's extra columns for ``n`` photos (NaN where a value is unknown)."""
        from interest.models.metadata import METADATA_FEATURES, metadata_features

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
