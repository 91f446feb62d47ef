"""XMP sidecars: a photo's scores as stars, keywords and numbers where photo managers read them.

darktable, digiKam, Lightroom and Immich read ``IMG.jpg.xmp`` (or ``IMG.xmp``)
beside an image. :func:`write_sidecars` puts into each one

- ``xmp:Rating`` 1-5 from the score (:func:`stars`: cuts taken from the bundle,
  never from the folder, so a photo gets the same stars in any folder);
- the keyword ``interest|<trend group>`` in ``dc:subject`` and
  ``lr:hierarchicalSubject``;
- the numbers in the package's own namespace (:data:`INTEREST_NS`, prefix
  ``interest``): ``ciScore``, ``trendGroup``, ``pCommon``, ``pInterplay``,
  ``pSubjective``, ``userScore`` and ``user``, ``model``, ``modelFingerprint``,
  ``ratingCuts``, and what the package last wrote as ``rating`` and ``pickLabel``;
- from a curation table: digiKam's pick label (``digiKam:PickLabel``, 3 =
  accepted) on each selected best shot and, when asked, rating -1 and pick
  label 1 (rejected) on the near-duplicates it beat.

A person's metadata is theirs. The package owns its namespace, the keywords
under ``interest|``, and the rating and pick label only while they still hold
the value it wrote last (recorded as ``interest:rating`` / ``interest:pickLabel``):
a rating the person set (any other non-zero value) is kept unless
``overwrite_rating``. Everything else in a sidecar (darktable's history, a
person's keywords, face regions, GPS) is carried over element for element.
A sidecar whose new bytes equal its old ones is not written at all, so a
second run leaves every file and its mtime alone; writes go to a temporary
file that is renamed over the old one. Images are only ever read.

Why a writer over defusedxml rather than an XMP toolkit: python-xmp-toolkit
needs the Exempi C library from the system package manager and pyexiv2 a
platform build of Exiv2, and both parse a stranger's file with their own
expat, which still has to be screened for entity bombs first; a sidecar is a
small RDF/XML document, and what the package writes in it is five properties.
So sidecars are parsed by :mod:`defusedxml` (no DTD, hence no entity
expansion and no external entities; size bounded by :data:`~interest.apps.xmp_packet.MAX_SIDECAR_BYTES`)
into an ElementTree, edited there, and written back with the document's own
namespace prefixes (:mod:`interest.apps.xmp_packet`). The tests read every
sidecar back with ExifTool.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from interest.apps.xmp_packet import (
    INTEREST_NS,
    KEYWORD_ROOT,
    NAMESPACES,
    SidecarError,
    append_child,
    depth_of,
    descriptions_of,
    get_simple,
    new_packet,
    parse_packet,
    read_bounded,
    remove_namespace,
    remove_simple,
    serialize,
    set_keyword,
    set_simple,
)
from interest.core.errors import InterestError, require
from interest.core.progress import progress_bar
from interest.core.vocabulary import GROUP_PROBABILITY_COLUMNS, TREND_GROUPS

if TYPE_CHECKING:
    from interest.models.base import EmbeddingModel

RATING_QUANTILES = (0.2, 0.4, 0.6, 0.8)  # five stars, a fifth of the training photos each
PICK_ACCEPTED, PICK_REJECTED = 3, 1  # digiKam's pick labels (0 none, 1 rejected, 2 pending, 3 accepted)
NAMING = ("ext", "stem")

_RATING = f"{{{NAMESPACES['xmp']}}}Rating"
_PICK = f"{{{NAMESPACES['digiKam']}}}PickLabel"
_SUBJECT = f"{{{NAMESPACES['dc']}}}subject"
_HIERARCHICAL = f"{{{NAMESPACES['lr']}}}hierarchicalSubject"


# ---------------------------------------------------------------- scores -> stars


def rating_cuts(model: EmbeddingModel) -> np.ndarray:
    """The four CI-score cut points between 1|2|3|4|5 stars, from the bundle alone (4,) float64.

    A bundle trained by this version stores them (model.json
    ``thresholds.rating_cuts``): the quintiles of the app model's
    ``ci_score`` on its training photos, so that each star holds a fifth of
    them. An older bundle, or the study's imported head, has trend-group
    cuts instead: the cuts are then the quintiles of the logistic
    distribution that puts the training photos' share of the subjective
    group below the lower cut and of the common group above the upper one
    (equal thirds when the bundle does not say). InterestError when the
    bundle has neither.
    """
    thresholds = model.metadata.get("thresholds") or {}
    stored = thresholds.get("rating_cuts")
    if stored:
        cuts = np.asarray(stored, dtype=np.float64)
        if cuts.shape != (4,) or not np.isfinite(cuts).all() or (np.diff(cuts) < 0).any():
            raise InterestError(f"{model.name}: thresholds.rating_cuts must be four ascending numbers; restore the bundle or retrain")
        return cuts
    cuts = thresholds.get("group_cuts") or model.label_settings.get("group_cuts")
    if not cuts:
        raise InterestError(
            f"{model.name}: no rating cuts and no trend-group cuts in the bundle, so scores cannot be mapped to "
            "stars; retrain it (or import it with --group-cuts)"
        )
    lower, upper = float(cuts[0]), float(cuts[1])
    prior = getattr(getattr(model, "groups", None), "prior_", None)
    below = float(prior[TREND_GROUPS.index("subjective")]) if prior is not None else 1 / 3
    above = float(prior[TREND_GROUPS.index("common")]) if prior is not None else 1 / 3
    below, at_upper = np.clip([below, 1.0 - above], 0.02, 0.98)
    if not upper > lower or not at_upper > below:  # degenerate bands: equal thirds
        below, at_upper = 1 / 3, 2 / 3
        upper = lower + max(upper - lower, 1e-9)
    scale = (upper - lower) / (_logit(at_upper) - _logit(below))
    centre = lower - scale * _logit(below)
    return centre + scale * _logit(np.asarray(RATING_QUANTILES))


def _logit(p):
    return np.log(p / (1.0 - p))


def stars(scores: Sequence[float] | np.ndarray | pd.Series, cuts: np.ndarray) -> np.ndarray:
    """Stars 1-5 of each score (0 where the score is NaN): one more star for each cut the score reaches."""
    scores = np.asarray(scores, dtype=np.float64)
    out = 1 + np.searchsorted(np.asarray(cuts, dtype=np.float64), scores, side="right")
    return np.where(np.isfinite(scores), out, 0).astype(np.int64)


def model_fingerprint(model: EmbeddingModel) -> str:
    """sha256 (first 16 hex) over the checksums of the bundle's parts other than the user heads.

    Personalising a user does not change it (their ``userScore`` does); retraining does.
    """
    parts = model.metadata.get("parts")
    if not parts:  # a model trained in memory, never saved: hash its parts' bytes
        files, _ = model.bundle_parts()
        parts = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    common = {name: digest for name, digest in parts.items() if not name.startswith("user_heads")}
    return hashlib.sha256(json.dumps(common, sort_keys=True).encode()).hexdigest()[:16]


def _model_name(model: EmbeddingModel) -> str:
    name = str(getattr(model, "name", "model"))
    return name if name.startswith("hf-hub:") else Path(name).name or name


# ---------------------------------------------------------------- the report


@dataclass
class SidecarReport:
    """What :func:`write_sidecars` did: sidecars written, unchanged, where the person's rating (or pick label)
    was kept, sidecars skipped with the reason (left untouched), and images without a score (none written)."""

    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    kept_rating: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    no_score: list[Path] = field(default_factory=list)

    def summary(self, details: bool = True) -> str:
        """One line: ``xmp: 12 written, 3 unchanged, 2 kept the person's rating, 1 skipped (a.jpg.xmp: ...)``;
        ``details=False`` leaves out the skipped sidecars' names and reasons."""
        line = (f"xmp: {len(self.written)} written, {len(self.unchanged)} unchanged, "
                f"{len(self.kept_rating)} kept the person's rating, {len(self.skipped)} skipped")
        if self.no_score:
            line += f", {len(self.no_score)} images without a score"
        if self.skipped and details:
            shown = "; ".join(f"{path}: {reason}" for path, reason in self.skipped[:3])
            more = f"; and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
            line += f" ({shown}{more})"
        return line


