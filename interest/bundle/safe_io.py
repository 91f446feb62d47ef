"""Reading bundle parts a stranger may have handed over: bounded, checked, and never running code.

A model bundle can come from anyone (a Hub name, an e-mail), so opening one
must be as safe as opening a JPEG: a damaged or hostile part ends in one
:class:`~interest.core.errors.InterestError` line naming the file, never in a
crash, a hang, a traceback or gigabytes of memory. Every part of every bundle
format goes through these readers:

- :func:`read_json`: size, nesting depth and number length are bounded
  *before* Python's parser sees the text (a 5000-digit integer or 100,000
  nested brackets are refused, not a RecursionError); :func:`field` then
  checks each value's type where it is used.
- :func:`read_npz`: every member's decompressed size (the zip header) and its
  ``.npy`` header (dtype, shape × itemsize) are checked against a cap and
  against each other before a byte of it is read, so a 3 MB archive claiming
  3 GB, or a header claiming 80 GB, is refused without allocating; object
  and structured dtypes (pickles) are refused. :func:`check_arrays` checks
  kinds, shapes and finiteness against what the loader expects.
- :func:`read_lgb`: the LightGBM text model is parsed and every tree checked
  here (feature and child indices in range, each node reached exactly once
  from the root, depth bounded, counts consistent, categorical bitsets in
  range), then a canonical text is written from the checked values (tree
  offsets recomputed) and only that is given to LightGBM, whose own parser
  trusts its input and crashes or loops on a bad index.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
import zlib
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from interest.core.errors import InterestError, one_line

if TYPE_CHECKING:
    import lightgbm

# JSON (model.json is a few kB; these leave room for many users' personalisation records)
MAX_JSON_BYTES = 64 * 2**20
MAX_JSON_DEPTH = 64
MAX_NUMBER_CHARS = 64  # a float's repr needs at most 24; 5000-digit integers are refused

# npz: a member may decompress to at most this ...
MAX_ARRAY_BYTES = 2 * 2**30
# ... and all members together to at most max(FLOOR, RATIO x the archive's size): np.savez stores
# uncompressed (ratio 1) and savez_compressed rarely passes 10, while a bomb inflates 1000-fold
INFLATION_FLOOR_BYTES = 256 * 2**20
INFLATION_RATIO = 100
MAX_NPZ_MEMBERS = 4096
_SAFE_KINDS = frozenset("biufcUS")

# LightGBM: the library's own cap on leaves, and bounds no trained model comes near
MAX_LEAVES = 131_072
MAX_TREES = 1_000_000
MAX_FEATURES = 1_000_000
MAX_CLASSES = 1024
MAX_TREE_DEPTH = 1024  # SHAP's path buffer grows with depth squared
MAX_LGB_BYTES = 2**30  # 1000 rounds of 255 leaves is about 50 MB of text
_LGB_OBJECTIVES = frozenset({
    "regression", "regression_l1", "huber", "fair", "poisson", "quantile", "mape", "gamma", "tweedie",
    "binary", "multiclass", "multiclassova", "cross_entropy", "cross_entropy_lambda", "lambdarank",
    "rank_xendcg",
})
_FLOAT_TOKEN = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,3})?\Z")
_INT_TOKEN = re.compile(r"[+-]?\d{1,10}\Z")
# whole lines at once, in C: the tokens are unambiguous, so a failing line costs linear time
_INT_LINE = re.compile(r"[+-]?\d{1,10}(?: [+-]?\d{1,10})*")
_FLOAT_ONE = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?"
_FLOAT_LINE = re.compile(rf"{_FLOAT_ONE}(?: {_FLOAT_ONE})*")
_FLOAT_OR_INF_LINE = re.compile(rf"(?:{_FLOAT_ONE}|-?inf)(?: (?:{_FLOAT_ONE}|-?inf))*")
_FEATURE_NAME = re.compile(r"[^\s]{1,256}\Z")
_NUM = r"(?:[+-]?inf|[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,3})?)"
_FEATURE_INFO = re.compile(rf"(?:none|\[{_NUM}:{_NUM}\]|-?\d{{1,10}}(?::-?\d{{1,10}})*)\Z")
_HEADER_KEYS = ("version", "num_class", "num_tree_per_iteration", "label_index", "max_feature_idx", "objective",
                "feature_names", "feature_infos", "tree_sizes", "monotone_constraints")
_TREE_KEYS = ("num_leaves", "num_cat", "split_feature", "split_gain", "threshold", "decision_type", "left_child",
              "right_child", "leaf_value", "leaf_weight", "leaf_count", "internal_value", "internal_weight",
              "internal_count", "cat_boundaries", "cat_threshold", "is_linear", "shrinkage")

_MISSING = object()


def _bounded_text(data: bytes, where: str, limit: int, encoding: str, kind: str, format_name: str, fix: str) -> str:
    """``data`` decoded, refused in one line when over ``limit`` bytes or not ``encoding``."""
    if len(data) > limit:
        raise InterestError(f"{where}: {len(data)} bytes, over the limit of {limit} for {kind}; {fix}")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise InterestError(f"{where}: not {format_name} (not {encoding.upper()} at byte {exc.start}); {fix}") from None


# ------------------------------------------------------------------ JSON


def read_json(data: bytes, where: str, *, fix: str = "restore the bundle or retrain") -> Any:
    """Parse JSON ``data`` (the bytes of file ``where``) with bounded size, depth and number length."""
    text = _bounded_text(data, where, MAX_JSON_BYTES, "utf-8", "a JSON file", "valid JSON", fix)
    depth = deepest = 0
    # brackets inside strings do not nest; the regex skips whole strings in C, so this pass is fast
    for match in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text):
        c = match.group()
        if c in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    raise InterestError(f"{where}: JSON nested over {MAX_JSON_DEPTH} levels deep; {fix}")
        elif c in "]}":
            depth -= 1

    def number(kind):
        def parse(token: str):
            if len(token) > MAX_NUMBER_CHARS:
                raise _TooLong(token)
            return kind(token)
        return parse

    try:
        return json.loads(text, parse_int=number(int), parse_float=number(float))
    except _TooLong as exc:
        raise InterestError(
            f"{where}: a JSON number of {len(exc.args[0])} characters (over {MAX_NUMBER_CHARS}); {fix}"
        ) from None
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise InterestError(f"{where}: not valid JSON ({short_text(one_line(exc), 200)}); {fix}") from None


class _TooLong(Exception):
    pass


_KINDS: dict[str, tuple[type, ...]] = {
    "int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict": (dict,), "list": (list,),
}


def field(
    obj: Mapping,
    key: str,
    kind: str,
    where: str,
    *,
    default: Any = _MISSING,
    optional: bool = False,
    lo: float | None = None,
    hi: float | None = None,
    items: str | None = None,
    fix: str = "restore the bundle or retrain",
) -> Any:
    """``obj[key]`` (``key`` may be dotted: ``"training.num_threads"``) checked to be of ``kind``.

    ``kind``: int, float (an int is fine), str, bool, dict or list (``items``:
    the kind of every element). ``default`` when the key is absent,
    ``optional`` allows null, ``lo``/``hi`` bound numbers (and list lengths).
    Any mismatch is a one-line InterestError naming the file and the key.
    """
    value: Any = obj
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            if default is not _MISSING:
                return default
            raise InterestError(f"{where}: '{key}' is missing; {fix}")
        value = value[part]
    if value is None and optional:
        return None
    _check_kind(value, kind, where, key, fix)
    if kind in ("int", "float"):
        if kind == "float" and not math.isfinite(value):
            raise InterestError(f"{where}: '{key}' is {value}, not a finite number; {fix}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise InterestError(f"{where}: '{key}' is {value}, outside [{lo}, {hi}]; {fix}")
    if kind == "list":
        if (lo is not None and len(value) < lo) or (hi is not None and len(value) > hi):
            raise InterestError(f"{where}: '{key}' has {len(value)} entries, not between {lo} and {hi}; {fix}")
        if items is not None:
            for i, item in enumerate(value):
                _check_kind(item, items, where, f"{key}[{i}]", fix)
    return value


def _check_kind(value: Any, kind: str, where: str, key: str, fix: str) -> None:
    # bool is an int in Python; a flag where a number belongs is still a mistake
    if not isinstance(value, _KINDS[kind]) or (kind in ("int", "float") and isinstance(value, bool)):
        shown = repr(value) if isinstance(value, (str, int, float, bool)) and len(repr(value)) <= 40 else type(value).__name__
        raise InterestError(f"{where}: '{key}' must be {'a' if kind != 'int' else 'an'} {kind}, not {shown}; {fix}")


# ------------------------------------------------------------------ npz


def read_npz(data: bytes, where: str, *, fix: str = "restore it or retrain") -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` bytes ``data`` (file ``where``), checked before each is read.

    Refused: a damaged archive, encrypted or oddly compressed members, a
    member whose name is not ``<key>.npy`` or repeats, object/structured
    dtypes, and any member whose zip header or ``.npy`` header claims more
    than the caps (or whose two headers disagree), all before allocating.
    """
    budget = min(MAX_ARRAY_BYTES * 4, max(INFLATION_FLOOR_BYTES, INFLATION_RATIO * len(data)))
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise InterestError(f"{where}: not a readable npz ({short_text(one_line(exc), 200)}); {fix}") from None
    if len(infos) > MAX_NPZ_MEMBERS:
        raise InterestError(f"{where}: {len(infos)} arrays, over the limit of {MAX_NPZ_MEMBERS}; {fix}")
    claimed = sum(info.file_size for info in infos)
    if claimed > budget:
        raise InterestError(
            f"{where}: its arrays would decompress to {claimed} bytes from a {len(data)}-byte file "
            f"(over the limit of {budget}); {fix}"
        )
    arrays: dict[str, np.ndarray] = {}
    for info in infos:
        key = info.filename[:-4] if info.filename.endswith(".npy") else None
        if not key or key in arrays:
            raise InterestError(f"{where}: member '{short_text(info.filename)}' is not a (unique) <name>.npy array; {fix}")
        if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise InterestError(f"{where}: array '{short_text(key)}' is encrypted or compressed in an unsupported way; {fix}")
        if info.file_size > MAX_ARRAY_BYTES:
            raise InterestError(f"{where}: array '{short_text(key)}' claims {info.file_size} bytes, over the limit of {MAX_ARRAY_BYTES}; {fix}")
        try:
            arrays[key] = _read_npy_member(archive, info, where, key, fix)
        except InterestError:
            raise
        except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, NotImplementedError, TypeError) as exc:
            raise InterestError(f"{where}: array '{short_text(key)}' is damaged ({short_text(one_line(exc), 200)}); {fix}") from None
    return arrays


