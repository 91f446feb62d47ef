"""The encode stage: a stacked batch of model inputs to raw embeddings (before L2 normalisation).

Anything with ``dim`` and ``encode_raw(batch: np.ndarray) -> np.ndarray`` fills
the slot: every :class:`~interest.imaging.backbones.Backbone` does (torch on
CPU, CUDA or MPS; the weight-free perceptual statistics), and so does
:class:`OnnxEncoder`, the image model of an ``interest export-onnx`` bundle.
The rows' L2 norms are split off here (:func:`split_norms`), once, for every
caller: the contract stores unit rows and their norms.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from interest.core.numeric import scale_rows_to_unit


class Encoder(Protocol):
    """The encoder slot: ``dim`` and a batch of decoded inputs to (n, dim) float32 raw features."""

    dim: int

    def encode_raw(self, batch: np.ndarray) -> np.ndarray: ...


class OnnxEncoder:
    """The image model of an ONNX export (input ``pixels``), run by an onnxruntime session."""

    def __init__(self, session: Any, dim: int) -> None:
        self.session = session
        self.dim = int(dim)

    def encode_raw(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {"pixels": np.asarray(batch, dtype=np.float32)})[0], dtype=np.float32)


class TowerEncoder:
    """A backbone's image tower without the backbone: a picklable callable (the onnxruntime encoder) and its dim.

    What a Ray encoder actor on a CPU runs, so its process imports neither
    torch nor open_clip and builds no torch model (see :mod:`interest.pipeline.ray`).
    """

    def __init__(self, tower: Any, dim: int) -> None:
        self.tower = tower
        self.dim = int(dim)

    def encode_raw(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.tower(np.asarray(batch, dtype=np.float32)), dtype=np.float32)


def split_norms(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw features (n, d) as (L2-normalised rows, their norms (n,) float32); zero rows stay zero."""
    unit = np.array(raw, dtype=np.float32)
    return unit, scale_rows_to_unit(unit)