# ---------------------------------------------------------------- the entry point


def sidecar_path(image: str | os.PathLike, naming: str = "ext") -> Path:
    """The sidecar of ``image``: ``IMG.jpg.xmp`` (``naming="ext"``, darktable's and Immich's) or ``IMG.xmp``
    (``"stem"``, Lightroom's and digiKam's option); the existing one of the other convention when only that
    one is there, unless another file shares the stem (``IMG.CR2`` beside ``IMG.jpg``: ``IMG.xmp`` is the raw's)."""
    if naming not in NAMING:
        raise InterestError(f"xmp naming {naming!r}: choose ext (IMG.jpg.xmp) or stem (IMG.xmp)")
    image = Path(image)
    ext, stem = image.with_name(image.name + ".xmp"), image.with_suffix(".xmp")
    preferred, other = (ext, stem) if naming == "ext" else (stem, ext)
    if preferred.is_file() or not other.is_file():
        return preferred
    if other == stem and any(p != image and p.suffix.lower() != ".xmp" for p in image.parent.glob(_glob_escape(image.stem) + ".*")):
        return preferred
    return other


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def write_sidecars(
    model: EmbeddingModel,
    scores: pd.DataFrame,
    photos_dir: str | os.PathLike | None = None,
    *,
    user: str | None = None,
    naming: str = "ext",
    overwrite_rating: bool = False,
    reject_others: bool = False,
    progress: bool = True,
) -> SidecarReport:
    """Write (or merge into) the XMP sidecar of every scored image in ``scores``; images are only read.

    ``scores`` is a table from :meth:`InterestModel.score` or
    :func:`interest.apps.curate.curate`: a ``path`` column (relative to
    ``photos_dir`` when given), ``ci_score``, ``trend_group``, the group
    probabilities and, for ``user``, ``user_score`` (then the stars come from
    it). A curation table (``selected``, ``best_in_group``) also marks each
    selected shot as picked (digiKam pick label accepted) and, with
    ``reject_others``, rates the near-duplicates that lost to a better shot
    -1 (rejected). ``naming``: see :func:`sidecar_path`. A rating or pick
    label the person set is kept unless ``overwrite_rating``.

    Sidecars that are hostile, malformed or shared by two images
    (``naming="stem"`` with ``IMG.jpg`` and ``IMG.png``) are skipped with the
    reason and left untouched; rows without a score (unreadable images) get
    no sidecar. Both are listed in the report.
    """
    require("defusedxml", "xmp", "writing XMP sidecars")
    if "path" not in scores.columns or "ci_score" not in scores.columns:
        raise InterestError("write_sidecars needs a score table with 'path' and 'ci_score' columns")
    if user is not None and "user_score" not in scores.columns:
        raise InterestError(f"user {user}: the score table has no user_score; score with user={user!r} first")
    score_col = "user_score" if user is not None else "ci_score"
    cuts = rating_cuts(model)
    common = {
        "model": _model_name(model),
        "modelFingerprint": model_fingerprint(model),
        "ratingCuts": " ".join(_number(c) for c in cuts),
    }
    curated = {"selected", "best_in_group"} <= set(scores.columns)
    base = Path(photos_dir) if photos_dir is not None else None
    images = [base / p if base is not None else Path(p) for p in scores["path"].astype(str)]
    sidecars = [sidecar_path(image, naming) for image in images]
    shared = pd.Series(sidecars).duplicated(keep=False).to_numpy()

    report = SidecarReport()
    with progress_bar(total=len(scores), desc="xmp", unit="file", enabled=progress) as bar:
        for i, row in enumerate(scores.to_dict("records")):
            bar.update()
            sidecar = sidecars[i]
            if not _finite(row.get(score_col)):
                report.no_score.append(images[i])
                continue
            if shared[i]:
                report.skipped.append((sidecar, "shared by two images; use the ext naming (IMG.jpg.xmp)"))
                continue
            wanted = _wanted(row, user, score_col, cuts, common, curated, reject_others)
            try:
                status = _merge_one(sidecar, wanted, overwrite_rating)
            except SidecarError as exc:
                report.skipped.append((sidecar, str(exc)))
                continue
            (report.written if status["written"] else report.unchanged).append(sidecar)
            if status["kept"]:
                report.kept_rating.append(sidecar)
    return report