def _read_npy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, key: str, fix: str) -> np.ndarray:
    fmt = np.lib.format
    with archive.open(info) as f:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise InterestError(f"{where}: array '{short_text(key)}' has an unknown .npy version {version}; {fix}")
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in _SAFE_KINDS:
            raise InterestError(f"{where}: array '{short_text(key)}' has dtype {dtype}, not plain numbers or text (no pickles); {fix}")
        count = 1
        for n in shape:
            if not isinstance(n, int) or n < 0:
                raise InterestError(f"{where}: array '{short_text(key)}' has an invalid shape {shape}; {fix}")
            count *= n
        nbytes = count * dtype.itemsize
        body = info.file_size - f.tell()
        if nbytes != body:
            raise InterestError(
                f"{where}: array '{short_text(key)}' header claims {nbytes} bytes but the member holds {body}; {fix}"
            )
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise InterestError(f"{where}: array '{short_text(key)}' is truncated; {fix}")
        f.read(1)  # reaching the end makes zipfile check the member's CRC
    # a bytearray makes the array writable without a second copy
    array = np.frombuffer(bytearray(raw), dtype=dtype, count=count)
    return array.reshape(shape, order="F" if fortran else "C")


def check_arrays(
    arrays: Mapping[str, np.ndarray],
    spec: Mapping[str, tuple[str, int | None]],
    where: str,
    *,
    text: tuple[str, ...] = ("users",),
    fix: str = "restore it or retrain",
) -> None:
    """Check ``arrays`` against ``spec``: key -> (dtype kinds, ndim), e.g. ``{"coef": ("f", 1), "kappa": ("fi", 0)}``.

    A key in ``spec`` must be present (unless its kinds start with ``?``); ndim
    0 is a scalar; ``None`` any ndim. Float arrays must be finite everywhere.
    Arrays not in ``spec`` must hold numbers, text only under a name in ``text``
    (a string where a loader expects numbers would fail deep inside it).
    """
    for key, a in arrays.items():
        if key not in spec and a.dtype.kind in "US" and key not in text:
            raise InterestError(f"{where}: array '{short_text(key)}' holds text ({a.dtype}), expected numbers; {fix}")
    for key, (kinds, ndim) in spec.items():
        optional = kinds.startswith("?")
        kinds = kinds.lstrip("?")
        if key not in arrays:
            if optional:
                continue
            raise InterestError(f"{where}: array '{key}' is missing; {fix}")
        a = arrays[key]
        if a.dtype.kind not in kinds:
            raise InterestError(f"{where}: array '{key}' has dtype {a.dtype}, expected kind {'/'.join(kinds)}; {fix}")
        if ndim is not None and a.ndim != ndim:
            what = "a scalar" if ndim == 0 else f"{ndim}-d"
            raise InterestError(f"{where}: array '{key}' has shape {a.shape}, expected {what}; {fix}")
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            raise InterestError(f"{where}: array '{key}' has NaN or infinite values; {fix}")


