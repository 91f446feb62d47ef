"""The onnxruntime image encoder of open_clip backbones: the visual tower exported once, cached, checked.

On a CPU, onnxruntime runs a ViT's visual tower faster than torch eager
with the same features (measured in BENCHMARKS.md), so it is the default
there (:func:`interest.imaging.backbones.load_openclip`, ``encoder="auto"``).
The tower is exported with ``torch.onnx.export`` once per backbone id,
weights, torch, onnxruntime and opset, into a cache folder
(:func:`encoder_cache_root`); the export is kept only if it agrees with
torch eager on a seeded batch (cosine >= :data:`EXACT_COSINE` on every
row), otherwise the backbone stays on torch eager. ``int8`` is onnxruntime's
dynamic quantisation of that export: faster, not exact; it is its own
embedding space (the ``@int8`` backbone id), never mixed with fp32 rows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from interest.core.collection import atomic_path, write_json_atomic
from interest.core.errors import one_line

log = logging.getLogger(__name__)

#: every row of the seeded check batch must agree with torch eager this closely for the export to be used
EXACT_COSINE = 0.99999
OPSET = 17
CHECK_BATCH = 4
CHECK_SEED = 0
#: images whose int8 features are also encoded in fp32, to measure the agreement the CLI prints (the fp32
#: reference is the checked export, so a ViT-B-32 sample costs about a second on 2 cores)
AGREEMENT_SAMPLE = 32
# A single ONNX protobuf holds at most 2 GB; bigger towers would need external data files, which the
# atomic rename of one file cannot cover, so they stay on torch eager.
MAX_ONNX_BYTES = 1_900_000_000


def encoder_cache_root() -> Path:
    """Where exported encoders live: ``$INTEREST_CACHE/encoders``, else ``$XDG_CACHE_HOME/interest/encoders``
    (default ``~/.cache/interest/encoders``)."""
    root = os.environ.get("INTEREST_CACHE")
    if root:
        return Path(root).expanduser() / "encoders"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "interest" / "encoders"


def available_threads() -> int:
    """onnxruntime's intra-op threads: ``OMP_NUM_THREADS`` when the user set it (as torch does), else the usable cores."""
    wanted = os.environ.get("OMP_NUM_THREADS", "")
    if wanted.isdigit() and int(wanted) > 0:
        return int(wanted)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def weights_sha256(module: Any) -> str:
    """Hex sha256 over a torch module's state (names, dtypes, shapes, bytes): what the export was made from."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{array.dtype}:{tuple(array.shape)};".encode())
        digest.update(array.view(-1).view(torch.uint8).numpy().data)  # raw bytes of any dtype, bf16 included
    return digest.hexdigest()


def cache_folder(backbone_id: str, weights: str, input_size: tuple[int, int]) -> Path:
    """The folder of one exported tower, keyed by everything that changes the file or its numbers."""
    import onnxruntime
    import torch

    key = json.dumps({"backbone_id": backbone_id, "weights_sha256": weights, "torch": torch.__version__,
                      "onnxruntime": onnxruntime.__version__, "opset": OPSET, "input_size": list(input_size)},
                     sort_keys=True)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", backbone_id).strip("-.")
    return encoder_cache_root() / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine between matching rows of two feature matrices (float64)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denominator = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("ij,ij->i", a, b) / np.where(denominator > 0, denominator, 1.0)


class OnnxImageEncoder:
    """An onnxruntime CPU session over an exported visual tower: preprocessed batches to raw features.

    Picklable (the embedding pipeline may send the backbone to spawned
    decoder processes): the session is reopened from the file when first used.
    """

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        self.path = Path(path)
        self.threads = threads or available_threads()
        self._session: Any = None
        self.reference: OnnxImageEncoder | None = None
        self.agreement: Agreement | None = None

    def measure_against(self, reference: "OnnxImageEncoder") -> None:
        """Also encode the first :data:`AGREEMENT_SAMPLE` images with ``reference`` and keep their cosines."""
        self.reference, self.agreement = reference, Agreement()

    def open(self) -> "OnnxImageEncoder":
        """Create the session now (raises onnxruntime's error for a damaged file)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # its warnings about unused initialisers are noise to a user
        self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        return self

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self._session is None:
            self.open()
        pixels = np.ascontiguousarray(np.asarray(batch, dtype=np.float32))
        features = self._session.run(None, {"pixels": pixels})[0].astype(np.float32, copy=False)
        if self.reference is not None:
            wanted = AGREEMENT_SAMPLE - self.agreement.n
            self.agreement.add(row_cosines(features[:wanted], self.reference(pixels[:wanted])))
            if self.agreement.n >= AGREEMENT_SAMPLE:
                self.reference = None  # measured: free the fp32 session's memory
        return features

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_session": None}


@dataclass
class Agreement:
    """Cosine between int8 and fp32 features of the images sampled so far (the first :data:`AGREEMENT_SAMPLE`)."""

    cosines: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.cosines)

    def add(self, cosines: np.ndarray) -> None:
        self.cosines.extend(float(c) for c in cosines)

    def summary(self) -> str:
        """One line for the user, e.g. ``int8 agrees with fp32 on 64 photos: mean cosine 0.9931 (min 0.9815)``."""
        if not self.cosines:
            return "int8 agreement with fp32 not measured: no photos were embedded in this run"
        return (f"int8 agrees with fp32 on {self.n} of the photos embedded: mean cosine "
                f"{np.mean(self.cosines):.4f} (min {np.min(self.cosines):.4f})")


