"""Images -> backbone -> pipeline -> model: what ``interest.load`` returns.

:func:`load` reads a bundle (by its kind) into a model that scores images too
(:class:`ImageScoring`). :func:`read_inputs` works out what kind of input ``score``
got (image paths or folders, PIL images, an embeddings array, a DataFrame of
(photo_id, embedding), Parquet embeddings files) and returns embeddings of
the model's backbone. Images go through the image pipeline's shard runner
(:mod:`interest.pipeline.runner`), the very decoder and encoder that
``interest embed`` uses, so a file scores from the same embedding it would
have in a collection. :class:`BackboneHolder` loads the backbone once per
process, behind a lock, and checks it is the one the bundle was trained on.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from interest.bundle.format import LINEAR_KIND
from interest.bundle.io import read_bundle
from interest.core.errors import InterestError
from interest.imaging.backbones import Backbone, BackboneOptions
from interest.core.hub import is_hub_name, resolve_bundle
from interest.models.base import EmbeddingModel, Inputs, embeddings_of_parquet, read_embedding_inputs
from interest.models.model import InterestModel
from interest.models.study import LinearHeadModel

if TYPE_CHECKING:
    from interest.pipeline.runner import ShardRunner


class BackboneHolder:
    """A model's image backbone: loaded on first use, once, with :meth:`configure`'s options.

    Models reloaded from a bundle of the same backbone share one holder, so
    a long-running service loads the backbone once per process.
    """

    def __init__(self) -> None:
        self.options = BackboneOptions().as_dict()
        self.backbone: Backbone | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the backbone is in memory already."""
        return self.backbone is not None

    def configure(self, options: BackboneOptions) -> None:
        """Where and how the backbone runs (see :meth:`InterestModel.configure_backbone`), checked now."""
        self.options = options.check().as_dict()

    def get(self, spec: dict, dim: int, name: str) -> Backbone:
        """The backbone of bundle metadata ``spec`` (its ``backbone`` entry), loaded and checked once."""
        with self._lock:
            if self.backbone is None:
                self.backbone = _load_checked(str(spec["id"]), spec.get("preprocessing"), dim, name, self.options)
            return self.backbone


def _load_checked(backbone_id: str, want: dict | None, dim: int, name: str, options: dict) -> Backbone:
    from interest.imaging.backbones import load_backbone

    options = dict(options)
    if options.get("precision") == "int8" and not backbone_id.endswith("@int8"):
        raise InterestError(
            f"{name} was trained on the fp32 embeddings of '{backbone_id}', and precision int8 embeds into its "
            f"own space ('{backbone_id}@int8'): load with precision='fp32', or train a model on "
            "`interest embed --precision int8` embeddings"
        )
    if backbone_id.startswith(("perceptual/", "synthetic/")):
        options["device"] = "cpu"  # weight-free: nothing to place on an accelerator
    elif options.get("device") == "auto":
        from interest.imaging.backbones import resolve_device

        options["device"] = resolve_device("auto")
    backbone = load_backbone(backbone_id, **options)
    have = getattr(backbone, "preprocessing", None)
    if want and have and want.get("checkpoint_sha256") and want.get("checkpoint_sha256") != have.get("checkpoint_sha256"):
        raise InterestError(
            f"backbone '{backbone_id}': the checkpoint loaded (sha256 {str(have.get('checkpoint_sha256'))[:12]}...) "
            f"is not the one {name} was trained on ({want['checkpoint_sha256'][:12]}...); give that file as "
            "weights= / --weights"
        )
    if want and have and "checkpoint_sha256" not in want:
        # trained on a tag's weights, given them as a file (weights=): the file's hash is not in the bundle
        have = {k: v for k, v in have.items() if k != "checkpoint_sha256"}
    if want and have:
        have, want = _jsonable(have), _jsonable(want)
        if have != want:
            differ = "; ".join(f"{k}: {have.get(k)!r} here, {want.get(k)!r} in training"
                               for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k))
            raise InterestError(
                f"backbone '{backbone_id}' preprocesses images unlike the embeddings {name} was trained on "
                f"({differ}); use the same backbone version the training embeddings came from"
            )
    if int(backbone.dim) != dim:
        raise InterestError(f"backbone '{backbone_id}' gives {backbone.dim}-d embeddings, {name} expects {dim}")
    return backbone


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, sort_keys=True, default=str))


def _runner(model: "ImageScoring", batch_size: int) -> ShardRunner:
    from interest.pipeline.runner import shard_runner

    return shard_runner(model.backbone, batch_size=batch_size)