# ------------------------------------------------------------------ LightGBM


def read_lgb(data: bytes, where: str, *, fix: str = "restore it or retrain") -> "lightgbm.Booster":
    """A LightGBM booster from the text-model bytes ``data``, every tree checked before LightGBM parses it."""
    import lightgbm as lgb

    text = _bounded_text(data, where, MAX_LGB_BYTES, "ascii", "a LightGBM model", "a LightGBM text model", fix)
    canonical, n_trees, n_features = _canonical_lgb(text, where, fix)
    try:
        booster = lgb.Booster(model_str=canonical)
    except lgb.basic.LightGBMError as exc:
        raise InterestError(f"{where}: not a LightGBM text model ({short_text(one_line(exc), 200)}); {fix}") from None
    if booster.num_trees() != n_trees or booster.num_feature() != n_features:
        raise InterestError(f"{where}: LightGBM read a different model than the one checked; {fix}")
    return booster


def _canonical_lgb(text: str, where: str, fix: str) -> tuple[str, int, int]:
    def bad(msg: str) -> InterestError:
        return InterestError(f"{where}: {msg}; {fix}")

    lines = text.split("\n")
    if not lines or lines[0].strip() != "tree":
        raise bad("not a LightGBM text model (it must start with 'tree')")
    header: dict[str, str] = {}
    flags: set[str] = set()
    i = 1
    while i < len(lines) and not lines[i].startswith("Tree=") and lines[i].strip() != "end of trees":
        line = lines[i].strip()
        i += 1
        if not line:
            continue
        if "=" not in line:
            if line != "average_output":
                raise bad(f"unknown header line '{short_text(line)}'")
            flags.add(line)
            continue
        key, value = line.split("=", 1)
        if key not in _HEADER_KEYS or key in header:
            raise bad(f"unknown or repeated header key '{short_text(key)}'")
        header[key] = value
    for key in ("version", "num_class", "num_tree_per_iteration", "max_feature_idx", "objective", "feature_names",
                "feature_infos"):
        if key not in header:
            raise bad(f"header key '{key}' is missing")
    if header["version"] not in ("v3", "v4"):
        raise bad(f"LightGBM model version '{short_text(header['version'])}' is not v3 or v4")
    num_class = _int(header["num_class"], "num_class", 1, MAX_CLASSES, bad)
    per_iteration = _int(header["num_tree_per_iteration"], "num_tree_per_iteration", 1, MAX_CLASSES, bad)
    label_index = _int(header.get("label_index", "0"), "label_index", 0, MAX_FEATURES, bad)
    n_features = _int(header["max_feature_idx"], "max_feature_idx", 0, MAX_FEATURES - 1, bad) + 1
    if per_iteration != num_class:
        raise bad(f"num_tree_per_iteration {per_iteration} differs from num_class {num_class}")
    objective = _objective(header["objective"], num_class, bad)
    names = header["feature_names"].split(" ")
    infos = header["feature_infos"].split(" ")
    if len(names) != n_features or not all(_FEATURE_NAME.match(n) for n in names):
        raise bad(f"feature_names must be {n_features} names without spaces")
    if len(infos) != n_features or not all(_FEATURE_INFO.match(x) for x in infos):
        raise bad(f"feature_infos must be {n_features} entries (none, [min:max] or categories)")

    trees: list[str] = []
    while i < len(lines) and lines[i].startswith("Tree="):
        if len(trees) >= MAX_TREES:
            raise bad(f"over {MAX_TREES} trees")
        if lines[i] != f"Tree={len(trees)}":
            raise bad(f"tree {len(trees)} is labelled '{short_text(lines[i])}'")
        i += 1
        fields: dict[str, str] = {}
        while i < len(lines) and lines[i].strip():
            line = lines[i]
            i += 1
            key, sep, value = line.partition("=")
            if not sep or key not in _TREE_KEYS or key in fields:
                raise bad(f"tree {len(trees)}: unknown or repeated line '{short_text(line)}'")
            fields[key] = value
        trees.append(_canonical_tree(fields, len(trees), n_features, bad))
        while i < len(lines) and not lines[i].strip():
            i += 1
    if i >= len(lines) or lines[i].strip() != "end of trees":
        raise bad("no 'end of trees' line after the trees (truncated or damaged)")
    if len(trees) % per_iteration:
        raise bad(f"{len(trees)} trees is not a multiple of num_tree_per_iteration {per_iteration}")

    out = ["tree", "version=v4", f"num_class={num_class}", f"num_tree_per_iteration={per_iteration}",
           f"label_index={label_index}", f"max_feature_idx={n_features - 1}", f"objective={objective}"]
    out += sorted(flags)
    out += [f"feature_names={' '.join(names)}", f"feature_infos={' '.join(infos)}",
            f"tree_sizes={' '.join(str(len(t)) for t in trees)}", ""]
    params = [f"[objective: {objective.split(' ')[0]}]", f"[num_class: {num_class}]"]
    if flags:
        params.append("[boosting: rf]")  # average_output: a random forest
    body = "\n".join(out) + "\n" + "".join(trees) + "end of trees\n\nparameters:\n" + "\n".join(params)
    return body + "\nend of parameters\n\npandas_categorical:null\n", len(trees), n_features


