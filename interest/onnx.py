"""Torch-free scoring: onnxruntime, Pillow and NumPy only.

For photo apps on small devices. Export a bundle once with
``interest export-onnx MODEL OUT`` (on a machine with torch), then::

    import interest.onnx
    scorer = interest.onnx.load("OUT")
    result = scorer.score(["a.jpg", "b.jpg"], user="alice")   # dict of NumPy columns
    result["ci_score"], result["trend_group"], result["user_score"]

The scores match the torch path (``interest.load(MODEL).score``) within
1e-3. Importing this module never imports torch (nor pandas): a test checks
it. ``pandas.DataFrame(result)`` gives the same table as the torch path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from interest.core.errors import InterestError, require
from interest.imaging.images import BadImage, expand_image_paths
from interest.core.numeric import l2_normalize
from interest.pipeline.decoder import transform_for
from interest.pipeline.encoder import OnnxEncoder
from interest.pipeline.runner import ShardRunner
from interest.core.vocabulary import GROUP_PROBABILITY_COLUMNS

MANIFEST = "interest-onnx.json"  # interest.apps.export_onnx.MANIFEST (not imported: it needs onnx)


def load(path: str | os.PathLike, *, threads: int | None = None, providers: list[str] | None = None) -> "OnnxModel":
    """Load an ONNX export written by ``interest export-onnx``."""
    return OnnxModel(path, threads=threads, providers=providers)


class OnnxModel:
    """An exported model: backbone (ONNX or NumPy) plus heads (ONNX), scored with onnxruntime.

    ``threads`` caps onnxruntime's intra-op threads (None: its default, all
    cores); ``providers`` picks execution providers (default CPU). Safe to
    call from several threads: onnxruntime sessions are.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None, providers: list[str] | None = None):
        ort = require("onnxruntime", "onnx", "scoring an ONNX export")
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise InterestError(f"{self.path}: not an ONNX export (no {MANIFEST}); run `interest export-onnx MODEL {self.path}`")
        try:
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InterestError(f"{manifest_path}: not valid JSON ({exc.msg}); export again") from None
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = providers or ["CPUExecutionProvider"]
        self.heads = ort.InferenceSession(str(self.path / self.manifest["heads"]), options, providers=providers)
        info = self.manifest["backbone"]
        self.preprocessing = info.get("preprocessing", {})
        self.backbone = None
        if info.get("file"):
            self.backbone = ort.InferenceSession(str(self.path / info["file"]), options, providers=providers)
        # the image pipeline's decode transform and an encoder: the perceptual statistics in NumPy, or the
        # exported image model; the same decoder as the torch path, so a file gives the same model input
        self._transform = transform_for(self.preprocessing) if self.preprocessing else None
        if info.get("kind") == "numpy":
            from interest.imaging.backbones import PerceptualBackbone

            self._encoder = PerceptualBackbone()
        else:
            self._encoder = None if self.backbone is None else OnnxEncoder(self.backbone, self.dim)
        self._user_index = {u: i for i, u in enumerate(self.manifest["users"])}

    @property
    def backbone_id(self) -> str:
        """The embedding space the model was trained on."""
        return str(self.manifest["backbone_id"])

    @property
    def dim(self) -> int:
        """Embedding size."""
        return int(self.manifest["dim"])

    @property
    def users(self) -> list[str]:
        """Users with a head."""
        return list(self.manifest["users"])

    # ------------------------------------------------------------ scoring

    def score(
        self,
        inputs: Any,
        user: str | None = None,
        *,
        errors: str = "raise",
        batch_size: int = 32,
    ) -> dict[str, np.ndarray]:
        """Score image files, folders (recursive, sorted) or PIL images.

        Returns columns as NumPy arrays: ``path`` (or ``index`` for PIL
        images), ``ci_score``, ``trend_group``, ``p_common``,
        ``p_interplay``, ``p_subjective`` and, with ``user``, ``user_score``
        and ``deviation``. ``errors="coerce"`` gives an unreadable image NaN
        scores and its reason in ``error`` instead of raising.
        """
        if errors not in ("raise", "coerce"):
            raise InterestError(f"errors={errors!r}: choose 'raise' or 'coerce'")
        items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if items and all(isinstance(x, Image.Image) for x in items):
            emb = self.embed(items, batch_size=batch_size)
            return {"index": np.arange(len(items)), **self.score_embeddings(emb, user)}
        files = expand_image_paths(items, strict=False)
        emb, failures = self._runner(batch_size).embed_files(files)
        first = next((f for f in failures if f is not None), None)
        if first is not None and errors == "raise":
            raise BadImage(files[first.index], first.reason, first.detail)
        problems = [None if f is None else f.reason for f in failures]
        ok = np.array([p is None for p in problems], dtype=bool)
        result = self.score_embeddings(emb[ok], user) if ok.any() else self.score_embeddings(np.zeros((0, self.dim), np.float32), user)
        out: dict[str, np.ndarray] = {"path": np.array([str(f) for f in files], dtype=object)}
        for name, values in result.items():
            full = np.full(len(files), -1 if name == "trend_group" else np.nan, dtype=values.dtype)
            full[ok] = values
            out[name] = full
        if errors == "coerce":
            out["error"] = np.array(problems, dtype=object)
        return out

    def score_embeddings(self, emb: np.ndarray, user: str | None = None) -> dict[str, np.ndarray]:
        """Score embeddings (n, dim) of the model's backbone: the columns of :meth:`score` without ``path``."""
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim == 1:
            emb = emb[None, :]
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise InterestError(f"embeddings of shape {emb.shape}: this model expects (n, {self.dim}) from '{self.backbone_id}'")
        if user is not None and user not in self._user_index:
            raise InterestError(f"user {user} has no head in {self.path}; personalize them and export again")
        emb = l2_normalize(emb)
        index = self._user_index.get(user, len(self._user_index)) if user is not None else len(self._user_index)
        if len(emb) == 0:
            ci, proba, dev = np.zeros(0, np.float32), np.zeros((0, 3), np.float32), np.zeros(0, np.float32)
        else:
            ci, proba, dev = self.heads.run(None, {"embedding": emb, "user": np.array([index], dtype=np.int64)})
        out = {"ci_score": ci, "trend_group": _band(ci, self.manifest["group_cuts"])}
        out.update({col: proba[:, i] for i, col in enumerate(GROUP_PROBABILITY_COLUMNS)})
        if user is not None:
            out["user_score"] = ci + dev
            out["deviation"] = dev
        return out

    def embed(self, images: list[Image.Image], *, batch_size: int = 32) -> np.ndarray:
        """L2-normalised embeddings (n, dim) of RGB images."""
        return self._runner(batch_size).embed_images(list(images))

    def _runner(self, batch_size: int) -> ShardRunner:
        if self._encoder is None or self._transform is None:
            raise InterestError(f"{self.path}: backbone {self.backbone_id} has no image model; score embeddings instead")
        return ShardRunner(self._transform, self._encoder, batch_size=batch_size)


def _band(ci: np.ndarray, cuts: list) -> np.ndarray:
    """The trend group of each CI score: 0 at or above the upper cut, 2 below the lower (as interest.learn.groups)."""
    ci = np.asarray(ci, dtype=np.float64)
    groups = np.ones(ci.shape, dtype=np.int64)
    groups[ci >= float(cuts[1])] = 0
    groups[~(ci >= float(cuts[0]))] = 2
    return groups
