"""Image backbones: a function from images to L2-normalised vectors, named by a backbone id.

Two kinds:

``perceptual/v1``
    Weight-free and offline: colour, tone, sharpness, noise, texture
    orientation and spatial-frequency statistics
    (:mod:`interest.imaging.perceptual`).

``openclip/<model>/<pretrained>``
    An open_clip model: a pretrained tag (``laion2b_s34b_b79k``), the name of a
    local checkpoint file, ``none`` (the architecture with random weights,
    drawn with seed 0: the same in every process, meaningless as a score), or
    ``openclip/hf-hub:<org>/<name>`` for a Hugging Face hub model.

A backbone splits into :meth:`Backbone.transform` (one image to an array:
picklable, so the embedding pipeline runs it in worker processes) and
:meth:`Backbone.encode` (a stacked batch to vectors, in the main process);
:meth:`Backbone.embed` composes the two.

An open_clip backbone's image encoder is torch eager (the reference) or, on
a CPU by default, onnxruntime running the checked export of the same tower
(``encoder=``; :mod:`interest.imaging.onnx_encoder`): the same embedding
space, so both share an id and the embedding cache. ``precision="int8"`` is
onnxruntime's dynamic quantisation: not exact, so its id ends in ``@int8``
and its embeddings are kept apart from the fp32 ones.
Where and how a backbone runs (device, precision, weights cache, checkpoint
file, encoder) is one :class:`BackboneOptions`; local checkpoint files are
found and hashed by :mod:`interest.imaging.checkpoints`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from interest.core.errors import InterestError, one_line, require
from interest.imaging.checkpoints import CHECKPOINT_SUFFIXES, check_checkpoint_name, file_sha256, find_checkpoint
from interest.imaging.perceptual import PERCEPTUAL_DIM, PERCEPTUAL_PREPROCESSING, perceptual_vector
from interest.core.numeric import l2_normalize

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
#: auto: the fastest exact encoder on the device (onnxruntime on a CPU when installed, else torch eager)
ENCODERS = ("auto", "torch", "onnx")
INT8_SUFFIX = "@int8"


@dataclass(frozen=True)
class BackboneOptions:
    """Where and how an image backbone runs: the options :func:`interest.load`,
    ``InterestModel.configure_backbone`` and :func:`load_backbone` take, in one place.

    ``device`` (cpu, cuda[:N], mps or auto), ``precision`` (one of
    :data:`PRECISIONS`), ``cache_dir`` (where the weights are cached or a local
    checkpoint lies), ``weights`` (a checkpoint file used instead of any
    lookup or download) and ``encoder`` (one of :data:`ENCODERS`: what runs
    the image tower). Paths are kept as text, ``weights`` with ``~`` expanded.
    """

    device: str = "cpu"
    precision: str = "fp32"
    cache_dir: str | None = None
    weights: str | None = None
    encoder: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", str(self.device))
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", str(self.cache_dir))
        if self.weights is not None:
            object.__setattr__(self, "weights", str(Path(self.weights).expanduser()))

    def check(self) -> "BackboneOptions":
        """Self, once the encoder, precision and device go together and ``weights`` is a file (else one line)."""
        check_encoder(self.encoder, self.precision, self.device)
        return self.check_weights()

    def check_weights(self) -> "BackboneOptions":
        """Self, once ``weights`` (if given) is a file (else one line)."""
        if self.weights is not None and not Path(self.weights).is_file():
            raise InterestError(f"weights {self.weights}: checkpoint file not found; give the backbone checkpoint's path")
        return self

    def as_dict(self) -> dict[str, Any]:
        """The options as keyword arguments of :func:`load_backbone`."""
        return dataclasses.asdict(self)


class Backbone:
    """A named embedding space: ``embed(images)`` gives (n, dim) float32 L2-normalised rows.

    ``id`` names the space (a folder under ``features/``), ``dim`` its size and
    ``preprocessing`` the exact image preparation, recorded with every
    embedding table and model bundle so that spaces are never mixed silently.
    """

    id: str
    dim: int
    preprocessing: dict
    has_text: bool = False

    def transform(self, image: Image.Image) -> np.ndarray:
        """One RGB image (from :func:`interest.imaging.images.load_image`) as a model input array."""
        raise NotImplementedError

    def encode_raw(self, batch: np.ndarray) -> np.ndarray:
        """A stacked batch of :meth:`transform` outputs to (n, dim) float32 features before L2 normalisation.

        Heads trained on raw features (the study's CI_R model) need these; the
        contract stores the normalised rows and their norms.
        """
        raise NotImplementedError

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """A stacked batch of :meth:`transform` outputs to (n, dim) float32 L2-normalised rows."""
        return l2_normalize(self.encode_raw(batch))

    def embed(self, images: list[Image.Image]) -> np.ndarray:
        """Embed RGB images: (n, dim) float32, L2-normalised."""
        return l2_normalize(self.embed_raw(images))

    def embed_raw(self, images: list[Image.Image]) -> np.ndarray:
        """Embed RGB images without normalising: (n, dim) float32 (their norms are the ``norm`` column)."""
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_raw(np.stack([self.transform(img) for img in images]))

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Embed texts in the image space (CLIP backbones only): (n, dim) float32, L2-normalised."""
        raise InterestError(f"backbone {self.id} has no text tower; characterize with --clip MODEL/PRETRAINED")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, dim={self.dim})"