def _objective(value: str, num_class: int, bad) -> str:
    tokens = value.split(" ")
    if tokens[0] not in _LGB_OBJECTIVES:
        raise bad(f"objective '{short_text(tokens[0])}' is not a LightGBM objective")
    for token in tokens[1:]:
        key, sep, arg = token.partition(":")
        if token == "sqrt":
            continue
        if not sep or not re.fullmatch(r"[a-z_]{1,40}", key) or not _FLOAT_TOKEN.match(arg) or not math.isfinite(float(arg)):
            raise bad(f"objective argument '{short_text(token)}' is not name:number")
        if key == "num_class" and arg != str(num_class):
            raise bad(f"objective's num_class {short_text(arg)} differs from the header's {num_class}")
    if tokens[0].startswith("multiclass") != (num_class > 1):
        raise bad(f"objective {tokens[0]} does not fit num_class {num_class}")
    return value


def _canonical_tree(fields: dict[str, str], t: int, n_features: int, bad) -> str:
    where = f"tree {t}"
    if "num_leaves" not in fields or "leaf_value" not in fields:
        raise bad(f"{where}: num_leaves or leaf_value is missing")
    leaves = _int(fields["num_leaves"], f"{where} num_leaves", 1, MAX_LEAVES, bad)
    n_cat = _int(fields.get("num_cat", "0"), f"{where} num_cat", 0, MAX_LEAVES, bad)
    if _int(fields.get("is_linear", "0"), f"{where} is_linear", 0, 1, bad):
        raise bad(f"{where}: linear trees are not supported")
    shrinkage = _float_tokens(fields.get("shrinkage", "1"), 1, f"{where} shrinkage", bad)[0]
    nodes = leaves - 1

    def ints(key: str, n: int, lo: int, hi: int, allow_empty: bool = False) -> list[int]:
        value = fields.get(key, "")
        if allow_empty and value == "":
            return []
        tokens = value.split(" ") if value else []
        if len(tokens) != n:
            raise bad(f"{where}: {key} has {len(tokens)} values, expected {n}")
        if tokens and _INT_LINE.fullmatch(value):
            values = list(map(int, tokens))
            if lo <= min(values) and max(values) <= hi:
                return values
        return [_int(tok, f"{where} {key}", lo, hi, bad) for tok in tokens]  # names the first bad one

    def floats(key: str, n: int, allow_empty: bool = False, allow_inf: bool = False) -> list[str]:
        value = fields.get(key, "")
        if allow_empty and value == "":
            return []
        return _float_tokens(value, n, f"{where} {key}", bad, allow_inf)

    leaf_value = floats("leaf_value", leaves)
    # a single-leaf tree has no weights or internal nodes; LightGBM writes those lines empty
    leaf_weight = floats("leaf_weight", leaves, allow_empty=leaves == 1)
    leaf_count = ints("leaf_count", leaves, 0, 2**31 - 1, allow_empty=leaves == 1)
    split_feature = ints("split_feature", nodes, 0, n_features - 1)
    split_gain = floats("split_gain", nodes)
    threshold = floats("threshold", nodes, allow_inf=True)  # LightGBM writes a split above every seen value as inf
    decision_type = ints("decision_type", nodes, 0, 15)
    left = ints("left_child", nodes, -leaves, nodes - 1)
    right = ints("right_child", nodes, -leaves, nodes - 1)
    internal_value = floats("internal_value", nodes)
    internal_weight = floats("internal_weight", nodes)
    internal_count = ints("internal_count", nodes, 0, 2**31 - 1)
    cat_boundaries = ints("cat_boundaries", n_cat + 1, 0, 2**31 - 1) if n_cat else []
    cat_threshold: list[int] = []
    if n_cat:
        if cat_boundaries[0] != 0 or any(b < a for a, b in zip(cat_boundaries, cat_boundaries[1:])):
            raise bad(f"{where}: cat_boundaries must start at 0 and never decrease")
        cat_threshold = ints("cat_threshold", cat_boundaries[-1], 0, 2**32 - 1)
    elif "cat_boundaries" in fields or "cat_threshold" in fields:
        raise bad(f"{where}: categorical bitsets given but num_cat is 0")

    for n in range(nodes):
        kind = decision_type[n]
        if (kind >> 2) & 3 == 3:
            raise bad(f"{where}: node {n} has an unknown missing-value type")
        if kind & 1:  # categorical: the threshold indexes the node's bitset
            value = float(threshold[n])
            if not value.is_integer() or not 0 <= value < n_cat:
                raise bad(f"{where}: categorical node {n} points at bitset {threshold[n]}, not one of {n_cat}")

    # every internal node and every leaf must be reached exactly once from the root: a tree, no cycles
    if nodes:
        seen_node = bytearray(nodes)
        seen_leaf = bytearray(leaves)
        count = [0] * nodes
        order: list[int] = []
        seen_node[0] = 1
        stack = [(0, 1)]
        while stack:
            n, depth = stack.pop()
            if depth > MAX_TREE_DEPTH:
                raise bad(f"{where}: deeper than {MAX_TREE_DEPTH} levels")
            order.append(n)
            for child in (left[n], right[n]):
                if child >= 0:
                    if seen_node[child]:
                        raise bad(f"{where}: node {child} is reached twice (a cycle or a shared child)")
                    seen_node[child] = 1
                    stack.append((child, depth + 1))
                else:
                    leaf = ~child
                    if seen_leaf[leaf]:
                        raise bad(f"{where}: leaf {leaf} is reached twice")
                    seen_leaf[leaf] = 1
        if len(order) != nodes or not all(seen_leaf):
            raise bad(f"{where}: some nodes or leaves are not reachable from the root")
        for n in reversed(order):  # children before parents
            count[n] = sum(leaf_count[~c] if c < 0 else count[c] for c in (left[n], right[n]))
            if count[n] != internal_count[n]:
                raise bad(f"{where}: node {n} counts {internal_count[n]} rows but its children {count[n]}")

    def line(key: str, values: list) -> str:
        return f"{key}={' '.join(map(str, values))}\n"

    text = (
        f"Tree={t}\n" + f"num_leaves={leaves}\n" + f"num_cat={n_cat}\n" + line("split_feature", split_feature)
        + line("split_gain", split_gain) + line("threshold", threshold) + line("decision_type", decision_type)
        + line("left_child", left) + line("right_child", right) + line("leaf_value", leaf_value)
        + line("leaf_weight", leaf_weight) + line("leaf_count", leaf_count) + line("internal_value", internal_value)
        + line("internal_weight", internal_weight) + line("internal_count", internal_count)
    )
    if n_cat:
        text += line("cat_boundaries", cat_boundaries) + line("cat_threshold", cat_threshold)
    return text + "is_linear=0\n" + f"shrinkage={shrinkage}\n\n\n"


