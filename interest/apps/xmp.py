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
expansion and no external entities; size bounded by :data:`MAX_SIDECAR_BYTES`)
into an ElementTree, edited there, and written back with the document's own
namespace prefixes. The tests read every sidecar back with ExifTool.
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

from interest.errors import InterestError
from interest.vocabulary import GROUP_PROBABILITY_COLUMNS, TREND_GROUPS

if TYPE_CHECKING:
    from interest.models.base import EmbeddingModel

INTEREST_NS = "https://interest.invalid/ns/xmp/1.0/"  # .invalid never resolves: nobody else can own this name
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
NAMESPACES = {  # the prefixes a new sidecar uses; an existing one keeps its own
    "x": "adobe:ns:meta/",
    "rdf": RDF,
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "dc": "http://purl.org/dc/elements/1.1/",
    "lr": "http://ns.adobe.com/lightroom/1.0/",
    "digiKam": "http://www.digikam.org/ns/1.0/",
    "interest": INTEREST_NS,
}
KEYWORD_ROOT = "interest"  # the package's keywords are interest|common, interest|interplay, interest|subjective
MAX_SIDECAR_BYTES = 32 * 2**20  # darktable's longest edit histories are a few MB; anything larger is refused
RATING_QUANTILES = (0.2, 0.4, 0.6, 0.8)  # five stars, a fifth of the training photos each
PICK_ACCEPTED, PICK_REJECTED = 3, 1  # digiKam's pick labels (0 none, 1 rejected, 2 pending, 3 accepted)
NAMING = ("ext", "stem")

_RATING = f"{{{NAMESPACES['xmp']}}}Rating"
_PICK = f"{{{NAMESPACES['digiKam']}}}PickLabel"
_SUBJECT = f"{{{NAMESPACES['dc']}}}subject"
_HIERARCHICAL = f"{{{NAMESPACES['lr']}}}hierarchicalSubject"
_DESCRIPTION, _LI, _BAG = f"{{{RDF}}}Description", f"{{{RDF}}}li", f"{{{RDF}}}Bag"
_CONTAINERS = (_BAG, f"{{{RDF}}}Seq", f"{{{RDF}}}Alt")


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


class SidecarError(Exception):
    """A sidecar this run leaves alone: refused (hostile) or unreadable (malformed); the message says which."""


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
    from interest.errors import require
    from interest.progress import progress_bar

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
    old = _read_bounded(sidecar) if sidecar.exists() else None
    if old is None:
        root, prefixes = _new_packet(), {}
    else:
        root, prefixes = _parse(old)
    descriptions, target = _descriptions(root)
    kept = _apply(descriptions, target, _depth(root, target), wanted, overwrite)
    new = _serialize(root, prefixes)
    if new == old:
        return {"written": False, "kept": kept}
    _write_atomic(sidecar, new)
    return {"written": True, "kept": kept}


def _read_bounded(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SIDECAR_BYTES + 1)
    except OSError as exc:
        raise SidecarError(f"unreadable ({exc.strerror or exc})") from None
    if len(data) > MAX_SIDECAR_BYTES:
        raise SidecarError(f"refused: larger than {MAX_SIDECAR_BYTES // 2**20} MiB, left untouched")
    return data


class _Builder(ET.TreeBuilder):
    """A tree builder that also notes each namespace's prefix, so that a person's file keeps its prefixes."""

    def __init__(self) -> None:
        super().__init__()
        self.prefixes: dict[str, str] = {}

    def start_ns(self, prefix: str, uri: str) -> None:  # called by the parser for every xmlns declaration
        self.prefixes.setdefault(uri, prefix)


