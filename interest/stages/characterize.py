"""Characteristics of each photo, as the study analysed them: ``features/characteristics.parquet``.

Three groups of columns (docs/features.md defines each one):

* **zero-shot** (needs a CLIP text tower): ``emotion_<name>`` for the study's
  8 emotions and ``style_<name>`` for its 14 photographic styles, softmax
  scores that sum to one per set, plus ``main_emotion`` and ``main_style``.
  Prompts come from ``prompts.yaml`` (see :func:`load_prompts`).
* **perceptual** (weight-free, always): brightness, contrast, colourfulness,
  saturation, sharpness, noise, entropy, dynamic range, highlights, shadows,
  warmth and edge density, measured on the image downscaled so that its
  shorter side is at most 256 pixels.
* **aesthetic**: ``aesthetic_score`` from a linear head over CLIP embeddings
  when its weights are supplied, otherwise ``aesthetic_proxy``, a fixed
  perceptual formula (:func:`aesthetic_proxy`). The two are never mixed up.

Metadata features are not repeated here: they come from
:mod:`interest.models.metadata`.
"""

from __future__ import annotations

import logging
import os
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from interest.core.collection import (
    list_backbones,
    read_embeddings,
    read_manifest,
    read_table,
    write_table,
)
from interest.core.errors import InterestError, one_line
from interest.imaging import pixels
from interest.imaging.images import DEFAULT_MAX_PIXELS

log = logging.getLogger(__name__)

EMOTIONS = ("contentment", "excitement", "awe", "amusement", "fear", "disgust", "sadness", "anger")
STYLES = (
    "complementary_colors", "duo_tones", "hdr", "image_grain", "light_on_white", "long_exposure", "macro",
    "motion_blur", "negative_image", "rule_of_thirds", "shallow_dof", "silhouette", "soft_focus", "vanishing_point",
)
MEASURES = (
    "brightness", "contrast", "colourfulness", "saturation", "sharpness", "noise", "entropy",
    "dynamic_range", "highlights", "shadows", "warmth", "edge_density",
)
MEASURE_SIZE = 256
EDGE_THRESHOLD = 0.1  # luma gradient magnitude (per pixel, 0..1 scale) that counts as an edge


# ---------------------------------------------------------------- perceptual measures


def perceptual_measures(image: Image.Image) -> dict[str, float]:
    """The weight-free measures of one RGB image (see :data:`MEASURES` and docs/features.md)."""
    return dict(zip(MEASURES, measure_vector(image).tolist()))


def measure_vector(image: Image.Image) -> np.ndarray:
    """:func:`perceptual_measures` as a float32 array in :data:`MEASURES` order (picklable, for workers)."""
    # Downscale only: upscaling a small image would invent smoothness and lower sharpness and noise.
    if min(image.size) > MEASURE_SIZE:
        image = pixels.resize_short_side(image, MEASURE_SIZE)
    rgb = pixels.to_array(image)
    return measures_of_array(rgb)


def measures_of_array(rgb: np.ndarray) -> np.ndarray:
    """The measures of an (H, W, 3) float array in [0, 1], without resizing."""
    y = pixels.luma(rgb)
    gx, gy = pixels.gradients(y) if min(y.shape) >= 3 else (np.zeros((1, 1)), np.zeros((1, 1)))
    p01, p99 = np.percentile(y, [1, 99])
    values = {
        "brightness": float(y.mean()),
        "contrast": float(y.std()),
        "colourfulness": pixels.colourfulness(rgb),
        "saturation": float(pixels.saturation(rgb).mean()),
        "sharpness": pixels.sharpness(y),
        "noise": pixels.noise_sigma(y),
        "entropy": pixels.entropy(y),
        "dynamic_range": float(p99 - p01),
        "highlights": float((y > 0.95).mean()),
        "shadows": float((y < 0.05).mean()),
        "warmth": float((rgb[..., 0] - rgb[..., 2]).mean()),
        "edge_density": float((np.hypot(gx, gy) > EDGE_THRESHOLD).mean()),
    }
    return np.array([values[m] for m in MEASURES], dtype=np.float32)