def _check_batch(input_size: tuple[int, int]):
    import torch

    generator = torch.Generator().manual_seed(CHECK_SEED)
    return torch.randn(CHECK_BATCH, 3, *input_size, generator=generator)


def _export(net: Any, path: Path, input_size: tuple[int, int]) -> None:
    """``net.encode_image`` (raw features, batch size dynamic) as one ONNX file, written atomically."""
    import torch

    class ImageTower(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixels: Any) -> Any:
            return self.model.encode_image(pixels)

    was_training = net.training
    flags = {name: p.requires_grad for name, p in net.named_parameters()}
    # With gradients off, nn.MultiheadAttention takes a fused fast path that ONNX cannot express: the
    # weights are marked trainable for the trace only, then put back as they were.
    net.requires_grad_(True)
    try:
        with atomic_path(path) as tmp, warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation on every call
            torch.onnx.export(ImageTower(net).eval(), (torch.zeros(2, 3, *input_size),), str(tmp), dynamo=False,
                              input_names=["pixels"], output_names=["features"],
                              dynamic_axes={"pixels": {0: "n"}, "features": {0: "n"}}, opset_version=OPSET)
    finally:
        for name, p in net.named_parameters():
            p.requires_grad_(flags[name])
        net.train(was_training)


def _quantise(fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs a line per tensor, and advice, on the root logger
    try:
        with atomic_path(int8) as tmp:
            quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def _read_record(folder: Path) -> dict:
    try:
        return json.loads((folder / "encoder.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _usable(path: Path, record: dict, key: str) -> OnnxImageEncoder | None:
    """The cached file as an open encoder, or None when it is absent or does not match its record."""
    if not path.is_file() or record.get(f"{key}_bytes") != path.stat().st_size:
        return None
    try:
        return OnnxImageEncoder(path).open()
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types for a damaged model
        log.warning("rebuilding the cached encoder %s: it cannot be opened (%s)", path, one_line(exc, 120))
        return None


def onnx_image_encoder(net: Any, backbone_id: str, input_size: tuple[int, int], *,
                       int8: bool = False) -> tuple[OnnxImageEncoder | None, dict]:
    """The cached (exported and checked on first use) onnxruntime encoder of ``net``'s visual tower.

    Returns (encoder, record): ``record`` holds the check (``min_cosine`` against
    torch eager on the seeded batch, ``exact``). The encoder is None when the
    fp32 export is not exact or cannot be made: the caller stays on torch eager.
    ``int8``: the dynamically quantised model instead (never checked for
    exactness: it is not exact; its agreement is measured on the photos).
    """
    import torch

    visual = getattr(net, "visual", net)
    size_bytes = sum(p.numel() * p.element_size() for p in visual.parameters())
    if size_bytes > MAX_ONNX_BYTES:
        log.warning("%s: visual tower of %.1f GB is beyond one ONNX file; encoding with torch eager",
                    backbone_id, size_bytes / 1e9)
        return None, {"exact": False, "reason": "too large for one ONNX file"}
    folder = cache_folder(backbone_id, weights_sha256(visual), input_size)
    fp32_path, int8_path = folder / "visual-fp32.onnx", folder / "visual-int8.onnx"
    record = _read_record(folder)
    fp32 = _usable(fp32_path, record, "fp32")
    if fp32 is not None and record.get("exact") is False:
        log.warning("%s: the ONNX export differs from torch eager (min cosine %.6f < %s); encoding with torch eager",
                    backbone_id, record.get("min_cosine", float("nan")), EXACT_COSINE)
        return None, record
    if fp32 is None:
        try:
            _export(net, fp32_path, input_size)
            fp32 = OnnxImageEncoder(fp32_path).open()
        except Exception as exc:  # noqa: BLE001 - the exporter fails in many ways on unusual architectures
            log.warning("%s: cannot export the visual tower to ONNX (%s); encoding with torch eager", backbone_id,
                        one_line(exc, 160))
            return None, {"exact": False, "reason": "export failed"}
        check = _check_batch(input_size)
        with torch.inference_mode():
            eager = net.encode_image(check).float().numpy()
        min_cosine = float(row_cosines(fp32(check.numpy()), eager).min())
        record = {"backbone_id": backbone_id, "min_cosine": min_cosine, "exact": min_cosine >= EXACT_COSINE,
                  "check": f"{CHECK_BATCH} images of N(0, 1) pixels, seed {CHECK_SEED}",
                  "fp32_bytes": fp32_path.stat().st_size, "opset": OPSET}
        write_json_atomic(folder / "encoder.json", record)
        if not record["exact"]:
            log.warning("%s: the ONNX export differs from torch eager (min cosine %.6f < %s); encoding with torch "
                        "eager", backbone_id, min_cosine, EXACT_COSINE)
            return None, record
    if not int8:
        return fp32, record
    quantised = _usable(int8_path, record, "int8")
    if quantised is None:
        _quantise(fp32_path, int8_path)
        record = {**record, "int8_bytes": int8_path.stat().st_size}
        write_json_atomic(folder / "encoder.json", record)
        quantised = OnnxImageEncoder(int8_path).open()
    quantised.measure_against(fp32)
    return quantised, record