def _parse(data: bytes) -> tuple[ET.Element, dict[str, str]]:
    """A sidecar's tree and prefixes; SidecarError for a DTD (entity bombs, external entities) or bad XML."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import DefusedXMLParser

    builder = _Builder()
    # forbid_dtd: XMP has no DTD, and without one there are no entities to expand nor external ones to fetch
    parser = DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    try:
        parser.feed(data)
        root = parser.close()
    except DefusedXmlException as exc:
        raise SidecarError(f"refused: declares a DTD or entities ({type(exc).__name__}), left untouched") from None
    except ET.ParseError as exc:
        raise SidecarError(f"malformed XML ({exc}), left untouched") from None
    if root.tag != f"{{{NAMESPACES['x']}}}xmpmeta" and root.tag != f"{{{RDF}}}RDF":
        raise SidecarError(f"not an XMP packet (root element {root.tag}), left untouched")
    return root, builder.prefixes


def _new_packet() -> ET.Element:
    root = ET.Element(f"{{{NAMESPACES['x']}}}xmpmeta", {f"{{{NAMESPACES['x']}}}xmptk": "interest"})
    rdf = _append(root, ET.Element(f"{{{RDF}}}RDF"), 1)
    _append(rdf, ET.Element(_DESCRIPTION, {f"{{{RDF}}}about": ""}), 2)
    return root


def _descriptions(root: ET.Element) -> tuple[list[ET.Element], ET.Element]:
    """Every rdf:Description of the packet, and the one the package adds to (the first; made when none)."""
    rdf = root if root.tag == f"{{{RDF}}}RDF" else root.find(f"{{{RDF}}}RDF")
    if rdf is None:
        raise SidecarError("not an XMP packet (no rdf:RDF), left untouched")
    descriptions = rdf.findall(_DESCRIPTION)
    if not descriptions:
        descriptions = [_append(rdf, ET.Element(_DESCRIPTION, {f"{{{RDF}}}about": ""}), _depth(root, rdf) + 1)]
    return descriptions, descriptions[0]


def _apply(descriptions: list[ET.Element], target: ET.Element, depth: int, wanted: _Wanted, overwrite: bool) -> bool:
    """Edit the tree in place (``target`` at ``depth``); True when the person's rating or pick label was kept."""
    last = {name: _get_simple(descriptions, f"{{{INTEREST_NS}}}{name}") for name in ("rating", "pickLabel")}
    _remove_namespace(descriptions, INTEREST_NS)  # the package's own fields are rewritten whole
    fields = dict(wanted.fields)
    kept = False

    rating = _get_simple(descriptions, _RATING)
    persons = rating is not None and _as_int(rating) != 0 and _as_int(rating) != _as_int(last["rating"])
    if persons and not overwrite:
        kept = True
    else:
        _set_simple(descriptions, target, _RATING, str(wanted.rating), depth + 1)
        fields["rating"] = str(wanted.rating)

    pick = _get_simple(descriptions, _PICK)
    pick_ours = pick is None or _as_int(pick) == 0 or _as_int(pick) == _as_int(last["pickLabel"])
    if wanted.pick is not None:
        if pick_ours or overwrite:
            _set_simple(descriptions, target, _PICK, str(wanted.pick), depth + 1)
            fields["pickLabel"] = str(wanted.pick)
        else:
            kept = True
    elif pick is not None and last["pickLabel"] is not None and _as_int(pick) == _as_int(last["pickLabel"]):
        _remove_simple(descriptions, _PICK)  # the package's earlier pick, no longer the best shot

    for prop in (_SUBJECT, _HIERARCHICAL):
        _set_keyword(descriptions, target, prop, wanted.keyword, depth + 1)
    for name, value in fields.items():
        element = ET.Element(f"{{{INTEREST_NS}}}{name}")
        element.text = value
        _append(target, element, depth + 1)
    return kept


# ---------------------------------------------------------------- RDF/XML edits


def _get_simple(descriptions: list[ET.Element], tag: str) -> str | None:
    """A simple property's value, written as an attribute of a description or as its child element."""
    for desc in descriptions:
        if tag in desc.attrib:
            return desc.attrib[tag]
        child = desc.find(tag)
        if child is not None:
            return (child.text or "").strip()
    return None


def _set_simple(descriptions: list[ET.Element], target: ET.Element, tag: str, value: str, depth: int) -> None:
    """Set a simple property where it already is (attribute or element); add it to ``target`` otherwise."""
    for desc in descriptions:
        if tag in desc.attrib:
            desc.set(tag, value)
            return
        child = desc.find(tag)
        if child is not None:
            child.text = value
            return
    element = ET.Element(tag)
    element.text = value
    _append(target, element, depth)


def _remove_simple(descriptions: list[ET.Element], tag: str) -> None:
    for desc in descriptions:
        desc.attrib.pop(tag, None)
        for child in desc.findall(tag):
            _remove(desc, child)


def _remove_namespace(descriptions: list[ET.Element], uri: str) -> None:
    prefix = f"{{{uri}}}"
    for desc in descriptions:
        for name in [a for a in desc.attrib if a.startswith(prefix)]:
            del desc.attrib[name]
        for child in [c for c in desc if c.tag.startswith(prefix)]:
            _remove(desc, child)