# (measure, centre, scale, weight) of the aesthetic proxy; the centres and
# scales are typical values of photographs, fixed so that a photo's proxy
# never depends on the rest of the collection.
PROXY_TERMS = (
    ("contrast", 0.2, 0.08, 1.0),
    ("colourfulness", 40.0, 25.0, 1.0),
    ("log10_sharpness", -2.5, 0.8, 1.0),
    ("log10_noise", -1.8, 0.4, -1.0),
    ("entropy", 6.8, 0.8, 0.5),
)


def aesthetic_proxy(measures: pd.DataFrame) -> pd.Series:
    """A weight-free aesthetic proxy in (0, 1) from the perceptual measures.

    ``proxy = sigmoid((z_contrast + z_colourfulness + z_sharpness - z_noise + 0.5 z_entropy) / 2)``
    with fixed z-scores (:data:`PROXY_TERMS`; sharpness and noise on a log10
    scale). It rewards what the synthetic world's and most photographers'
    "well taken" means: contrast, colour, sharpness, tonal richness, little
    noise. It is not a learned aesthetic model.
    """
    columns = {
        "contrast": measures["contrast"],
        "colourfulness": measures["colourfulness"],
        "log10_sharpness": np.log10(measures["sharpness"] + 1e-6),
        "log10_noise": np.log10(measures["noise"] + 1e-4),
        "entropy": measures["entropy"],
    }
    total = sum(weight * (columns[name] - centre) / scale for name, centre, scale, weight in PROXY_TERMS)
    return (1.0 / (1.0 + np.exp(-np.clip(total / 2.0, -50, 50)))).rename("aesthetic_proxy")


# ---------------------------------------------------------------- zero-shot


def load_prompts(path: str | os.PathLike | None = None) -> dict[str, dict[str, list[str]]]:
    """The prompt sets: ``path`` if given, else the package's ``prompts.yaml``.

    Returns {"emotions": {name: [prompts]}, "styles": {name: [prompts]}}; the
    categories must be exactly :data:`EMOTIONS` and :data:`STYLES`.
    """
    if path is None:
        text = resources.files("interest.stages").joinpath("prompts.yaml").read_text(encoding="utf-8")
        source = "interest/stages/prompts.yaml"
    else:
        path = Path(path)
        if not path.is_file():
            raise InterestError(f"{path}: prompts file not found")
        text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InterestError(f"{source}: not valid YAML ({one_line(exc)})") from None
    out: dict[str, dict[str, list[str]]] = {}
    for key, names in (("emotions", EMOTIONS), ("styles", STYLES)):
        section = data.get(key) if isinstance(data, dict) else None
        if not isinstance(section, dict):
            raise InterestError(f"{source}: missing section '{key}' (a mapping of category to prompts)")
        if set(section) != set(names):
            odd = sorted(set(section) ^ set(names))
            raise InterestError(f"{source}: section '{key}' must have exactly the categories {', '.join(names)} "
                                f"(check: {', '.join(odd)})")
        out[key] = {}
        for name in names:
            prompts = section[name]
            prompts = [prompts] if isinstance(prompts, str) else prompts
            if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
                raise InterestError(f"{source}: '{key}.{name}' needs one or more non-empty prompt strings")
            out[key][name] = list(prompts)
    return out


def zero_shot_scores(embeddings: np.ndarray, backbone, prompts: dict[str, dict[str, list[str]]]) -> pd.DataFrame:
    """Per-set softmax scores (emotion_*, style_*) and the main category of each set.

    ``embeddings`` are L2-normalised image embeddings of ``backbone`` (a CLIP
    backbone with ``encode_text`` and ``logit_scale``).
    """
    columns: dict[str, object] = {}
    scale = float(getattr(backbone, "logit_scale", 100.0))
    for key, prefix, main in (("emotions", "emotion_", "main_emotion"), ("styles", "style_", "main_style")):
        names = list(prompts[key])
        text = np.stack([_class_vector(backbone, prompts[key][name]) for name in names])
        logits = scale * (embeddings.astype(np.float64) @ text.T.astype(np.float64))
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        for j, name in enumerate(names):
            columns[prefix + name] = probs[:, j]
        columns[main] = pd.array(np.asarray(names, dtype=object)[probs.argmax(axis=1)], dtype="string")
    return pd.DataFrame(columns)


