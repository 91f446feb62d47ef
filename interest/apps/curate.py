"""Curation: the best shot of each burst, then the most interesting of what remains.

A folder of a phone's photos holds bursts and re-edits: several frames of one
moment. :func:`curate` embeds every image with the model's backbone, groups
near-duplicates, keeps the most interesting frame of each group (for a user
when one is given, else by the common CI score) and ranks the kept frames.

Grouping is complete-linkage agglomerative clustering on cosine similarity
with a threshold: two photos share a group only if *every* pair in the group
is at least ``similarity`` alike. Single linkage (connected components) would
chain a slow pan into one group whose first and last frames share nothing;
complete linkage does not. To stay fast on large folders the threshold graph
is split into connected components first (no group can span two of them),
and the clustering runs inside each component, which gives exactly the
result of clustering the whole folder at once.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from interest.core.collection import atomic_path, write_csv_atomic
from interest.core.errors import InterestError
from interest.imaging.images import find_images
from interest.pipeline.local import embed_paths
from interest.core.safe_files import MAX_IMAGE_BYTES, open_file

if TYPE_CHECKING:
    from interest.scoring import ImageScoring

# Near-duplicate thresholds per backbone kind. CLIP puts bursts and re-edits above ~0.95 and
# different scenes mostly below 0.85; the perceptual statistics are coarser (different
# pictures of one palette and texture reach 0.96), so they need a stricter cut.
DEFAULT_SIMILARITY = {"openclip": 0.92, "perceptual": 0.985}
_BLOCK = 2048  # rows per block of the similarity matrix: bounds memory at 16 MB of float32


def curate(
    model: ImageScoring | str | os.PathLike,
    photos_dir: str | os.PathLike,
    *,
    user: str | None = None,
    keep: int | None = None,
    top_percent: float | None = None,
    similarity: float | None = None,
    out: str | os.PathLike | None = None,
    copy_to: str | os.PathLike | None = None,
    batch_size: int = 32,
    progress: bool = True,
    cache: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Group near-duplicate shots in ``photos_dir``, keep the best of each, rank and select.

    ``model`` is an :class:`~interest.models.model.InterestModel` or a bundle
    path. The ranking score is the user's personal score when ``user`` is
    given, else the common CI score. ``keep`` selects that many groups' best
    shots; ``top_percent`` selects that percentage of the readable photos
    (rounded up, at most one per group); neither selects every group's best.
    ``similarity`` is the cosine similarity of embeddings from which two
    shots count as near-duplicates; None takes the backbone's default
    (:data:`DEFAULT_SIMILARITY`).

    Returns one row per image file: ``rank`` (1 = best, null when not
    selected), ``selected``, ``path`` (relative to ``photos_dir``), ``group``,
    ``group_size``, ``best_in_group``, ``score`` (the ranking score), the
    model's score columns and ``error`` (why an unreadable image was left
    out). Selected rows come first, in rank order. ``out`` writes this table
    as CSV; ``copy_to`` copies the selected files there, named
    ``<rank>_<file name>`` so that a file browser shows them in rank order.
    ``cache``: a folder keeping the photos' embeddings by content
    (:mod:`interest.pipeline.file_cache`), so that curating the folder again embeds only new photos.
    To show the result in a photo manager, pass the table to
    :func:`interest.apps.xmp.write_sidecars` (picks and ratings in XMP sidecars).
    """
    import interest

    if keep is not None and top_percent is not None:
        raise InterestError("give either --keep or --top-percent, not both")
    if keep is not None and keep < 1:
        raise InterestError(f"--keep {keep}: keep at least one photo")
    if top_percent is not None and not 0 < top_percent <= 100:
        raise InterestError(f"--top-percent {top_percent}: give a percentage in (0, 100]")
    photos_dir = Path(photos_dir)
    if not isinstance(model, (str, os.PathLike)):
        bundle = model
    else:
        bundle = interest.load(model)
    if similarity is None:
        similarity = DEFAULT_SIMILARITY.get(bundle.backbone_id.split("/", 1)[0], DEFAULT_SIMILARITY["openclip"])
    if not 0 < similarity <= 1:
        raise InterestError(f"similarity {similarity}: give a cosine similarity in (0, 1]")
    if user is not None and user not in bundle.users:
        raise InterestError(f"user {user}: no head in this model; run `interest personalize` for them first")

    files = find_images(photos_dir)
    # the image pipeline's decoder and encoder, as `interest embed` and `interest score` run them
    all_emb, reasons = embed_paths(files, bundle.backbone, batch_size=batch_size, progress=progress,
                                   raw=bundle.needs_raw_features, cache=cache)
    ok = np.array([r is None for r in reasons], dtype=bool)
    paths, emb = [f for f, keep in zip(files, ok) if keep], all_emb[ok]
    errors = [(f, str(r)) for f, r in zip(files, reasons) if r is not None]
    if not paths:
        raise InterestError(f"{photos_dir}: none of the {len(files)} image files could be read ({errors[0][1]}, ...)")
    scores = bundle.score_embeddings(emb, user=user, backbone_id=bundle.backbone_id)
    score_col = "user_score" if user is not None else "ci_score"

    table = pd.DataFrame({"path": [p.relative_to(photos_dir).as_posix() for p in paths]})
    for col in scores.columns:
        if col not in ("photo_id", "path"):
            table[col] = scores[col].to_numpy()
    table["score"] = table[score_col].to_numpy(dtype=float)
    from interest.core.collection import l2_normalize

    table["group"] = group_near_duplicates(l2_normalize(emb), similarity)  # cosine: raw rows normalised first
    table["group_size"] = table.groupby("group")["path"].transform("size").astype(int)
    # best of each group: highest score, ties to the first path (files are sorted) so reruns agree
    order = table.sort_values(["group", "score", "path"], ascending=[True, False, True], kind="mergesort")
    table["best_in_group"] = False
    table.loc[order.drop_duplicates("group").index, "best_in_group"] = True

    n_select = _how_many(int(table["best_in_group"].sum()), len(table), keep, top_percent)
    best = table[table["best_in_group"]].sort_values(["score", "path"], ascending=[False, True], kind="mergesort")
    table["rank"] = pd.array([pd.NA] * len(table), dtype="Int64")
    table.loc[best.index[:n_select], "rank"] = np.arange(1, n_select + 1)
    table["selected"] = table["rank"].notna()
    table["error"] = pd.array([None] * len(table), dtype="string")

    if errors:
        bad = pd.DataFrame({"path": [p.relative_to(photos_dir).as_posix() for p, _ in errors], "error": [e for _, e in errors]})
        bad["selected"] = False
        bad["best_in_group"] = False
        bad["rank"] = pd.array([pd.NA] * len(bad), dtype="Int64")
        table = pd.concat([table, bad.astype({"error": "string"})], ignore_index=True)
    # integer columns stay integers (nullable) when unreadable files add empty rows: concat would make them floats
    for col in ("group", "group_size", "trend_group"):
        if col in table:
            table[col] = table[col].astype("Int64")
    table = _ordered(table)

    if out is not None:
        write_csv_atomic(out, table)
    if copy_to is not None:
        copy_selection(table, photos_dir, copy_to)
    return table


