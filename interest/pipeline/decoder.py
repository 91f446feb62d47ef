"""The decode stage: image files to the model's input arrays, in worker processes, with NumPy only.

A file is opened by :func:`~interest.imaging.images.load_image` (every guard
against broken and hostile files is there) and turned into the model's input
by a *transform* chosen from the backbone's recorded ``preprocessing``: the
open_clip resize / centre-crop / normalise in NumPy (:class:`ClipTransform`,
bit-identical to open_clip's torchvision transform on a PIL image), or the
weight-free perceptual statistics. Nothing here imports torch, so decoding
runs the same in the torch path, the ONNX path (``interest.onnx``) and a Ray
decode task.

A bad file becomes a :class:`Failure` (its reason and detail), never an
exception, so it cannot stop a run or shift its neighbours.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from interest.core.errors import InterestError
from interest.imaging.images import DEFAULT_MAX_PIXELS, BadImage, load_image

if TYPE_CHECKING:
    from interest.imaging.backbones import Backbone

_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST, "lanczos": Image.LANCZOS}
Transform = Callable[[Image.Image], np.ndarray]


# ---------------------------------------------------------------- transforms


def preprocess(image: Image.Image, spec: dict) -> np.ndarray:
    """One image as the open_clip backbone sees it: (3, size, size) float32.

    Resize the shorter side to ``size`` (Pillow, ``interpolation``), centre
    crop, scale to [0, 1], normalise by ``mean``/``std``: the same steps and
    rounding as torchvision's Resize/CenterCrop/ToTensor/Normalize on a PIL image.
    """
    size = spec["size"] if isinstance(spec["size"], int) else int(spec["size"][0])
    image = image.convert("RGB")
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), _RESAMPLE[spec.get("interpolation", "bicubic")])
    if new_w < size or new_h < size:  # torchvision pads a too-small image with zeros before cropping
        padded = Image.new("RGB", (max(new_w, size), max(new_h, size)))
        padded.paste(image, ((padded.width - new_w) // 2, (padded.height - new_h) // 2))
        image, new_w, new_h = padded, padded.width, padded.height
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    x = np.asarray(image, dtype=np.float32) / 255.0
    x = (x - np.asarray(spec["mean"], np.float32)) / np.asarray(spec["std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


class ClipTransform:
    """open_clip's image transform (:func:`preprocess`) for one recorded ``preprocessing``; picklable."""

    def __init__(self, spec: dict) -> None:
        self.spec = dict(spec)

    def __call__(self, image: Image.Image) -> np.ndarray:
        return preprocess(image, self.spec)


def _clip_spec_supported(spec: dict) -> bool:
    """Whether :func:`preprocess` reproduces this open_clip preprocessing (the shorter-side resize of the
    standard models); other resize modes fall back to the backbone's own transform."""
    return spec.get("resize_mode", "shortest") == "shortest" and spec.get("mode", "RGB") == "RGB" \
        and spec.get("interpolation", "bicubic") in _RESAMPLE and {"size", "mean", "std"} <= set(spec)


def transform_for(preprocessing: dict, fallback: Transform | None = None) -> Transform:
    """The NumPy transform of a backbone's recorded ``preprocessing``; ``fallback`` (a backbone's own
    ``transform``) where there is none; InterestError when neither is there."""
    kind = (preprocessing or {}).get("kind")
    if kind == "openclip" and _clip_spec_supported(preprocessing):
        return ClipTransform(preprocessing)
    if kind == "perceptual":
        from interest.imaging.perceptual import PERCEPTUAL_PREPROCESSING, perceptual_vector

        if preprocessing != PERCEPTUAL_PREPROCESSING:
            raise InterestError(
                f"perceptual backbone preprocessing {preprocessing} differs from this version's "
                f"{PERCEPTUAL_PREPROCESSING}; embed (or export) again with this version of interest"
            )
        return perceptual_vector
    if fallback is not None:
        return fallback
    raise InterestError(f"preprocessing {preprocessing}: no image transform for it; embed with a known backbone")


def backbone_transform(backbone: Backbone) -> Transform:
    """The decode transform of a :class:`~interest.imaging.backbones.Backbone`: NumPy where its preprocessing is known."""
    return transform_for(getattr(backbone, "preprocessing", None) or {}, backbone.transform)


# ---------------------------------------------------------------- decoding


@dataclass(frozen=True)
class Failure:
    """An image that could not be used: its position in the input, a reason (see ``images.REASONS``) and detail."""

    index: int
    reason: str
    detail: str = ""