def _int(token: str, what: str, lo: int, hi: int, bad) -> int:
    if not _INT_TOKEN.match(token):
        raise bad(f"{what}: '{short_text(token)}' is not an integer")
    value = int(token)
    if not lo <= value <= hi:
        raise bad(f"{what}: {value} is outside [{lo}, {hi}]")
    return value


def _float_tokens(value: str, n: int, what: str, bad, allow_inf: bool = False) -> list[str]:
    """The ``n`` space-separated numbers of ``value``, kept as the exact text LightGBM wrote (so it parses the same)."""
    tokens = value.split(" ") if value else []
    if len(tokens) != n:
        raise bad(f"{what} has {len(tokens)} values, expected {n}")
    line = _FLOAT_OR_INF_LINE if allow_inf else _FLOAT_LINE
    # only a 3-digit exponent can overflow to inf
    if not tokens or (line.fullmatch(value) and not re.search(r"[eE][+-]?\d{3}", value)):
        return tokens
    for tok in tokens:
        if allow_inf and tok in ("inf", "-inf"):
            continue
        if not _FLOAT_TOKEN.match(tok) or not math.isfinite(float(tok)):
            raise bad(f"{what}: '{short_text(tok)}' is not a finite number")
    return tokens


# ------------------------------------------------------------------ helpers


def short_text(text: str, limit: int = 40) -> str:
    """A hostile name or value cut short and made printable, for one-line messages."""
    text = text.encode("ascii", "backslashreplace").decode("ascii").replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= limit else text[:limit] + "..."
