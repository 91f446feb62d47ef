"""The study's published CI_R model as a bundle: a common linear head on raw CLIP features.

The study (fiabdu/Commonly-Interesting-Images) published ``CI_R_model.pth``:
a torch state dict of one ``nn.Linear(768, 1)`` under the key prefix
``fc.0.``, applied in its notebook to the *un-normalised* image features of
OpenAI CLIP ViT-L/14@336 (``encode_image`` straight). :func:`import_study_model`
turns it into a bundle that holds only that common head (no booster, group
classifier or trained user heads): ``ci_score`` is exactly the study's
``fc(features)``; trend groups come from cut points on it, given or derived
from the study's own scores in a FlickrUser collection's ``reference.parquet``;
``personalize`` adds user heads as on any bundle.

Raw features: the contract stores L2-normalised embeddings and, in the
``norm`` column, each row's norm before normalisation, so ``raw = embedding *
norm``. Scoring images recovers them from the backbone directly.

The ``.pth`` is read with ``torch.load(weights_only=True)`` only: opening it
never runs code. The bundle stores the weights in an npz (``linear_head.npz``).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from interest.core.errors import InterestError, one_line
from interest.bundle.format import LINEAR_KIND, MODEL_JSON, check_linear_shapes, linear_parts
from interest.bundle.io import Bundle, sha256_bytes
from interest.learn.base import Estimator
from interest.models.base import EmbeddingModel
from interest.core.numeric import l2_normalize

STUDY_BACKBONE = "openclip/ViT-L-14-336/openai"
STUDY_DIM = 768
STUDY_KEYS = ("fc.0.weight", "fc.0.bias")
# user heads on an imported head: shrinkage strength, floor and background ridge
HEAD_KAPPA, HEAD_MIN_FAVOURITES, HEAD_RIDGE = 5.0, 5, 0.1


def read_linear_state_dict(
    path: str | os.PathLike, *, keys: Sequence[str] = STUDY_KEYS, dim: int = STUDY_DIM
) -> tuple[np.ndarray, float]:
    """(weight (dim,) float32, bias) of a one-output ``nn.Linear`` state dict saved with ``torch.save``.

    Read with ``torch.load(weights_only=True)`` (tensors and plain containers
    only: nothing in the file can run). An InterestError names what is wrong:
    a missing file, a file that is not such a state dict, missing or extra
    keys, a wrong shape, non-finite values.
    """
    from interest.core.errors import require

    torch = require("torch", "research", "reading a torch state dict")
    path = Path(path)
    if not path.is_file():
        raise InterestError(f"{path}: file not found; give the path of the study's CI_R_model.pth")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors all mean "not a safe state dict"
        text = one_line(exc)
        raise InterestError(
            f"{path}: not a torch state dict readable with weights_only=True ({text[:120]}); give the study's .pth"
        ) from None
    if not isinstance(state, dict):
        raise InterestError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors")
    weight_key, bias_key = keys
    missing = [k for k in keys if k not in state]
    extra = sorted(str(k) for k in state if k not in keys)
    if missing or extra:
        raise InterestError(
            f"{path}: state dict keys {sorted(map(str, state))} should be exactly {list(keys)}"
            + (f" (missing {missing[0]})" if missing else f" (unexpected {extra[0]})")
        )
    weight, bias = state[weight_key], state[bias_key]
    for key, tensor, shape in ((weight_key, weight, (1, dim)), (bias_key, bias, (1,))):
        if not isinstance(tensor, torch.Tensor):
            raise InterestError(f"{path}: '{key}' is a {type(tensor).__name__}, not a tensor")
        if tuple(tensor.shape) != shape:
            raise InterestError(f"{path}: '{key}' has shape {tuple(tensor.shape)}, expected {shape} (nn.Linear({dim}, 1))")
    w = weight.detach().to(torch.float64).numpy().reshape(dim)
    b = float(bias.detach().to(torch.float64).item())
    if not (np.isfinite(w).all() and np.isfinite(b)):
        raise InterestError(f"{path}: weights hold NaN or infinite values")
    return w.astype(np.float32), b


def cuts_from_reference(collection: str | os.PathLike) -> tuple[tuple[float, float], float]:
    """Trend-group cut points (lower, upper) that reproduce the study's published groups, and their agreement.

    Read from ``reference.parquet`` of a collection made by ``interest import
    flickruser``: ``upper`` is the lowest published CI of a common (0) photo,
    ``lower`` the lowest of an interplay (1) photo. ``agreement`` is the share
    of photos whose published group these cuts give back (1.0 when the study's
    groups are cuts on its score).
    """
    from interest.core.collection import REFERENCE_FILE, read_parquet_checked
    from interest.learn.groups import assign_trend_groups, check_group_cuts

    path = Path(collection) / REFERENCE_FILE
    if not path.is_file():
        raise InterestError(
            f"{path}: not found; --cuts-from needs a collection made by `interest import flickruser` from the CSVs"
        )
    ref = read_parquet_checked(path, ["published_ci_score", "published_trend_group"])
    ci = pd.to_numeric(ref["published_ci_score"], errors="coerce").to_numpy(dtype=float)
    group = pd.to_numeric(ref["published_trend_group"], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(ci) & np.isfinite(group)
    ci, group = ci[ok], group[ok].astype(int)
    if not (group == 0).any():
        raise InterestError(f"{path}: no photo of published trend group 0 (common) with a CI score; give --group-cuts")
    upper = float(ci[group == 0].min())
    lower = float(ci[group == 1].min()) if (group == 1).any() else upper
    cuts = check_group_cuts((min(lower, upper), upper))
    agreement = float((assign_trend_groups(ci, cuts) == group).mean())
    return cuts, agreement


def _background(
    collection: str | os.PathLike | None, backbone_id: str, dim: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """User heads' background (mean, precision) in the normalised embedding space, and where it came from.

    From a collection with embeddings of ``backbone_id``: its favourites (each
    favourite event weighs one, as in training) or, without a favourites
    table, all its photos. Otherwise isotropic around the origin, so a head is
    the liked photos' direction (contrasted with disliked ones when given),
    which mostly shifts a user's scores rather than re-ranking them.
    """
    from interest.core.collection import embeddings_path, has_table, read_embeddings_file, read_table

    if collection is None or not embeddings_path(collection, backbone_id).is_file():
        return np.zeros(dim, np.float32), np.eye(dim, dtype=np.float32), "isotropic (no collection with embeddings)"
    ids, emb = read_embeddings_file(embeddings_path(collection, backbone_id))
    rows, what = np.arange(len(ids)), "photos"
    if has_table(collection, "favorites"):
        favs = read_table(collection, "favorites", columns=["photo_id"])
        fav_rows = pd.Index(ids).get_indexer(favs["photo_id"].astype(str))
        if (fav_rows >= 0).sum() > dim:
            rows, what = fav_rows[fav_rows >= 0], "favourites"
    if len(rows) <= dim:
        raise InterestError(
            f"{collection}: {len(rows)} {what} with embeddings of {backbone_id}, too few for a {dim}-d background; "
            f"give a collection with more than {dim}"
        )
    Z = emb[rows].astype(np.float64)
    mean = Z.mean(axis=0)
    cov = np.cov(Z, rowvar=False, bias=True)
    lam = HEAD_RIDGE * float(np.trace(cov)) / dim
    precision = np.linalg.inv(cov + lam * np.eye(dim))
    return mean.astype(np.float32), precision.astype(np.float32), f"{len(rows)} {what} of {collection}"


class DirectionHeads(Estimator):
    """Per-user heads of a bundle without training data: shrunk LDA directions in the embedding space.

    With ``z`` a photo's L2-normalised embedding, ``mu_u`` the mean of the
    user's liked photos, ``c`` the contrast (the background mean, or disliked
    photos shrunk towards it), ``P`` the background precision and ``n`` the
    number of liked photos::

        w_u       = s * n / (n + kappa) * P (mu_u - c)     (0 below min_favourites)
        deviation = w_u . (z - mean)

    The same rule as the trained heads had before they grew anchors; it needs
    only the background's mean and precision, which the bundle stores.
    ``kappa`` and ``min_favourites`` are the parameters; :meth:`fit` sets the
    background (``mean_``, ``precision_``) and the strength ``scale_``, and the
    table of heads (``users_``, ``weights_``, ``offsets_``, ``n_favourites_``)
    grows with :meth:`with_head`.
    """

    STATE = ("mean", "precision", "scale", "users", "weights", "offsets", "n_favourites")

    def __init__(self, kappa: float = HEAD_KAPPA, min_favourites: int = HEAD_MIN_FAVOURITES) -> None:
        self.kappa = kappa
        self.min_favourites = min_favourites

    def fit(self, mean: np.ndarray, precision: np.ndarray, scale: float) -> "DirectionHeads":
        """Set the background heads contrast with (its mean and precision) and their strength; no heads yet."""
        self.mean_ = np.asarray(mean, dtype=np.float32)
        self.precision_ = np.asarray(precision, dtype=np.float32)
        self.scale_ = float(scale)
        return self._with_table(np.asarray([], dtype=str), np.zeros((0, len(self.mean_)), np.float32),
                                np.zeros(0, np.float32), np.zeros(0, np.int64))

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray], lightgbm: dict | None = None) -> "DirectionHeads":
        heads = super().from_state(params, arrays, lightgbm)
        return heads._with_table(heads.users_, heads.weights_, heads.offsets_, heads.n_favourites_)

    def _with_table(self, users, weights, offsets, n_favourites) -> "DirectionHeads":
        self.users_ = np.asarray(users).astype(str)
        self.weights_ = np.asarray(weights, np.float32)
        self.offsets_ = np.asarray(offsets, np.float32)
        self.n_favourites_ = np.asarray(n_favourites, np.int64)
        self.mean_, self.precision_ = np.asarray(self.mean_, np.float32), np.asarray(self.precision_, np.float32)
        self.scale_ = float(self.scale_)
        self._index = {u: i for i, u in enumerate(self.users_)}
        return self

    def has(self, user: str) -> bool:
        """Whether ``user`` has a head."""
        return str(user) in self._index

    def deviation(self, user: str, Z: np.ndarray) -> np.ndarray:
        """``user``'s deviation for normalised embeddings ``Z`` (n, d): (n,) float32."""
        i = self._index[str(user)]
        return (np.asarray(Z, np.float32) @ self.weights_[i] + self.offsets_[i]).astype(np.float32)

    def deviations(self, users: list[str], Z: np.ndarray) -> np.ndarray:
        """Deviations of several users at once: (n, len(users)) float32."""
        rows = [self._index[str(u)] for u in users]
        return np.asarray(Z, np.float32) @ self.weights_[rows].T + self.offsets_[rows]

    def fit_one(self, Z_liked: np.ndarray, Z_disliked: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """(weights, offset) of a head from liked (and disliked) normalised embeddings."""
        liked = np.asarray(Z_liked, np.float64)
        n = len(liked)
        contrast = self.mean_.astype(np.float64)
        if Z_disliked is not None and len(Z_disliked):
            m = len(Z_disliked)
            contrast = (np.asarray(Z_disliked, np.float64).sum(axis=0) + self.kappa * contrast) / (m + self.kappa)
        shrink = n / (n + self.kappa) if n >= self.min_favourites else 0.0
        w = (self.scale_ * shrink * ((liked.mean(axis=0) - contrast) @ self.precision_)).astype(np.float32)
        return w, float(-(w @ self.mean_))

    def with_head(self, user: str, weights: np.ndarray, offset: float, n_favourites: int) -> "DirectionHeads":
        """A new table with ``user``'s head added or replaced (this one is left untouched)."""
        users, W, b, n = list(self.users_), self.weights_.copy(), self.offsets_.copy(), self.n_favourites_.copy()
        if str(user) in self._index:
            i = self._index[str(user)]
            W[i], b[i], n[i] = weights, offset, n_favourites
        else:
            users.append(str(user))
            W, b, n = np.vstack([W, weights[None]]), np.append(b, offset), np.append(n, n_favourites)
        params, arrays = self.to_state()
        return DirectionHeads.from_state(params, {**arrays, "users": np.asarray(users, dtype=str), "weights": W,
                                                  "offsets": b, "n_favourites": n})


class LinearHeadModel(EmbeddingModel):
    """A bundle holding only a common linear head: ``ci_score = weight . x + bias``.

    ``x`` is the raw (un-normalised) feature when the head was trained on raw
    features (the study's CI_R model) and the L2-normalised embedding
    otherwise. Trend groups, when the bundle has cut points, are cuts on
    ``ci_score``; there are no group probabilities and no metadata model
    (see :attr:`capabilities`). User heads live in the normalised embedding
    space.
    """

    kind = LINEAR_KIND

    def __init__(self, *, weight: np.ndarray, bias: float, heads, metadata: dict, name: str = "model"):
        super().__init__(heads=heads, metadata=metadata, name=name)
        self.weight = np.asarray(weight, dtype=np.float64)
        self.bias = float(bias)
        self.needs_raw_features = metadata["common"].get("input") == "raw"
        cuts = metadata.get("thresholds", {}).get("group_cuts")
        self.group_cuts = (float(cuts[0]), float(cuts[1])) if cuts else None

    @property
    def capabilities(self) -> frozenset[str]:
        caps = {"ci_score", "user_heads"}
        if self.group_cuts is not None:
            caps.add("trend_group")
        return frozenset(caps)

    def score_embeddings(
        self,
        emb: np.ndarray,
        user: str | None = None,
        metadata: pd.DataFrame | None = None,
        backbone_id: str | None = None,
    ) -> pd.DataFrame:
        """Score embeddings (n, dim): ``ci_score``, ``trend_group`` (with cut points) and, with ``user``,
        ``user_score`` and ``deviation``.

        A head on raw features needs raw rows (``embedding * norm``); rows that
        are already L2-normalised are refused, since their scale is lost.
        """
        if backbone_id is not None and str(backbone_id) != self.backbone_id:
            raise InterestError(
                f"embeddings of backbone '{backbone_id}' cannot be scored by {self.name}, trained on "
                f"'{self.backbone_id}'; embed the photos with that backbone"
            )
        if metadata is not None:
            raise InterestError(f"{self.name} holds only a common head on the embedding; score without metadata")
        x = self.check_embeddings(emb)
        heads = self._heads
        if user is not None:
            self._check_user(heads, user)
        ci = (x.astype(np.float64) @ self.weight + self.bias).astype(np.float32)
        out: dict[str, Any] = {"ci_score": ci}
        if self.group_cuts is not None:
            from interest.learn.groups import assign_trend_groups

            out["trend_group"] = assign_trend_groups(ci, self.group_cuts)
        if user is not None:
            dev = heads.deviation(user, self._pca(x))
            out["user_score"] = ci + dev
            out["deviation"] = dev
        return pd.DataFrame(out)

    def user_deviation(self, user: str, emb: np.ndarray) -> np.ndarray:
        """``user``'s deviation from the common score for embeddings (n, dim): (n,) float32."""
        heads = self._heads
        self._check_user(heads, user)
        return heads.deviation(user, self._pca(self.check_embeddings(emb)))

    def user_deviations(self, users: list[str], emb: np.ndarray) -> np.ndarray:
        """Deviations of several users at once: (n, len(users)) float32."""
        heads = self._heads
        for user in users:
            self._check_user(heads, user)
        return heads.deviations(users, self._pca(self.check_embeddings(emb)))

    def personalize(self, user: str, liked: Any, disliked: Any = None) -> "LinearHeadModel":
        """Fit (or replace) ``user``'s head from photos they like (and dislike); see :class:`DirectionHeads`.

        ``liked``/``disliked`` take anything :meth:`score` takes; fewer than
        5 liked photos leave the user at the common score. Returns self (call :meth:`save` to keep it).
        """
        empty = liked is None or (isinstance(liked, (list, tuple)) and not liked)
        if empty:
            raise InterestError(f"personalize {user}: no liked photos given; pass images or embeddings the user likes")
        liked_z = self._pca(self.read_inputs(liked)[2])
        disliked_z = None if disliked is None else self._pca(self.read_inputs(disliked)[2])
        with self._lock:
            weights, offset = self._heads.fit_one(liked_z, disliked_z)
            self._heads = self._heads.with_head(user, weights, offset, len(liked_z))
            personalized = dict(self.metadata.get("personalized", {}))
            personalized[str(user)] = {"liked": len(liked_z), "disliked": 0 if disliked_z is None else len(disliked_z)}
            self.metadata = {**self.metadata, "personalized": personalized}
        return self

    def bundle_parts(self) -> tuple[dict[str, bytes], dict]:
        return linear_parts(self.weight, self.bias, self.heads), {}

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> "LinearHeadModel":
        """The model of a bundle whose model.json says ``kind: linear`` (parts already checked)."""
        path, parts = bundle.path, bundle.parts
        try:
            model = cls(weight=parts["weight"], bias=parts["bias"], metadata=bundle.metadata, name=str(path),
                        heads=DirectionHeads.from_state(parts["heads_params"], parts["heads_arrays"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InterestError(f"{path / MODEL_JSON}: incomplete model description ({exc}); restore the bundle") from None
        check_linear_shapes(model.weight, model.heads, bundle.metadata, path)
        return model

    def full_model_inputs(self, emb: np.ndarray, metadata: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        raise InterestError(f"{self.name} holds only a common linear head: it has no full (metadata) model")

    def explain(self, emb: np.ndarray, metadata: pd.DataFrame):
        """Nothing to attribute: the bundle has no full (metadata) model."""
        raise InterestError(
            f"{self.name}: the model was trained without metadata or characteristics; "
            "there is nothing but the embedding to attribute CI to"
        )

    def check_embeddings(self, emb: Any) -> np.ndarray:
        """Checked rows: L2-normalised for a head on normalised features; raw ones refused otherwise."""
        emb, sq = self._checked_rows(emb)
        if not self.needs_raw_features:
            return l2_normalize(emb)
        unit = np.abs(sq - 1.0) <= 1e-4
        if unit.any():
            raise InterestError(
                f"embedding row {int(np.argmax(unit))} is L2-normalised, but {self.name} applies to raw "
                "(un-normalised) features: give embedding * norm, or a table with the 'norm' column that "
                "`interest embed` writes"
            )
        return emb

    def _pca(self, emb: np.ndarray) -> np.ndarray:
        # user heads live in the normalised embedding space (there is no PCA in this bundle)
        return l2_normalize(np.asarray(emb, dtype=np.float32))


def linear_model(
    weight: np.ndarray,
    bias: float,
    *,
    backbone_id: str,
    raw: bool,
    group_cuts: Sequence[float] | None = None,
    background: str | os.PathLike | None = None,
    preprocessing: dict | None = None,
    extra_metadata: dict | None = None,
) -> LinearHeadModel:
    """A :class:`LinearHeadModel` over ``backbone_id`` from a head's weights (not yet saved).

    ``raw``: the head reads un-normalised features. ``group_cuts`` (lower,
    upper) on ``ci_score`` give trend groups. ``background``: a collection with
    embeddings of the backbone whose favourites set the user heads' background.
    ``preprocessing``: the backbone's (as recorded with its embeddings), checked when images are scored.
    """
    from interest.learn.groups import check_group_cuts

    weight = np.asarray(weight, dtype=np.float32).reshape(-1)
    dim = len(weight)
    cuts = list(check_group_cuts(group_cuts)) if group_cuts is not None else None
    mean, precision, source = _background(background, backbone_id, dim)
    # a full-strength head moves the score about as much as the common head does over the unit sphere
    scale = float(np.linalg.norm(weight)) * (_median_norm(background, backbone_id) if raw else 1.0)
    metadata = {
        "kind": LINEAR_KIND,
        "backbone": {"id": backbone_id, "dim": dim, "preprocessing": preprocessing},
        "common": {"kind": LINEAR_KIND, "input": "raw" if raw else "normalized"},
        "features": {"head_components": dim, "head_space": "L2-normalised embedding"},
        "label_settings": {"group_cuts": cuts} if cuts else {},
        "thresholds": {"group_cuts": cuts, "trend_group": "cuts on ci_score" if cuts else None,
                       "head_kappa": HEAD_KAPPA, "head_scale": scale},
        "user_heads": {"background": source, "min_favourites": HEAD_MIN_FAVOURITES},
        **(extra_metadata or {}),
    }
    return LinearHeadModel(weight=weight, bias=bias, heads=DirectionHeads().fit(mean, precision, scale),
                           metadata=metadata)


def _median_norm(collection: str | os.PathLike | None, backbone_id: str) -> float:
    from interest.core.collection import embeddings_path, read_embedding_norms

    if collection is not None and embeddings_path(collection, backbone_id).is_file():
        norms = read_embedding_norms(embeddings_path(collection, backbone_id))
        if norms is not None and np.isfinite(norms).any():
            return float(np.nanmedian(norms))
    return 1.0


def import_study_model(
    pth: str | os.PathLike,
    out: str | os.PathLike,
    *,
    group_cuts: Sequence[float] | None = None,
    cuts_from: str | os.PathLike | None = None,
    background: str | os.PathLike | None = None,
    backbone_id: str = STUDY_BACKBONE,
) -> LinearHeadModel:
    """Write the study's ``CI_R_model.pth`` as a bundle at ``out``; returns the model.

    ``ci_score`` equals the study's ``fc(encode_image(x))`` on the raw features
    of ``backbone_id`` (OpenAI CLIP ViT-L/14@336). Trend groups come from
    ``group_cuts`` (lower, upper) or from the published scores in
    ``cuts_from``'s ``reference.parquet`` (see :func:`cuts_from_reference`);
    with neither, the bundle gives ``ci_score`` only. ``background`` (default:
    ``cuts_from``), a collection with embeddings of the backbone, sets the
    user heads' background (see :func:`_background`).
    """
    if group_cuts is not None and cuts_from is not None:
        raise InterestError("give either --group-cuts or --cuts-from, not both")
    weight, bias = read_linear_state_dict(pth)
    provenance: dict[str, Any] = {
        "source": "CI_R_model.pth of fiabdu/Commonly-Interesting-Images (the study's published model)",
        "file": Path(pth).name,
        "sha256": sha256_bytes(Path(pth).read_bytes()),
        "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if cuts_from is not None:
        group_cuts, agreement = cuts_from_reference(cuts_from)
        provenance["group_cuts_from"] = {"collection": Path(cuts_from).resolve().name, "agreement": agreement}
    model = linear_model(weight, bias, backbone_id=backbone_id, raw=True, group_cuts=group_cuts,
                         background=background if background is not None else cuts_from,
                         extra_metadata={"provenance": provenance})
    model.save(out)
    return model