@dataclass
class DecodedBatch:
    """Model inputs of the readable images of one batch: positions (n,), stacked arrays (n, ...) or None, failures."""

    index: np.ndarray
    pixels: np.ndarray | None
    failed: list[Failure] = field(default_factory=list)


def decode_files(paths: Sequence, start: int, transform: Transform, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedBatch:
    """Load and transform ``paths`` (positions ``start``, ``start + 1``, ...) in this process."""
    index, arrays, failed = [], [], []
    for k, path in enumerate(paths):
        try:
            image = load_image(path, max_pixels=max_pixels)
            arrays.append(np.asarray(transform(image), dtype=np.float32))
            index.append(start + k)
        except BadImage as exc:
            failed.append(Failure(start + k, exc.reason, exc.detail))
        except Exception as exc:  # noqa: BLE001 - a decoder crash on one file must not end the run
            failed.append(Failure(start + k, "unreadable", type(exc).__name__))
    return DecodedBatch(np.asarray(index, dtype=np.int64), np.stack(arrays) if arrays else None, failed)


def prepare_images(images: Sequence[Image.Image], transform: Transform) -> np.ndarray:
    """In-memory RGB images (already decoded, e.g. uploads) as one stacked batch of model inputs."""
    return np.stack([np.asarray(transform(image.convert("RGB")), dtype=np.float32) for image in images])


_WORKER: dict = {}


def _start_worker(transform: Transform, max_pixels: int) -> None:
    # Ctrl-C reaches the whole process group: the parent alone handles it (it ends the pool),
    # so no worker prints a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER["transform"], _WORKER["max_pixels"] = transform, max_pixels


def _decode_in_worker(paths: list[str], start: int) -> DecodedBatch:
    return decode_files(paths, start, _WORKER["transform"], _WORKER["max_pixels"])


class Decoder:
    """Decodes image files batch by batch, in order, in ``workers`` processes (0: in this process).

    At most ``prefetch`` batches per worker are decoded ahead of the consumer,
    so a slow model never makes decoded batches pile up in memory.
    """

    def __init__(self, transform: Transform, *, batch_size: int = 64, workers: int = 0,
                 max_pixels: int = DEFAULT_MAX_PIXELS, prefetch: int = 4) -> None:
        self.transform = transform
        self.batch_size = max(1, int(batch_size))
        self.workers = max(0, int(workers))
        self.max_pixels = max_pixels
        self.prefetch = max(1, int(prefetch))

    def batches(self, paths: Sequence) -> Iterator[DecodedBatch]:
        """Yield one :class:`DecodedBatch` per ``batch_size`` paths, in the order of ``paths``."""
        paths = [str(p) for p in paths]
        starts = range(0, len(paths), self.batch_size)
        if self.workers == 0 or len(starts) <= 1:
            for start in starts:
                yield decode_files(paths[start : start + self.batch_size], start, self.transform, self.max_pixels)
            return
        pool = multiprocessing.get_context().Pool(
            min(self.workers, len(starts)), initializer=_start_worker, initargs=(self.transform, self.max_pixels)
        )
        try:
            pending: deque = deque()
            todo = iter(starts)
            for start in todo:
                pending.append(pool.apply_async(_decode_in_worker, (paths[start : start + self.batch_size], start)))
                if len(pending) >= self.workers * self.prefetch:
                    break
            while pending:
                batch = pending.popleft().get()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(pool.apply_async(_decode_in_worker, (paths[nxt : nxt + self.batch_size], nxt)))
                yield batch
            pool.close()  # every batch is done: the workers exit on their own (faster than terminating them)
        except BaseException:
            pool.terminate()  # an interrupt or an abandoned generator: no worker outlives the run
            raise
        finally:
            pool.join()


def default_workers(device: str, backbone: Backbone) -> int:
    """Decoding processes to run beside the model.

    On a CPU the model and the decoders share the cores: decoding and
    preprocessing a 640x480 JPEG costs about a tenth of a ViT-B-32 forward
    pass, so a few workers keep the model fed; two beat one even on two cores
    (measured: 0.90 against 0.86 of the encode-only ceiling), and one per
    eight cores beyond that. A GPU waits on decoding, so it gets all cores
    but one. The perceptual backbone does all its work in the decoder, so it
    gets every core.
    """
    cores = os.cpu_count() or 1
    if not getattr(backbone, "has_text", False):  # perceptual: the transform is the model
        return cores
    if device.startswith("cpu"):
        return max(2, cores // 8) if cores >= 2 else 1
    return max(1, min(cores - 1, 16))


def default_batch_size(device: str) -> int:
    """64 on a CPU (the best throughput of ViT-B-32 on two cores), 256 on an accelerator."""
    return 64 if device.startswith("cpu") else 256