def embed_images(model: "ImageScoring", images: list, batch_size: int = 64) -> np.ndarray:
    """PIL images as the (n, dim) embeddings ``model.score_embeddings`` takes (raw rows for a head on raw features)."""
    emb = _runner(model, batch_size).embed_images(list(images), raw=model.needs_raw_features)
    return model.check_embeddings(emb)


def embed_files(model: "ImageScoring", files: list[Path], errors: str, batch_size: int, progress: bool,
                cache: str | os.PathLike | None = None):
    """(embeddings (n, dim), per-file reason or None) of image files; ``errors="raise"``: the first bad file raises.

    ``cache``: a folder of embeddings by file content (:mod:`interest.pipeline.file_cache`); files seen
    before are not embedded again."""
    from interest.imaging.images import BadImage
    from interest.core.progress import progress_bar

    with progress_bar(total=len(files), desc="score", unit="img", enabled=progress, leave=False) as bar:
        if cache is None:
            emb, failures = _runner(model, batch_size).embed_files(files, raw=model.needs_raw_features, on_batch=bar.update)
        else:
            from interest.pipeline.file_cache import embed_files_cached

            emb, failures = embed_files_cached(_runner(model, batch_size), model.backbone, files, cache,
                                               raw=model.needs_raw_features, on_batch=bar.update)
    first = next((f for f in failures if f is not None), None)
    if first is not None and errors == "raise":
        raise BadImage(files[first.index], first.reason, first.detail)
    ok = np.array([f is None for f in failures], dtype=bool)
    if ok.any():
        emb[ok] = model.check_embeddings(emb[ok])
    return emb, [None if f is None else f.reason for f in failures]


def read_inputs(model: "ImageScoring", inputs: Any, errors: str = "raise", batch_size: int = 64,
                progress: bool = False, cache: str | os.PathLike | None = None) -> Inputs:
    """(id column name, ids, embeddings, per-row problem or None) for any input :meth:`ImageScoring.score` accepts;
    ``cache``: see :func:`embed_files`."""
    import pandas as pd
    from PIL import Image

    if isinstance(inputs, (np.ndarray, pd.DataFrame)):
        return read_embedding_inputs(model, inputs)
    single = isinstance(inputs, (str, os.PathLike, Image.Image)) or not hasattr(inputs, "__iter__")
    items = [inputs] if single else list(inputs)
    if not items:
        raise InterestError("nothing to score: give image files, folders, PIL images or embeddings")
    if all(isinstance(x, Image.Image) for x in items):
        emb = embed_images(model, items, batch_size)
        return "index", np.arange(len(items)), emb, [None] * len(items)
    if any(isinstance(x, Image.Image) for x in items):
        raise InterestError("inputs mix PIL images and paths; score them in separate calls")
    bad = next((x for x in items if not isinstance(x, (str, os.PathLike))), None)
    if bad is not None:
        raise InterestError(
            f"cannot score a {type(bad).__name__}: give image paths, folders, PIL images, an embeddings array, "
            "a DataFrame (photo_id, embedding) or a Parquet embeddings file"
        )
    paths = [Path(x) for x in items]
    parquet = [p.suffix.lower() == ".parquet" and not p.is_dir() for p in paths]
    if any(parquet):
        if not all(parquet):
            raise InterestError("inputs mix Parquet embeddings and images; score them in separate calls")
        return embeddings_of_parquet(model, paths)
    from interest.imaging.images import expand_image_paths

    files = expand_image_paths(paths, strict=errors == "raise")
    emb, problems = embed_files(model, files, errors, batch_size, progress, cache)
    return "path", np.array([str(f) for f in files], dtype=object), emb, problems


