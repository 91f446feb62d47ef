"""The paper's CI score: clusters -> partitions -> distinct users.

The definition (train) photos' L2-normalised embeddings are split into
semantic topics by k-means; the cluster centroids are merged hierarchically
(Ward) into partitions. A partition's commonality is the number of distinct
users with at least one favourite in it; a photo's CI is its partition's
commonality divided by the number of users with any favourite. Held-out
(test) photos take the partition of their nearest centroid and share its CI,
as in the paper; their ``ci_heldout`` is the same measure recomputed from
test favourites alone, the target an evaluation compares predictions with.

The size-adjusted variant corrects for partition size: a big partition
collects distinct users by chance. If each user's ``k_u`` favourites fell
uniformly on the ``N`` photos, a partition of ``n_p`` photos would reach
``E_p = sum_u 1 - (1 - n_p/N)^k_u`` distinct users. The score is the
chance-corrected share ``(D_p - E_p) / (U - E_p)`` (``D_p`` observed distinct
users, ``U`` users): 0 at chance, 1 when every user is there, slightly
negative when users concentrate below chance. For small partitions
``E_p ~ 0`` and it equals the paper's ``D_p / U``.

Two methods (``method``):

* ``paper`` — the study's recipe as documented: the partition CI above
  (``commonality`` picks D_p / U or the size-adjusted share).
* ``image`` (the default, chosen on the synthetic world family, see
  docs/labels.md) — each photo's own count of distinct favouriting users,
  zero-truncated (a crawl keeps only favourited photos), smoothed across
  photos by a cross-fitted log-linear model of the embedding
  (:class:`~interest.learn.linear.ZeroTruncatedPoisson`): ``ci_score`` is
  the out-of-fold expected share of users who favourite the photo. No
  cluster merge; the clusters stay as ``partition`` for the map and the
  secondary, partition-level evaluation.

Both hold out a seeded ``user_test_fraction`` of the users whole: their
favourites never enter the labels (nor the common model's training; an app
bundle's user heads learn from them), and ``label_users.parquet`` records
the split, so ``evaluate`` can rank new users' favourites.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from interest.core.collection import (
    embeddings_path,
    read_embeddings,
    read_table,
    table_path,
    update_manifest,
    write_parquet_atomic,
    write_table,
)
from interest.core.errors import InterestError
from interest.stages.labels.groups import DEFAULT_GROUP_QUANTILES, quantile_cuts
from interest.learn.groups import assign_trend_groups, check_group_cuts
from interest.core.numeric import nearest_centroid
from interest.core.progress import progress_bar

COMMONALITIES = ("users", "size_adjusted")
METHODS = ("image", "paper")
# The paper's ~200 clusters; the image method's cluster effects were best at about 100 on the world family.
DEFAULT_CLUSTERS = {"paper": 200, "image": 100}
PARTITIONS_FILE = "partitions.parquet"
USERS_FILE = "label_users.parquet"  # user_id, set (train/test): the users held out whole
SETTINGS_KEY = "interest.labels"  # key of the label settings in labels.parquet's metadata
# Full Lloyd k-means up to this many definition photos; above it mini-batch
# k-means, which clusters 400k x 512 in seconds instead of minutes.
FULL_KMEANS_MAX = 20_000
_PCA_FIT_MAX = 20_000


@dataclass(frozen=True)
class Commonality:
    """Per-partition commonality of one set of photos and favourites."""

    distinct_users: np.ndarray  # D_p: users with a favourite in partition p
    expected_users: np.ndarray  # E_p: distinct users reached by chance
    n_photos: np.ndarray  # n_p: photos of the set in partition p
    n_users: int  # U: users with any favourite in the set

    @property
    def ci_users(self) -> np.ndarray:
        """The paper's CI: D_p / U (NaN when no user has a favourite)."""
        if self.n_users == 0:
            return np.full(self.distinct_users.shape, np.nan)
        return self.distinct_users / self.n_users

    @property
    def ci_size_adjusted(self) -> np.ndarray:
        """Chance-corrected share (D_p - E_p) / (U - E_p); 0 where chance explains everything."""
        if self.n_users == 0:
            return np.full(self.distinct_users.shape, np.nan)
        room = self.n_users - self.expected_users
        with np.errstate(divide="ignore", invalid="ignore"):
            score = (self.distinct_users - self.expected_users) / room
        # room is 0 only when one partition holds every photo: all of it is chance.
        return np.where(room > 1e-12, score, 0.0)

    def score(self, kind: str) -> np.ndarray:
        """The CI of each partition by commonality ``kind`` ("users" or "size_adjusted")."""
        return self.ci_users if kind == "users" else self.ci_size_adjusted