class PerceptualBackbone(Backbone):
    """``perceptual/v1``: weight-free colour, tone and texture statistics (:mod:`interest.imaging.perceptual`)."""

    def __init__(self) -> None:
        self.id = "perceptual/v1"
        self.dim = PERCEPTUAL_DIM
        self.preprocessing = dict(PERCEPTUAL_PREPROCESSING)

    def transform(self, image: Image.Image) -> np.ndarray:
        return perceptual_vector(image)

    def encode_raw(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(batch, dtype=np.float32)


# ---------------------------------------------------------------- open_clip


class OpenClipBackbone(Backbone):
    """An open_clip model; build it with :func:`load_openclip` or :func:`load_backbone`."""

    has_text = True

    def __init__(self, model: Any, preprocess: Callable, tokenizer: Callable, *, backbone_id: str,
                 device: str, precision: str, random_weights: bool, checkpoint_sha256: str | None = None) -> None:
        import open_clip

        #: the onnxruntime encoder when one runs the image tower (see :meth:`choose_encoder`); None: torch eager
        self.image_encoder: Callable | None = None
        self.encoder = "torch"

        self.id = backbone_id
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = device
        self.precision = precision
        self.random_weights = random_weights
        cfg = open_clip.get_model_preprocess_cfg(model)
        self.preprocessing = {
            "kind": "openclip",
            **{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
            "loader": "interest.features.images.load_image",
        }
        if checkpoint_sha256:  # a local checkpoint: the file itself names the space, whatever its name
            self.preprocessing["checkpoint_sha256"] = checkpoint_sha256
        out_dim = getattr(getattr(model, "visual", None), "output_dim", None)
        self.dim = int(out_dim) if out_dim else int(self.embed([Image.new("RGB", (8, 8))]).shape[1])
        self.logit_scale = float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else 100.0

    def transform(self, image: Image.Image) -> np.ndarray:
        return self.preprocess(image).numpy()

    def _autocast(self):
        import torch

        if self.precision in ("fp32", "int8"):  # int8 is the image tower's (onnxruntime); text stays fp32
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.split(":")[0], dtype=dtype)

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model's input images."""
        size = self.preprocessing["size"]
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    @property
    def agreement(self):
        """int8 only: the :class:`~interest.imaging.onnx_encoder.Agreement` with fp32 measured on the photos embedded."""
        return getattr(self.image_encoder, "agreement", None)

    def choose_encoder(self, encoder: str) -> None:
        """Run the image tower with ``encoder`` (one of :data:`ENCODERS`) at this backbone's precision.

        ``auto`` on a CPU at fp32: onnxruntime when it and onnx are installed and
        the export agrees with torch eager (else torch eager, one logged line);
        on CUDA/MPS: torch eager. ``int8`` precision always runs onnxruntime.
        """
        check_encoder(encoder, self.precision, self.device)
        int8 = self.precision == "int8"
        eager_wins = self.device != "cpu" or self.precision != "fp32"  # no GPU measured otherwise; autocast is torch's
        if not int8 and (encoder == "torch" or (encoder == "auto" and eager_wins)):
            return
        if encoder == "auto" and not (_importable("onnxruntime") and _importable("onnx")):
            log.info("%s: encoding with torch eager (pip install 'interest[onnx,export]' for the faster "
                     "onnxruntime encoder)", self.id)
            return
        from interest.imaging.onnx_encoder import onnx_image_encoder

        found, record = onnx_image_encoder(self.model, self.id, self.input_size, int8=int8)
        if found is None and int8:
            raise InterestError(f"{self.id}: --precision int8 quantises the ONNX export of its visual tower, which "
                                f"is not usable here ({record.get('reason', 'it differs from torch eager')}); "
                                "use --precision fp32")
        if found is not None:
            self.image_encoder = found
            self.encoder = "onnxruntime-int8" if int8 else "onnxruntime-fp32"

    def encode_raw(self, batch) -> np.ndarray:
        import torch

        if self.image_encoder is not None:
            return self.image_encoder(np.asarray(batch, dtype=np.float32))
        x = torch.as_tensor(batch)
        if self.device != "cpu":
            x = x.to(self.device, non_blocking=True)
        with torch.inference_mode(), self._autocast():
            features = self.model.encode_image(x)
        return features.float().cpu().numpy()

    def encode_text(self, texts: list[str]) -> np.ndarray:
        import torch

        tokens = self.tokenizer(list(texts))
        if self.device != "cpu":
            tokens = tokens.to(self.device)
        with torch.inference_mode(), self._autocast():
            features = self.model.encode_text(tokens)
        return l2_normalize(features.float().cpu().numpy())


def resolve_device(device: str) -> str:
    """``auto`` -> cuda, mps or cpu, whichever is present; an absent device is an InterestError."""
    torch = require("torch", "research", f"device '{device}'")

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = device.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise InterestError(f"device '{device}': no CUDA GPU is visible to torch; use --device cpu or auto")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InterestError(f"device '{device}': Apple MPS is not available; use --device cpu or auto")
    if kind not in ("cpu", "cuda", "mps"):
        raise InterestError(f"device '{device}': unknown device; use auto, cpu, cuda or mps")
    return device


def _checkpoint_name(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-.") or "checkpoint"
    return name


def _is_random(pretrained: str | None) -> bool:
    return pretrained is None or str(pretrained).strip().lower() in ("", "none")


def backbone_id_for(model: str, pretrained: str | None) -> str:
    """The backbone id of an open_clip model: ``openclip/<model>/<tag | none | checkpoint name>``.

    A local checkpoint is named by its file name without suffix; an
    ``hf-hub:<org>/<name>`` model is ``openclip/hf-hub:<org>/<name>``.
    """
    if model.startswith("hf-hub:"):
        return f"openclip/{model}"
    if _is_random(pretrained):
        return f"openclip/{model}/none"
    pretrained = str(pretrained)
    if os.sep in pretrained or "/" in pretrained or Path(pretrained).is_file():
        return f"openclip/{model}/{_checkpoint_name(Path(pretrained))}"
    return f"openclip/{model}/{pretrained}"


def _weights_help(cache_dir: str | None) -> str:
    where = cache_dir or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    return (
        f"download them once on a machine with internet into the cache ({where}) and point --cache-dir "
        "or HF_HOME at it, or pass a local checkpoint file with --pretrained PATH "
        "(--pretrained none runs with random weights, for tests only)"
    )


def _warn_random(backbone_id: str) -> None:
    message = (
        f"WARNING: backbone {backbone_id} has RANDOM weights (pretrained none): its embeddings "
        "and every score made from them mean nothing; use it only for tests and benchmarks"
    )
    print(message, file=sys.stderr)  # loud on purpose: straight to stderr, whatever logging is configured


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules (as if not installed)
        return False


def check_encoder(encoder: str, precision: str, device: str) -> None:
    """A one-line error for an encoder, precision and device that do not go together, or a missing extra."""
    if precision not in PRECISIONS:
        raise InterestError(f"precision '{precision}': use one of {', '.join(PRECISIONS)}")
    if encoder not in ENCODERS:
        raise InterestError(f"encoder '{encoder}': use one of {', '.join(ENCODERS)}")
    on_cpu = device.split(":")[0] in ("cpu", "auto")  # auto: checked again once resolved
    if precision == "int8" and (encoder == "torch" or not on_cpu):
        raise InterestError(f"precision int8 runs onnxruntime on the CPU: use it with --device cpu and --encoder "
                            f"auto or onnx (not --device {device} --encoder {encoder})")
    if encoder == "onnx" and not on_cpu:
        raise InterestError(f"--encoder onnx runs on the CPU; use --device cpu, or --encoder auto on {device}")
    if encoder == "onnx" and precision in ("fp16", "bf16"):
        raise InterestError(f"--encoder onnx runs fp32 (or --precision int8); {precision} is torch autocast: "
                            "use --encoder torch")
    if precision == "int8" or encoder == "onnx":
        purpose = "--precision int8" if precision == "int8" else "--encoder onnx"
        require("onnxruntime", "onnx", purpose)
        require("onnx", "export", f"{purpose} (exporting the model's image tower)")


def load_openclip(model: str, pretrained: str | None, *, device: str = "cpu", cache_dir: str | None = None,
                  precision: str = "fp32", encoder: str = "auto") -> OpenClipBackbone:
    """Build an open_clip backbone from a model name and a tag, checkpoint path, ``none`` or hf-hub name.

    Weights come from open_clip's own loaders and cache (``cache_dir``, or the
    Hugging Face cache under ``HF_HOME``); weights that are not cached and
    cannot be downloaded raise one :class:`InterestError` saying how to provide them.
    ``encoder`` (auto, torch, onnx) runs the image tower (see
    :meth:`OpenClipBackbone.choose_encoder`); ``precision`` int8 is the
    quantised onnxruntime encoder, whose backbone id ends in ``@int8``.
    """
    open_clip = require("open_clip", "research", f"the open_clip backbone {model}")
    torch = require("torch", "research", f"the open_clip backbone {model}")

    device = resolve_device(device)
    check_encoder(encoder, precision, device)
    backbone_id = backbone_id_for(model, pretrained)
    random_weights = _is_random(pretrained) and not model.startswith("hf-hub:")
    if not model.startswith("hf-hub:") and model not in open_clip.list_models():
        raise InterestError(f"model '{model}': not an open_clip model name (see open_clip.list_models())")
    weights: str | None = None
    checkpoint_sha256: str | None = None
    if not random_weights and not model.startswith("hf-hub:"):
        weights = str(pretrained)
        is_path = Path(weights).expanduser().is_file()
        tags = open_clip.list_pretrained_tags_by_model(model)
        if is_path:
            weights = str(Path(weights).expanduser())
            checkpoint_sha256 = file_sha256(weights)
        elif weights not in tags:
            looks_like_path = os.sep in weights or "/" in weights or Path(weights).suffix in CHECKPOINT_SUFFIXES[1:]
            if looks_like_path:
                raise InterestError(f"--pretrained {weights}: checkpoint file not found; give an existing file path")
            raise InterestError(
                f"--pretrained {weights}: not a pretrained tag of {model} (tags: {', '.join(tags) or 'none'}); "
                "give a tag, a checkpoint file path or none"
            )
    if not random_weights and checkpoint_sha256 is None:
        from interest.core.hub import check_network, hub_offline

        check_network()  # weights may come from the Hub: when it is unreachable, fail from the cache at once
        if hub_offline() and weights is not None and _tag_cached(model, weights, cache_dir) is False:
            raise InterestError(
                f"{backbone_id}: cannot load the weights (not cached, and the Hugging Face Hub is unreachable or "
                f"HF_HUB_OFFLINE is set); {_weights_help(cache_dir)}"
            )
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # random weights are the same in every process and run
            net, _, preprocess = open_clip.create_model_and_transforms(
                model, pretrained=weights, cache_dir=cache_dir, device=device
            )
        tokenizer = open_clip.get_tokenizer(model, cache_dir=cache_dir) if model.startswith("hf-hub:") \
            else open_clip.get_tokenizer(model)
    except InterestError:
        raise
    except Exception as exc:  # noqa: BLE001 - open_clip and huggingface_hub raise many types
        from interest.core.hub import hub_offline

        text = one_line(exc)
        if len(text) > 160:
            text = text[:157] + "..."
        if hub_offline():
            text = "not cached, and the Hugging Face Hub is unreachable or HF_HUB_OFFLINE is set"
        raise InterestError(f"{backbone_id}: cannot load the weights ({text}); {_weights_help(cache_dir)}") from None
    net.eval()
    net.requires_grad_(False)
    if random_weights:
        _warn_random(backbone_id)
    backbone = OpenClipBackbone(net, preprocess, tokenizer, backbone_id=backbone_id, device=device,
                                precision=precision, random_weights=random_weights,
                                checkpoint_sha256=checkpoint_sha256)
    backbone.choose_encoder(encoder)
    if precision == "int8":  # another embedding space: its own id and cache (docs/features.md)
        backbone.id += INT8_SUFFIX
        backbone.preprocessing["encoder"] = "onnxruntime-int8-dynamic"
    return backbone


def _tag_cached(model: str, tag: str, cache_dir: str | None) -> bool | None:
    """Whether the Hub file behind open_clip's ``model``/``tag`` is in the Hugging Face cache (None: not a Hub file).

    Checked before building the model, so that offline a missing file costs no model build.
    """
    import open_clip

    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    hub = open_clip.get_pretrained_cfg(model, tag).get("hf_hub", "")
    if not hub:
        return None
    repo, filename = os.path.split(hub)
    filename = filename or "open_clip_pytorch_model.bin"
    names = [filename]
    if filename == "open_clip_pytorch_model.bin":  # open_clip prefers these safetensors twins
        names.insert(0, "open_clip_model.safetensors")
    elif filename.endswith((".bin", ".pth")):
        names.insert(0, filename[:-4] + ".safetensors")
    return any(isinstance(try_to_load_from_cache(repo, name, cache_dir=cache_dir), str) for name in names)


def load_backbone(backbone_id: str, options: BackboneOptions | None = None, **keywords: Any) -> Backbone:
    """The backbone named by ``backbone_id`` (``perceptual/v1`` or ``openclip/<model>/<pretrained>``).

    How it runs is ``options``, or :class:`BackboneOptions` made from ``keywords``
    (``device``, ``precision``, ``cache_dir``, ``weights``, ``encoder``: declared
    there once, e.g. ``load_backbone(id, device="cpu", encoder="torch")``).

    For an id made from a local checkpoint (``openclip/<model>/<file stem>``)
    the checkpoint is looked up as ``<folder>/<stem>{,.safetensors,.pt,.pth,.bin}``
    in ``cache_dir`` and then the folders of ``$INTEREST_CHECKPOINTS``
    (``os.pathsep``-separated). ``weights``, a checkpoint file, is used instead
    of any lookup or download; the backbone keeps the id asked for, and its
    ``preprocessing`` records the file's sha256 (which a bundle compares).
    ``synthetic/...`` ids name embeddings written directly by the synthetic
    world: there is no image model behind them, which raises InterestError.
    ``encoder`` and ``precision`` are those of :func:`load_openclip`; an id
    ending in ``@int8`` is loaded at precision int8.
    """
    if options is None:
        options = BackboneOptions(**keywords)
    elif keywords:
        raise TypeError(f"load_backbone: give options or keywords, not both ({', '.join(keywords)})")
    kind, _, rest = backbone_id.partition("/")
    if kind == "openclip" and rest.endswith(INT8_SUFFIX):
        backbone_id, rest = backbone_id[:-len(INT8_SUFFIX)], rest[:-len(INT8_SUFFIX)]
        options = dataclasses.replace(options, precision="int8")
    openclip_options = {k: v for k, v in options.as_dict().items() if k != "weights"}  # what load_openclip takes
    if kind == "perceptual":
        if rest != "v1":
            raise InterestError(f"backbone '{backbone_id}': unknown perceptual version; use perceptual/v1")
        return PerceptualBackbone()
    if kind == "synthetic":
        raise InterestError(
            f"backbone '{backbone_id}': no image backbone (its embeddings were written directly by the "
            "synthetic world); score precomputed embeddings instead"
        )
    if kind == "openclip" and rest and options.weights is not None:
        if rest.startswith("hf-hub:"):
            raise InterestError(f"backbone '{backbone_id}': weights come from its Hub repo; give weights only for "
                                "openclip/<model>/<pretrained> backbones")
        model = rest.partition("/")[0]
        options.check_weights()
        backbone = load_openclip(model, options.weights, **openclip_options)
        backbone.id = backbone_id + (INT8_SUFFIX if options.precision == "int8" else "")
        return backbone
    if kind == "openclip" and rest:
        if rest.startswith("hf-hub:"):
            return load_openclip(rest, None, **openclip_options)
        model, _, pretrained = rest.partition("/")
        if not pretrained:
            raise InterestError(f"backbone '{backbone_id}': expected openclip/<model>/<pretrained or none>")
        if not _is_random(pretrained):
            import open_clip

            check_checkpoint_name(pretrained, backbone_id)  # a bundle's id: never a path to open_clip or the folders
            if model in open_clip.list_models() and pretrained not in open_clip.list_pretrained_tags_by_model(model):
                path = find_checkpoint(pretrained, options.cache_dir)
                if path is None:
                    raise InterestError(
                        f"backbone '{backbone_id}': '{pretrained}' is a local checkpoint name; put the file "
                        "in the folder given as --cache-dir or pass its path with --pretrained PATH"
                    )
                pretrained = path
        return load_openclip(model, pretrained, **openclip_options)
    raise InterestError(
        f"backbone '{backbone_id}': unknown backbone id; use perceptual/v1 or openclip/<model>/<pretrained>"
    )