def _set_keyword(descriptions: list[ET.Element], target: ET.Element, tag: str, keyword: str | None, depth: int) -> None:
    """Replace the package's keywords (``interest|...``) in a bag property; the person's stay as they are."""
    prop = next((d.find(tag) for d in descriptions if d.find(tag) is not None), None)
    if prop is None:
        if keyword is None:
            return
        prop = _append(target, ET.Element(tag), depth)
    container = next((c for c in prop if c.tag in _CONTAINERS), None)
    if container is None:
        if (prop.text or "").strip() or len(prop):  # not a bag: someone else's form of it, left alone
            return
        container = _append(prop, ET.Element(_BAG), depth + 1)
    for item in [li for li in container.findall(_LI) if (li.text or "").startswith(KEYWORD_ROOT + "|")]:
        _remove(container, item)
    if keyword is not None:
        item = ET.Element(_LI)
        item.text = keyword
        _append(container, item, depth + 2)


def _append(parent: ET.Element, child: ET.Element, depth: int) -> ET.Element:
    """Append ``child`` at ``depth`` (its indentation, one space a level) following the parent's layout."""
    indent = "\n" + " " * depth
    if len(parent):
        last = parent[-1]
        child.tail = last.tail
        last.tail = parent.text if parent.text is not None and not parent.text.strip() else indent
    else:
        parent.text = indent
        child.tail = "\n" + " " * max(depth - 1, 0)
    parent.append(child)
    return child


def _remove(parent: ET.Element, child: ET.Element) -> None:
    """Remove ``child``; the last child's tail (the parent's closing indentation) moves to the one before it."""
    children = list(parent)
    index = children.index(child)
    if index == len(children) - 1:
        if index > 0:
            children[index - 1].tail = child.tail
        else:
            parent.text = None
    parent.remove(child)


def _depth(root: ET.Element, element: ET.Element) -> int:
    """How deep ``element`` is below ``root`` (x:xmpmeta > rdf:RDF > rdf:Description: 2)."""

    def walk(node: ET.Element, d: int) -> int | None:
        if node is element:
            return d
        for c in node:
            found = walk(c, d + 1)
            if found is not None:
                return found
        return None

    return walk(root, 0) or 0


# ---------------------------------------------------------------- writing


def _serialize(root: ET.Element, prefixes: dict[str, str]) -> bytes:
    """The packet as UTF-8 XML, every namespace declared once on the root with the document's own prefix."""
    used: dict[str, str] = {}
    taken: set[str] = set()
    known = {uri: prefix for prefix, uri in NAMESPACES.items()}

    def prefix_of(uri: str) -> str:
        if uri not in used:
            prefix = prefixes.get(uri) or known.get(uri) or "ns"
            base, n = prefix, 1
            while prefix in taken:
                prefix, n = f"{base}{n}", n + 1
            used[uri] = prefix
            taken.add(prefix)
        return used[uri]

    def qname(name: str) -> str:
        if name.startswith("{"):
            uri, local = name[1:].split("}", 1)
            return f"{prefix_of(uri)}:{local}"
        return name

    for element in root.iter():  # prefixes in document order, so that the declarations are stable
        qname(element.tag)
        for name in element.attrib:
            qname(name)

    out: list[str] = ['<?xml version="1.0" encoding="UTF-8"?>\n']

    def write(element: ET.Element, is_root: bool) -> None:
        out.append("<" + qname(element.tag))
        if is_root:
            out.extend(f' xmlns:{prefix}="{_escape_attr(uri)}"' for uri, prefix in used.items())
        out.extend(f' {qname(k)}="{_escape_attr(v)}"' for k, v in element.attrib.items())
        if element.text is None and not len(element):
            out.append("/>")
        else:
            out.append(">" + _escape_text(element.text or ""))
            for child in element:
                write(child, False)
            out.append(f"</{qname(element.tag)}>")
        out.append(_escape_text(element.tail or ""))

    write(root, True)
    out.append("\n")
    return "".join(out).encode("utf-8")


def _escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attr(text: str) -> str:
    return (_escape_text(text).replace('"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;")
            .replace("\t", "&#9;"))


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it over; an existing sidecar keeps its mode."""
    from interest.collection import atomic_path

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