# ---------------------------------------------------------------- one sidecar


@dataclass
class _Wanted:
    rating: int
    pick: int | None  # None: leave the pick label alone
    keyword: str | None
    fields: dict[str, str]


def _wanted(row: dict, user, score_col, cuts, common, curated, reject_others) -> _Wanted:
    """What the package wants in one image's sidecar."""
    rating = int(stars([float(row[score_col])], cuts)[0])
    pick = None
    if curated:
        if bool(row.get("selected")):
            pick = PICK_ACCEPTED
        elif reject_others and not bool(row.get("best_in_group")):
            rating, pick = -1, PICK_REJECTED
    group = row.get("trend_group")
    name = TREND_GROUPS[int(group)] if _finite(group) else None
    fields = {"ciScore": _number(row["ci_score"])}
    if name is not None:
        fields["trendGroup"] = name
    for col, prop in zip(GROUP_PROBABILITY_COLUMNS, ("pCommon", "pInterplay", "pSubjective")):
        if _finite(row.get(col)):
            fields[prop] = _number(row[col])
    if user is not None and _finite(row.get("user_score")):
        fields["userScore"] = _number(row["user_score"])
        fields["user"] = str(user)
    fields.update(common)
    return _Wanted(rating, pick, f"{KEYWORD_ROOT}|{name}" if name else None, fields)