def partition_commonality(
    photo_partition: np.ndarray, n_partitions: int, fav_user: np.ndarray, fav_photo: np.ndarray
) -> Commonality:
    """Distinct and chance-expected users per partition.

    ``photo_partition[i]`` is the partition index of photo ``i`` of the set;
    ``fav_user``/``fav_photo`` are the set's favourites as integer user codes
    and indices into ``photo_partition`` (one row per distinct favourite).
    """
    photo_partition = np.asarray(photo_partition, dtype=np.int64)
    fav_user = np.asarray(fav_user, dtype=np.int64)
    n_photos = np.bincount(photo_partition, minlength=n_partitions).astype(np.int64)
    if fav_user.size == 0:
        zeros = np.zeros(n_partitions)
        return Commonality(zeros, zeros.copy(), n_photos, 0)
    fav_part = photo_partition[np.asarray(fav_photo, dtype=np.int64)]
    pairs = np.unique(fav_user * n_partitions + fav_part)
    distinct = np.bincount(pairs % n_partitions, minlength=n_partitions).astype(float)
    users, per_user = np.unique(fav_user, return_counts=True)
    # Users with the same number of favourites have the same chance: group them.
    k_values, k_counts = np.unique(per_user, return_counts=True)
    miss = 1.0 - n_photos / max(len(photo_partition), 1)
    expected = len(users) - (miss[:, None] ** k_values[None, :]) @ k_counts
    return Commonality(distinct, expected, n_photos, int(len(users)))