class ImageScoring(EmbeddingModel):
    """A model that scores images too: image files, folders and PIL images go through its backbone
    (loaded on first use, once, with :meth:`configure_backbone`'s options) and the image pipeline, then the model.

    What :func:`interest.load` returns (:class:`ScoringModel` for a full bundle, :class:`ScoringLinearModel`
    for the study's linear head). Models reloaded from a bundle of the same backbone share one backbone.
    """

    def __init__(self, **parts: Any) -> None:
        super().__init__(**parts)
        self.backbone_holder = BackboneHolder()  # the image backbone, loaded on first use

    @property
    def backbone(self) -> Backbone:
        """The image backbone (loaded on first use, once, with :meth:`configure_backbone`'s options)."""
        return self.backbone_holder.get(self.metadata["backbone"], self.dim, self.name)

    @property
    def backbone_loaded(self) -> bool:
        """Whether the image backbone is in memory already (scoring images will not wait for it)."""
        return self.backbone_holder.loaded

    def embed_images(self, images: list, batch_size: int = 64) -> np.ndarray:
        """PIL images as the (n, dim) embeddings :meth:`score_embeddings` takes (raw rows for a head on raw features).

        Embedding is the costly step: a service embeds the images of several
        requests in one call and scores each request's rows apart.
        """
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return embed_images(self, list(images), batch_size)

    def configure_backbone(
        self,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        cache_dir: str | os.PathLike | None = None,
        weights: str | os.PathLike | None = None,
        encoder: str = "auto",
    ) -> "ImageScoring":
        """Where and how the backbone runs when images are scored: ``device`` (cpu, cuda[:N], mps or
        auto), ``precision`` (fp32, fp16, bf16), ``cache_dir`` (where its weights are cached or its
        local checkpoint lies), ``weights`` (a checkpoint file to use) and ``encoder`` (auto, torch or
        onnx: what runs the image tower, see ``load_openclip``). Takes effect at the next image scored
        if the backbone is not loaded yet. Returns self.
        """
        self.backbone_holder.configure(BackboneOptions(device=device, precision=precision, cache_dir=cache_dir,
                                                       weights=weights, encoder=encoder))
        return self

    def reloaded(self, path: str | os.PathLike) -> "ImageScoring":
        """The bundle at ``path`` loaded again, sharing this model's backbone (loaded once per process)."""
        fresh = super().reloaded(path)
        fresh.backbone_holder = self.backbone_holder
        return fresh

    def read_inputs(self, inputs: Any, errors: str = "raise", batch_size: int = 64, progress: bool = False,
                    cache: str | os.PathLike | None = None) -> Inputs:
        """Embeddings of any input :meth:`score` accepts, images included (see :func:`read_inputs`)."""
        return read_inputs(self, inputs, errors, batch_size, progress, cache)


class ScoringModel(ImageScoring, InterestModel):
    """A full bundle's :class:`~interest.models.model.InterestModel` that scores images too."""


class ScoringLinearModel(ImageScoring, LinearHeadModel):
    """The study's :class:`~interest.models.study.LinearHeadModel` that scores images too."""


def with_images(model: InterestModel | LinearHeadModel) -> ScoringModel | ScoringLinearModel:
    """``model`` (trained or built in memory) as one that scores images too, its parts shared."""
    if isinstance(model, ImageScoring):
        return model
    scoring = ScoringLinearModel if isinstance(model, LinearHeadModel) else ScoringModel
    new = scoring.__new__(scoring)
    new.__dict__.update(model.__dict__)
    new.backbone_holder = BackboneHolder()
    return new


def load_model(path: str | os.PathLike) -> ScoringModel | ScoringLinearModel:
    """The model of the bundle directory at ``path``, by the bundle's kind (full, or the study's linear head)."""
    bundle = read_bundle(path)
    if bundle.kind == LINEAR_KIND:
        return ScoringLinearModel.from_bundle(bundle)
    return ScoringModel.from_bundle(bundle)


def load(
    path: str | os.PathLike,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    cache_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    encoder: str = "auto",
) -> ScoringModel | ScoringLinearModel:
    """Load a model bundle: a directory, or a Hugging Face Hub name ``hf-hub:ORG/NAME[@REVISION]``.

    A Hub bundle is fetched once into the Hugging Face cache (``HF_HOME``, or
    ``cache_dir``) and read from there afterwards, offline too. ``device``
    (cpu, cuda[:N], mps, auto), ``precision`` (fp32, fp16, bf16), ``cache_dir``
    (the backbone's weights cache or the folder of its local checkpoint) and
    ``weights`` (the backbone checkpoint file itself) and ``encoder`` (auto,
    torch or onnx: what runs the image tower) say how images are embedded;
    scoring embeddings needs none of them. Raises InterestError (one line) if
    the bundle is missing, damaged or not cached while offline.
    """
    try:
        if is_hub_name(str(path)):
            model = load_model(resolve_bundle(str(path), cache_dir=cache_dir))
            model.name = str(path)
        else:
            model = load_model(path)
    except ImportError as exc:  # a torch-free install (interest[onnx]) has no LightGBM or scipy
        raise InterestError(
            f"{path}: loading a model bundle needs {(exc.name or 'lightgbm').split('.')[0]}: "
            "pip install 'interest[research]' (or score an ONNX export with interest.onnx)"
        ) from None
    return model.configure_backbone(device=device, precision=precision, cache_dir=cache_dir, weights=weights,
                                    encoder=encoder)