def _merge_one(sidecar: Path, wanted: _Wanted, overwrite: bool) -> dict:
    """Merge ``wanted`` into ``sidecar`` (created if absent); write only when the bytes change."""
    old = read_bounded(sidecar) if sidecar.exists() else None
    if old is None:
        root, prefixes = new_packet(), {}
    else:
        root, prefixes = parse_packet(old)
    descriptions, target = descriptions_of(root)
    kept = _apply(descriptions, target, depth_of(root, target), wanted, overwrite)
    new = serialize(root, prefixes)
    if new == old:
        return {"written": False, "kept": kept}
    _write_atomic(sidecar, new)
    return {"written": True, "kept": kept}


def _apply(descriptions: list[ET.Element], target: ET.Element, depth: int, wanted: _Wanted, overwrite: bool) -> bool:
    """Edit the tree in place (``target`` at ``depth``); True when the person's rating or pick label was kept."""
    last = {name: get_simple(descriptions, f"{{{INTEREST_NS}}}{name}") for name in ("rating", "pickLabel")}
    remove_namespace(descriptions, INTEREST_NS)  # the package's own fields are rewritten whole
    fields = dict(wanted.fields)
    kept = False

    rating = get_simple(descriptions, _RATING)
    persons = rating is not None and _as_int(rating) != 0 and _as_int(rating) != _as_int(last["rating"])
    if persons and not overwrite:
        kept = True
    else:
        set_simple(descriptions, target, _RATING, str(wanted.rating), depth + 1)
        fields["rating"] = str(wanted.rating)

    pick = get_simple(descriptions, _PICK)
    pick_ours = pick is None or _as_int(pick) == 0 or _as_int(pick) == _as_int(last["pickLabel"])
    if wanted.pick is not None:
        if pick_ours or overwrite:
            set_simple(descriptions, target, _PICK, str(wanted.pick), depth + 1)
            fields["pickLabel"] = str(wanted.pick)
        else:
            kept = True
    elif pick is not None and last["pickLabel"] is not None and _as_int(pick) == _as_int(last["pickLabel"]):
        remove_simple(descriptions, _PICK)  # the package's earlier pick, no longer the best shot

    for prop in (_SUBJECT, _HIERARCHICAL):
        set_keyword(descriptions, target, prop, wanted.keyword, depth + 1)
    for name, value in fields.items():
        element = ET.Element(f"{{{INTEREST_NS}}}{name}")
        element.text = value
        append_child(target, element, depth + 1)
    return kept


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it over; an existing sidecar keeps its mode."""
    from interest.core.collection import atomic_path

    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
        if mode is not None:
            os.chmod(tmp, mode)


# ---------------------------------------------------------------- small helpers


def _finite(value: Any) -> bool:
    try:
        return value is not None and value is not pd.NA and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _number(value: Any) -> str:
    return f"{float(value):.6g}"


def _as_int(value: str | None) -> int | None:
    try:
        return None if value is None else int(float(value))
    except ValueError:
        return None