def split_photos(n_photos: int, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out (test) photos: a seeded ``test_fraction`` of ``n_photos``."""
    is_test = np.zeros(n_photos, dtype=bool)
    n_test = int(round(test_fraction * n_photos))
    is_test[np.random.default_rng(seed).permutation(n_photos)[:n_test]] = True
    return is_test


def split_users(n_users: int, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out (test) users: a seeded ``test_fraction`` of ``n_users``, from its own stream."""
    is_test = np.zeros(n_users, dtype=bool)
    n_test = int(round(test_fraction * n_users))
    is_test[np.random.default_rng([seed, 0x05E7]).permutation(n_users)[:n_test]] = True
    return is_test


def photo_distinct_users(n_photos: int, fav_user: np.ndarray, fav_photo: np.ndarray) -> np.ndarray:
    """Number of distinct users with a favourite on each photo (int64, length ``n_photos``)."""
    if len(fav_user) == 0:
        return np.zeros(n_photos, dtype=np.int64)
    n_users = int(np.max(fav_user)) + 1
    pairs = np.unique(np.asarray(fav_photo, dtype=np.int64) * n_users + np.asarray(fav_user, dtype=np.int64))
    return np.bincount(pairs // n_users, minlength=n_photos).astype(np.int64)


def image_level_ci(emb: np.ndarray, distinct_users: np.ndarray, n_users: int, seed: int, clusters: np.ndarray):
    """The ``image`` method's CI: the fitted zero-truncated Poisson model and each row's out-of-fold share.

    ``clusters`` (one per row, 0..k-1) get shrunk effects on top of the
    linear predictor. Returns (model, out-of-fold CI of each row); the model's
    linear predictor plus its cluster's effect is the log share (log of
    expected distinct users / ``n_users``).
    """
    from interest.learn.linear import ZeroTruncatedPoisson

    model = ZeroTruncatedPoisson(seed=seed).fit(emb, distinct_users, groups=clusters)
    # the out-of-fold shares in float64, from the log counts before the model becomes one of shares
    oof = model.oof_prediction_.astype(np.float64) + model.oof_group_effect_ - np.log(n_users)
    return model.share_of(n_users), np.exp(oof)


def cluster_effects(model, n_clusters: int) -> np.ndarray:
    """The image-level model's effect of each cluster 0..n_clusters-1 (0 for a cluster it never saw)."""
    effect = np.zeros(n_clusters)
    effect[np.asarray(model.groups_, dtype=np.int64)] = model.group_effect_
    return effect


def fit_clusters(emb: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means of the rows of ``emb``: (cluster of each row, centroids (k, dim))."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if len(emb) <= FULL_KMEANS_MAX:
        km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(emb)
        return km.labels_.astype(np.int64), km.cluster_centers_.astype(np.float32)
    # labels_ are recomputed against the final centroids at the end of fit, so
    # train photos and test photos (nearest_centroid) meet the same rule.
    km = MiniBatchKMeans(n_clusters=k, n_init=1, random_state=seed, batch_size=4096).fit(emb)
    return km.labels_.astype(np.int64), km.cluster_centers_.astype(np.float32)


def merge_clusters(centroids: np.ndarray, n_partitions: int) -> tuple[np.ndarray, list[str]]:
    """Ward-merge centroids into ``n_partitions`` groups.

    Returns (partition index of each cluster, partition labels). Partitions are
    numbered by their smallest cluster id; a label is the partition's cluster
    ids joined by dots in ascending order (the paper's "135.0.181" style).
    """
    k = len(centroids)
    if n_partitions >= k:
        raw = np.arange(k)
    elif n_partitions <= 1:
        raw = np.zeros(k, dtype=np.int64)
    else:
        from sklearn.cluster import AgglomerativeClustering

        raw = AgglomerativeClustering(n_clusters=n_partitions, linkage="ward").fit(centroids).labels_
    # Renumber so partition order depends on cluster ids only, not on the merger's numbering.
    first: dict[int, int] = {}
    for part in raw:  # clusters in id order: a partition's number follows its smallest cluster id
        first.setdefault(int(part), len(first))
    cluster_partition = np.array([first[int(p)] for p in raw], dtype=np.int64)
    labels = [
        ".".join(str(c) for c in np.flatnonzero(cluster_partition == p)) for p in range(len(first))
    ]
    return cluster_partition, labels


def label_collection(
    root: str | os.PathLike,
    *,
    backbone: str | None = None,
    clusters: int | None = None,
    merge_ratio: float = 0.6,
    seed: int = 0,
    test_fraction: float = 0.2,
    commonality: str = "users",
    group_cuts: tuple[float, float] | None = None,
    progress: bool = True,
    method: str = "image",
    user_test_fraction: float = 0.2,
) -> pd.DataFrame:
    """Label a collection with a CI score; write labels.parquet, partitions.parquet and label_users.parquet.

    Photos whose ``status`` is neither null nor "ok" are skipped. A seeded
    ``test_fraction`` of the photos is held out (``set`` = "test"), and a
    seeded ``user_test_fraction`` of the users with a favourite is held out
    whole (their favourites are ignored here and by the common model). The rest
    (the definition set) is clustered into ``clusters`` k-means clusters
    (default: 200, the paper's, for "paper"; 100 for "image", where each
    cluster gets a shrunk effect; fewer, with a warning, when there are
    under 10 photos per cluster).
    ``method`` "image" (default) scores each photo by its image-level
    commonality (see the module docstring) and keeps the clusters as
    partitions; "paper" is the study's recipe: clusters merged into about
    ``merge_ratio * clusters`` partitions, and ``commonality``
    picks ``ci_score``: "users" (the paper's distinct users / users) or
    "size_adjusted" (corrected for what a partition of that size reaches by
    chance); both are stored as ``ci_users`` and ``ci_size_adjusted`` by
    either method, with ``distinct_users`` (the photo's own count of distinct
    definition users). ``user_test_fraction=0`` with ``method="paper"`` is
    the study's definition over all users.
    ``group_cuts`` = (lower, upper) CI cut points for the trend groups;
    default: terciles of the definition photos' CI.

    Returns the labels table (one row per labelled photo, sorted by photo_id)
    with its settings in ``.attrs["interest.labels"]``.
    """
    if method not in METHODS:
        raise InterestError(f"method={method!r}: choose one of {', '.join(METHODS)}")
    if clusters is None:
        clusters = DEFAULT_CLUSTERS[method]
    clusters, merge_ratio, test_fraction = _check_settings(clusters, merge_ratio, test_fraction, commonality)
    if not 0.0 <= float(user_test_fraction) < 1.0:
        raise InterestError(f"user_test_fraction={user_test_fraction!r}: give a number in [0, 1)")
    user_test_fraction = float(user_test_fraction)
    if group_cuts is not None:
        group_cuts = check_group_cuts(group_cuts)
    bar = progress_bar(total=5, desc="label", unit="step", enabled=progress, leave=False)

    bar.set_postfix_str("reading")
    backbone_id, emb_ids, emb = read_embeddings(root, backbone)
    photo_ids, emb_rows, fav_user_ids, fav_photo, user_ids = _read_collection(root, backbone_id, emb_ids)
    is_test = split_photos(len(photo_ids), test_fraction, seed)
    user_is_test = split_users(len(user_ids), user_test_fraction, seed)
    # held-out users' favourites never define anything: drop them before any count
    keep_fav = ~user_is_test[fav_user_ids]
    fav_user_ids, fav_photo = fav_user_ids[keep_fav], fav_photo[keep_fav]
    train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    k = min(clusters, len(train) // 10)
    if k < 2:
        raise InterestError(
            f"{table_path(root, 'photos')}: only {len(train)} definition photos; labelling needs at least 20 "
            "(collect more photos or lower --test-fraction)"
        )
    if k < clusters:
        warnings.warn(
            f"{len(train)} definition photos are too few for {clusters} clusters; using {k} (10 photos per cluster)",
            stacklevel=2,
        )
    bar.update()

    bar.set_postfix_str("clustering")
    train_emb = emb[emb_rows[train]]
    cluster = np.empty(len(photo_ids), dtype=np.int64)
    cluster[train], centroids = fit_clusters(train_emb, k, seed)
    test_emb = emb[emb_rows[test]]
    cluster[test] = nearest_centroid(test_emb, centroids)
    del emb  # the definition and test photos' copies are all that is needed from here on
    bar.update()

    bar.set_postfix_str("merging")
    # the image method keeps every cluster: a hard merge fuses clusters of very different appeal
    n_partitions = max(1, int(round(merge_ratio * k))) if method == "paper" else k
    cluster_partition, partition_labels = merge_clusters(centroids, n_partitions)
    n_partitions = len(partition_labels)
    part = cluster_partition[cluster]
    bar.update()

    bar.set_postfix_str("scoring")
    # Favourites split with their photo: train favourites define CI, test ones give ci_heldout.
    fav_is_test = is_test[fav_photo]
    position = np.empty(len(photo_ids), dtype=np.int64)
    position[train], position[test] = np.arange(len(train)), np.arange(len(test))
    defined = partition_commonality(
        part[train], n_partitions, fav_user_ids[~fav_is_test], position[fav_photo[~fav_is_test]]
    )
    if defined.n_users == 0:
        raise InterestError(
            f"{table_path(root, 'favorites')}: no favourite falls on a definition photo; "
            "collect more favourites or lower --test-fraction"
        )
    heldout = partition_commonality(
        part[test], n_partitions, fav_user_ids[fav_is_test], position[fav_photo[fav_is_test]]
    )
    ci_users, ci_adjusted = defined.ci_users, defined.ci_size_adjusted
    ci_part = defined.score(commonality)
    # every photo's own count of distinct definition users (test photos' counts are only stored, never fitted)
    distinct = photo_distinct_users(len(photo_ids), fav_user_ids, fav_photo)
    if method == "paper":
        ci_photo = ci_part[part]
    else:
        bar.set_postfix_str("image-level")
        image_model, oof = image_level_ci(train_emb, distinct[train], defined.n_users, seed, cluster[train])
        ci_photo = np.empty(len(photo_ids))
        ci_photo[train] = oof
        if len(test):
            effect = cluster_effects(image_model, k)[cluster[test]]
            ci_photo[test] = np.exp(image_model.predict(test_emb).astype(np.float64) + effect)
        # a partition's CI for the map: the mean image-level CI of its definition photos
        sums = np.bincount(part[train], weights=ci_photo[train], minlength=n_partitions)
        ci_part = sums / np.maximum(defined.n_photos, 1)
    if group_cuts is None:
        cuts = quantile_cuts(ci_photo[train])
        cuts_source = f"quantiles {list(DEFAULT_GROUP_QUANTILES)} of train CI"
    else:
        cuts, cuts_source = group_cuts, "given"
    group_part = assign_trend_groups(ci_part, cuts)
    ci_heldout = np.full(len(photo_ids), np.nan)
    ci_heldout[test] = heldout.score(commonality)[part[test]]
    labels = pd.DataFrame(
        {
            "photo_id": photo_ids,
            "set": np.where(is_test, "test", "train"),
            "cluster_label": cluster,
            "partition": np.asarray(partition_labels, dtype=object)[part],
            "ci_score": ci_photo,
            "trend_group": assign_trend_groups(ci_photo, cuts),
            "ci_users": ci_users[part],
            "ci_size_adjusted": ci_adjusted[part],
            "ci_heldout": ci_heldout,
            "distinct_users": distinct,
        }
    )
    settings = {
        "backbone": backbone_id,
        "clusters": clusters,
        "clusters_used": int(k),
        "partitions": int(n_partitions),
        "merge_ratio": merge_ratio,
        "seed": int(seed),
        "test_fraction": test_fraction,
        "commonality": commonality,
        "method": method,
        "user_test_fraction": user_test_fraction,
        "n_users_test": int(user_is_test.sum()),
        "group_cuts": [float(c) for c in cuts],
        "group_cuts_source": cuts_source,
        "n_train": int(len(train)),
        "n_test": int(len(test)),
        "users_train": defined.n_users,
        "users_test": heldout.n_users,
    }
    labels.attrs[SETTINGS_KEY] = settings
    bar.update()

    bar.set_postfix_str("writing")
    partitions = pd.DataFrame(
        {
            "partition": partition_labels,
            "clusters": [[int(c) for c in lab.split(".")] for lab in partition_labels],
            "n_photos": defined.n_photos,
            "n_test_photos": heldout.n_photos,
            "distinct_users": defined.distinct_users.astype(np.int64),
            "expected_users": defined.expected_users,
            "ci_users": ci_users,
            "ci_size_adjusted": ci_adjusted,
            "ci_score": ci_part,
            "trend_group": group_part,
            "distinct_users_test": heldout.distinct_users.astype(np.int64),
            "ci_heldout": heldout.score(commonality),
        }
    )
    xy = _partition_map(train_emb, cluster[train], cluster_partition, centroids, n_partitions, seed)
    partitions["x"], partitions["y"] = xy[:, 0], xy[:, 1]
    write_table(root, "labels", labels, **settings)
    write_parquet_atomic(partitions_path(root), partitions)
    users_table = pd.DataFrame(
        {"user_id": pd.array(user_ids, dtype="string"), "set": np.where(user_is_test, "test", "train")}
    )
    write_parquet_atomic(users_path(root), users_table)
    update_manifest(root, "label_users", rows=len(users_table), seed=int(seed), test_fraction=user_test_fraction)
    update_manifest(root, "partitions", rows=len(partitions), backbone=backbone_id, seed=int(seed))
    bar.update()
    bar.close()
    return labels


def partitions_path(root: str | os.PathLike) -> Path:
    """Path of the partitions table written beside labels.parquet."""
    return Path(root) / PARTITIONS_FILE


def users_path(root: str | os.PathLike) -> Path:
    """Path of the users split (user_id, set) written beside labels.parquet."""
    return Path(root) / USERS_FILE


def read_user_split(root: str | os.PathLike) -> pd.DataFrame | None:
    """label_users.parquet (user_id, set) of collection ``root``; None when labels predate it."""
    from interest.core.collection import read_parquet_checked

    path = users_path(root)
    if not path.is_file():
        return None
    users = read_parquet_checked(path, ["user_id", "set"], required=["user_id", "set"])
    return users.assign(user_id=users["user_id"].astype(str), set=users["set"].astype(str))


def _check_settings(
    clusters: int, merge_ratio: float, test_fraction: float, commonality: str
) -> tuple[int, float, float]:
    if isinstance(clusters, bool) or not isinstance(clusters, (int, np.integer)) or clusters < 2:
        raise InterestError(f"clusters={clusters!r}: give a whole number of at least 2")
    if not 0.0 < float(merge_ratio) <= 1.0:
        raise InterestError(f"merge_ratio={merge_ratio!r}: give a number in (0, 1] (partitions per cluster)")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise InterestError(f"test_fraction={test_fraction!r}: give a number in [0, 1)")
    if commonality not in COMMONALITIES:
        raise InterestError(f"commonality={commonality!r}: choose one of {', '.join(COMMONALITIES)}")
    return int(clusters), float(merge_ratio), float(test_fraction)


def _read_collection(
    root: str | os.PathLike, backbone_id: str, emb_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The photos to label and their favourites.

    Returns (photo ids sorted, row of each in the embeddings, favourites' user
    codes, favourites' photo indices, user id of each code); favourites of
    skipped photos dropped.
    """
    photos = read_table(root, "photos", ["photo_id", "status"], required=["photo_id"])
    favorites = read_table(root, "favorites", ["user_id", "photo_id"])
    photos_file, favorites_file = table_path(root, "photos"), table_path(root, "favorites")
    if photos.empty:
        raise InterestError(f"{photos_file}: no photos; collect or import a collection first")
    ids = photos["photo_id"].astype(str).to_numpy()
    dup = pd.Index(ids).duplicated()
    if dup.any():
        raise InterestError(f"{photos_file}: photo_id {ids[dup][0]} appears twice; photo ids must be unique")
    status = photos["status"].astype("string") if "status" in photos else pd.Series(pd.NA, index=photos.index)
    ok = (status.isna() | (status == "ok")).to_numpy(dtype=bool, na_value=True)
    if not ok.any():
        raise InterestError(f"{photos_file}: no photo has status 'ok'; download or re-check the images")
    if favorites.empty:
        raise InterestError(f"{favorites_file}: no favourites; CI needs users' favourites (collect or import them)")
    fav_photo_ids = favorites["photo_id"].astype(str).to_numpy()
    known = pd.Index(ids).get_indexer(fav_photo_ids) >= 0  # a hash lookup (isin on strings: seconds at paper scale)
    if not known.all():
        bad = fav_photo_ids[~known][0]
        raise InterestError(
            f"{favorites_file}: photo_id {bad} is favourited but not in photos.parquet; "
            "re-import the collection or drop that favourite"
        )
    photo_ids = np.sort(ids[ok])
    emb_index = pd.Index(emb_ids)
    if not emb_index.is_unique:
        bad = emb_index[emb_index.duplicated()][0]
        raise InterestError(
            f"{embeddings_path(root, backbone_id)}: photo_id {bad} appears twice; re-run `interest embed`"
        )
    emb_rows = emb_index.get_indexer(photo_ids)
    if (emb_rows < 0).any():
        bad = photo_ids[emb_rows < 0][0]
        raise InterestError(
            f"{embeddings_path(root, backbone_id)}: photo_id {bad} has no embedding; run `interest embed {root}`"
        )
    fav_index = pd.Index(photo_ids).get_indexer(fav_photo_ids)
    kept = fav_index >= 0  # favourites of skipped (not ok) photos drop out with them
    fav_users = favorites["user_id"].astype(str).to_numpy()[kept]
    user_ids, fav_user_codes = np.unique(fav_users, return_inverse=True)
    return photo_ids, emb_rows, fav_user_codes.astype(np.int64), fav_index[kept].astype(np.int64), user_ids


def _partition_map(
    train_emb: np.ndarray,
    train_cluster: np.ndarray,
    cluster_partition: np.ndarray,
    centroids: np.ndarray,
    n_partitions: int,
    seed: int,
) -> np.ndarray:
    """2-D coordinates of each partition's centroid, by a seeded PCA of the definition photos."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    fit_rows = train_emb
    if len(train_emb) > _PCA_FIT_MAX:
        fit_rows = train_emb[np.sort(rng.choice(len(train_emb), _PCA_FIT_MAX, replace=False))]
    n_comp = min(2, fit_rows.shape[1], len(fit_rows))
    pca = PCA(n_components=n_comp, svd_solver="full").fit(fit_rows)
    # A partition's centroid is the photo-weighted mean of its clusters' centroids.
    weight = np.bincount(train_cluster, minlength=len(centroids)).astype(float)
    weight = np.where(weight > 0, weight, 1e-9)  # an empty cluster still places its partition
    sums = np.zeros((n_partitions, centroids.shape[1]))
    np.add.at(sums, cluster_partition, centroids * weight[:, None])
    totals = np.bincount(cluster_partition, weights=weight, minlength=n_partitions)
    xy = np.zeros((n_partitions, 2))
    xy[:, :n_comp] = pca.transform((sums / totals[:, None]).astype(np.float32))
    return xy