def _class_vector(backbone, prompts: list[str]) -> np.ndarray:
    vectors = backbone.encode_text(prompts)
    mean = vectors.mean(axis=0)
    return mean / (np.linalg.norm(mean) or 1.0)


# ---------------------------------------------------------------- aesthetic head


LAION_BACKBONE = "openclip/ViT-L-14/openai"  # what the LAION aesthetic predictors were fitted on


def load_aesthetic_head(path: str | os.PathLike, backbone_id: str | None = None) -> tuple[str, np.ndarray, float]:
    """A linear aesthetic head: (backbone_id, weight vector, bias) from an ``.npz`` or a LAION ``.pth`` file.

    An ``.npz`` holds ``weight`` (dim,), ``bias`` (scalar) and ``backbone_id``
    (a string: the embedding space the head was fitted on); it is loaded with
    ``allow_pickle=False``. A ``.pth`` is one of the LAION aesthetic predictors
    (see :func:`load_laion_head`), over ``backbone_id`` (default
    ``openclip/ViT-L-14/openai``). score = embedding @ weight + bias, on
    L2-normalised embeddings.
    """
    path = Path(path)
    if not path.is_file():
        raise InterestError(f"{path}: aesthetic head file not found")
    if path.suffix.lower() in (".pth", ".pt", ".bin"):
        weight, bias = load_laion_head(path)
        return backbone_id or LAION_BACKBONE, weight, bias
    try:
        with np.load(path, allow_pickle=False) as data:
            weight = np.asarray(data["weight"], dtype=np.float64).reshape(-1)
            bias = float(np.asarray(data["bias"]).reshape(-1)[0]) if "bias" in data else 0.0
            backbone_id = str(np.asarray(data["backbone_id"]).reshape(-1)[0])
    except KeyError as exc:
        raise InterestError(f"{path}: aesthetic head lacks array {exc}; it needs weight, bias and backbone_id") from None
    except Exception as exc:  # noqa: BLE001 - numpy raises several types for a damaged file
        raise InterestError(f"{path}: not a readable .npz aesthetic head ({exc})") from None
    return backbone_id, weight, bias