def group_near_duplicates(embeddings: np.ndarray, similarity: float = 0.92) -> np.ndarray:
    """Group ids (n,) for L2-normalised embeddings: complete linkage at cosine ``similarity``.

    Every pair of photos in a group has cosine similarity >= ``similarity``.
    Groups are numbered 0, 1, ... in the order of their first member.
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    emb = np.asarray(embeddings, dtype=np.float32)
    n = len(emb)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    rows, cols = [], []
    for start in range(0, n, _BLOCK):
        sim = emb[start : start + _BLOCK] @ emb.T
        r, c = np.nonzero(sim >= similarity)
        rows.append(r + start)
        cols.append(c)
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    n_comp, comp = connected_components(graph, directed=False)
    labels = np.empty(n, dtype=np.int64)
    next_label = 0
    for k in range(n_comp):
        members = np.flatnonzero(comp == k)
        if len(members) <= 2:  # a pair in one component is within the threshold by construction
            sub = np.zeros(len(members), dtype=np.int64)
        else:
            x = emb[members].astype(np.float64)
            dist = np.clip(1.0 - x @ x.T, 0.0, 2.0)
            condensed = dist[np.triu_indices(len(members), 1)]
            sub = fcluster(linkage(condensed, method="complete"), t=1.0 - similarity, criterion="distance") - 1
        labels[members] = sub + next_label
        next_label += int(sub.max()) + 1
    # renumber by first appearance, so that ids do not depend on component order
    _, first = np.unique(labels, return_index=True)
    rename = np.empty(next_label, dtype=np.int64)
    rename[labels[np.sort(first)]] = np.arange(len(first))
    return rename[labels]


def copy_selection(table: pd.DataFrame, photos_dir: str | os.PathLike, copy_to: str | os.PathLike) -> list[Path]:
    """Copy the selected files of a curation table into ``copy_to`` as ``<rank>_<name>``; returns the copies.

    A table's ``path`` must resolve inside ``photos_dir`` and name a regular
    file (:func:`interest.core.safe_files.open_file`): an edited table cannot copy
    a file from elsewhere on the disk, and a FIFO cannot hang the copy.
    """
    copy_to = Path(copy_to)
    selected = table[table["selected"]].sort_values("rank")
    width = max(3, len(str(len(selected))))
    copies = []
    for rank, rel in zip(selected["rank"], selected["path"]):
        dest = copy_to / f"{int(rank):0{width}d}_{Path(rel).name}"
        with open_file(str(rel), max_bytes=MAX_IMAGE_BYTES, roots=[photos_dir]) as src, atomic_path(dest) as tmp:
            with open(tmp, "wb") as f:
                shutil.copyfileobj(src, f)
        copies.append(dest)
    return copies


def _how_many(n_groups: int, n_photos: int, keep: int | None, top_percent: float | None) -> int:
    if keep is not None:
        return min(keep, n_groups)
    if top_percent is not None:
        return min(math.ceil(n_photos * top_percent / 100.0), n_groups)
    return n_groups


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    """Selected rows in rank order, then the rest by group and score; fixed column order."""
    table = table.assign(_sel=~table["selected"]).sort_values(
        ["_sel", "rank", "group", "score", "path"], ascending=[True, True, True, False, True], na_position="last", kind="mergesort"
    )
    first = ["rank", "selected", "path", "group", "group_size", "best_in_group", "score"]
    rest = [c for c in table.columns if c not in first and c not in ("_sel", "error")]
    return table[first + rest + ["error"]].reset_index(drop=True)