def load_laion_head(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """(weight (d,), bias) of a LAION aesthetic predictor ``.pth``, read with ``torch.load(weights_only=True)``.

    Two published forms: the linear predictor (``weight`` (1, d), ``bias``
    (1,)), and the "improved" MLP (``layers.{0,2,4,6,7}.weight/bias``:
    Linear layers with Dropout between and no activation). An MLP without
    activations is one affine map, so it collapses exactly to one weight
    vector and bias. Anything else is refused in one line naming the key.
    """
    from interest.core.errors import require

    torch = require("torch", "research", "reading a LAION aesthetic head")
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors all mean "not a safe state dict"
        text = one_line(exc)
        raise InterestError(f"{path}: not a state dict readable with weights_only=True ({text[:120]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InterestError(f"{path}: not a state dict of tensors (a LAION aesthetic head .pth)")
    arrays = {str(k): v.detach().to(torch.float64).numpy() for k, v in state.items()}
    if set(arrays) == {"weight", "bias"}:
        layers = [(arrays["weight"], arrays["bias"])]
    else:
        unexpected = [k for k in arrays if not re.fullmatch(r"layers\.\d+\.(weight|bias)", k)]
        if unexpected:
            raise InterestError(f"{path}: unexpected key '{unexpected[0]}'; expected weight/bias or layers.N.weight/bias")
        names = sorted({k.rsplit(".", 1)[0] for k in arrays}, key=lambda n: int(n.split(".")[1]))
        layers = []
        for name in names:
            if f"{name}.weight" not in arrays or f"{name}.bias" not in arrays:
                raise InterestError(f"{path}: '{name}' lacks its weight or bias")
            layers.append((arrays[f"{name}.weight"], arrays[f"{name}.bias"]))
    # compose the affine maps x -> W x + b, first layer first
    W, b = np.eye(layers[0][0].shape[1]), np.zeros(layers[0][0].shape[1])
    for i, (weight, bias) in enumerate(layers):
        if weight.ndim != 2 or bias.shape != (weight.shape[0],) or weight.shape[1] != W.shape[0]:
            raise InterestError(f"{path}: layer {i} has shapes {weight.shape} and {bias.shape}, which do not chain")
        W, b = weight @ W, weight @ b + bias
    if W.shape[0] != 1:
        raise InterestError(f"{path}: the head gives {W.shape[0]} outputs, an aesthetic head gives one")
    if not (np.isfinite(W).all() and np.isfinite(b).all()):
        raise InterestError(f"{path}: weights hold NaN or infinite values")
    return W[0], float(b[0])


# ---------------------------------------------------------------- the table


def parse_clip(spec: str) -> tuple[str, str | None]:
    """``MODEL/PRETRAINED`` (or ``openclip/MODEL/PRETRAINED``, or ``hf-hub:org/name``) -> (model, pretrained)."""
    spec = spec.removeprefix("openclip/")
    if spec.startswith("hf-hub:"):
        return spec, None
    model, sep, pretrained = spec.partition("/")
    if not sep or not model or not pretrained:
        raise InterestError(f"--clip {spec}: expected MODEL/PRETRAINED, e.g. ViT-B-32/laion2b_s34b_b79k")
    return model, pretrained


def _warn(message: str) -> None:
    log.warning(message)  # reaches stderr even where logging is not configured (Python's last-resort handler)


def characterize(
    root: str | os.PathLike,
    *,
    backbone: str | None = None,
    clip: str | None = None,
    prompts: str | os.PathLike | None = None,
    aesthetic_head: str | os.PathLike | None = None,
    cache_dir: str | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> Path:
    """Write ``features/characteristics.parquet`` for collection ``root``; return its path.

    Zero-shot emotions and styles use the CLIP embeddings of ``backbone`` (an
    ``openclip/...`` id; default: the collection's only open_clip embeddings)
    or, with ``clip="MODEL/PRETRAINED"``, that CLIP model (the photos are
    embedded with it first when needed). Without a text tower they are
    skipped with a warning and a note in manifest.json. Perceptual measures
    and the aesthetic score or proxy are always computed.
    """
    from interest.imaging.backbones import load_backbone, load_openclip, resolve_device
    from interest.pipeline.local import embed_collection
    from interest.pipeline.decoder import Decoder, default_batch_size
    from interest.core.progress import progress_bar

    root = Path(root)
    photos = read_table(root, "photos", required=["photo_id", "path"])
    ids = photos["photo_id"].astype(str).to_numpy()
    table = pd.DataFrame({"photo_id": ids})
    info: dict[str, object] = {}

    # Zero-shot emotions and styles.
    prompt_sets = load_prompts(prompts)
    clip_backbone = None
    if clip is not None:
        model, pretrained = parse_clip(clip)
        clip_backbone = load_openclip(model, pretrained, device=device, cache_dir=cache_dir)
        # A cache hit for the photos already embedded with this model.
        embed_collection(root, backbone=clip_backbone, batch_size=batch_size, workers=workers,
                         max_pixels=max_pixels, progress=progress)
    else:
        present = [b for b in list_backbones(root) if b.startswith("openclip/")]
        chosen = backbone if backbone is not None else (present[0] if len(present) == 1 else None)
        if backbone is None and len(present) > 1:
            raise InterestError(f"{root}: several CLIP embeddings ({', '.join(present)}); choose one with --backbone")
        if chosen is not None and chosen.startswith("openclip/"):
            dev = resolve_device(device)
            clip_backbone = load_backbone(chosen, device=dev, cache_dir=cache_dir)
    if clip_backbone is not None:
        clip_id, clip_ids, emb = read_embeddings(root, clip_backbone.id)
        scores = zero_shot_scores(emb, clip_backbone, prompt_sets)
        scores.insert(0, "photo_id", clip_ids)
        table = table.merge(scores, on="photo_id", how="left")
        info["zero_shot"] = clip_id
        info["prompts"] = str(prompts) if prompts else "interest/stages/prompts.yaml"
    else:
        note = ("skipped: no CLIP text tower (they need pretrained CLIP weights, in the Hugging Face cache or a "
                "local checkpoint: `interest embed --pretrained PATH`, or --clip MODEL/PRETRAINED); the perceptual "
                "measures and aesthetic_proxy need no weights and are computed")
        _warn(f"emotion and style scores {note}")
        info["zero_shot"] = note

    # Perceptual measures, from the image files.
    has_path = photos["path"].notna().to_numpy()
    rows = np.flatnonzero(has_path)
    measures = np.full((len(ids), len(MEASURES)), np.nan)
    if len(rows) == 0:
        _warn("no photo has an image file (photos.path is empty); perceptual measures are NaN")
    # a path outside the collection is never read (its measures stay NaN); the decoder refuses FIFOs and devices
    roots = _image_roots(root)
    inside = {int(i): _inside_or_none(roots, photos["path"].iloc[i]) for i in rows}
    rows = np.array([i for i in rows if inside[int(i)] is not None], dtype=np.int64)
    files = [inside[int(i)] for i in rows]
    n_workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    with progress_bar(total=len(rows), unit="img", desc="characterize", enabled=progress) as bar:
        decoder = Decoder(measure_vector, batch_size=batch_size or default_batch_size("cpu"), workers=n_workers,
                          max_pixels=max_pixels)
        for batch in decoder.batches(files):
            if batch.pixels is not None:
                measures[rows[batch.index]] = batch.pixels
            bar.update(len(batch.index) + len(batch.failed))
    for j, name in enumerate(MEASURES):
        table[name] = measures[:, j]

    # Aesthetic score (a supplied head) or the perceptual proxy.
    if aesthetic_head is not None:
        head_backbone, weight, bias = load_aesthetic_head(aesthetic_head)
        _, head_ids, head_emb = read_embeddings(root, head_backbone)
        if head_emb.shape[1] != len(weight):
            raise InterestError(f"{aesthetic_head}: weight has {len(weight)} values but {head_backbone} "
                                f"embeddings have {head_emb.shape[1]}; use a head fitted on this backbone")
        scored = pd.DataFrame({"photo_id": head_ids, "aesthetic_score": head_emb.astype(np.float64) @ weight + bias})
        table = table.merge(scored, on="photo_id", how="left")
        info["aesthetic"] = f"head {Path(aesthetic_head).name} over {head_backbone}"
    else:
        table["aesthetic_proxy"] = aesthetic_proxy(table).to_numpy()
        info["aesthetic"] = "aesthetic_proxy (perceptual formula; no aesthetic head supplied)"

    return write_table(root, "characteristics", table, **info)


def _image_roots(root: Path) -> list[Path]:
    """The collection, and for a folder collection (``interest embed FOLDER``) the folder its manifest names.

    Only numbers (the perceptual measures) come out of these files, never
    pixels: the report's thumbnails and the embed reader trust no manifest.
    """
    folder = read_manifest(root).get("tables", {}).get("photos", {}).get("image_folder")
    return [root, *([Path(folder)] if isinstance(folder, str) and Path(folder).is_dir() else [])]


def _inside_or_none(roots: list[Path], relpath: str) -> Path | None:
    """``relpath`` resolved inside one of ``roots`` (the first is the collection), or None when it leads outside."""
    from interest.core.safe_files import UnsafeFile, resolve_inside

    try:
        return resolve_inside(roots, relpath)
    except UnsafeFile:
        return None
