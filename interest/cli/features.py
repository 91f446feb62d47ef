"""CLI commands of the image-features room: embed, characterize."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from interest.cli.root import app
from interest.cli.collect import on_interrupt
from interest.core.errors import InterestError

# --device stays a string because it takes an index (cuda:1); its choices still complete in the
# shell, show in --help and are checked here, so that a typo is a one-line error.
DEVICES = ("auto", "cpu", "cuda", "mps")
DEVICE_METAVAR = "auto|cpu|cuda[:N]|mps"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"
    int8 = "int8"


class Encoder(str, Enum):
    auto = "auto"
    torch = "torch"
    onnx = "onnx"


class Engine(str, Enum):
    local = "local"
    ray = "ray"


def complete_device(incomplete: str) -> list[str]:
    """Shell completion of --device."""
    return [d for d in DEVICES if d.startswith(incomplete)]


def check_device(device: str, backbone_id: Optional[str] = None) -> None:
    """A one-line error for an unknown --device, or an accelerator with the CPU-only perceptual backbone."""
    if device.split(":")[0] not in DEVICES:
        raise InterestError(f"--device {device}: use one of {DEVICE_METAVAR}")
    if backbone_id is not None and backbone_id.startswith("perceptual/") and device.split(":")[0] in ("cuda", "mps"):
        raise InterestError(
            f"--device {device}: backbone {backbone_id} is image statistics computed on the CPU, not a model; "
            "leave out --device (or embed with an open_clip model to use the GPU)"
        )


@app.command(rich_help_panel="Features")
@on_interrupt("the embeddings finished so far are kept; re-run the same command to continue")
def embed(
    data: Path = typer.Argument(..., help="Collection directory, or a plain folder of images (then give --out)."),
    model: str = typer.Option("ViT-B-32", help="open_clip model name, or hf-hub:ORG/NAME."),
    pretrained: str = typer.Option(
        "laion2b_s34b_b79k", help="Pretrained tag, a local checkpoint PATH, or none (random weights: tests only)."
    ),
    backbone: Optional[str] = typer.Option(
        None, help="A backbone id instead of --model/--pretrained, e.g. perceptual/v1 (weight-free, offline)."
    ),
    cache_dir: Optional[str] = typer.Option(None, help="Where open_clip keeps downloaded weights (default: HF_HOME)."),
    device: str = typer.Option("auto", metavar=DEVICE_METAVAR, autocompletion=complete_device, help="Where the model runs."),
    batch_size: Optional[int] = typer.Option(None, help="Images per model batch (default: 64 on CPU, 256 on GPU)."),
    workers: Optional[int] = typer.Option(None, help="Decoding processes beside the model (default: by device)."),
    precision: Precision = typer.Option(
        Precision.fp32, help="fp16/bf16: torch autocast (fp16 is the fast choice on a GPU); int8: onnxruntime's "
                             "quantised model on the CPU, its own backbone id <id>@int8 (agreement with fp32 printed)."
    ),
    encoder: Encoder = typer.Option(
        Encoder.auto, help="What runs the image model: auto (onnxruntime on a CPU when installed and exact, else "
                           "torch), torch (eager, the reference) or onnx."
    ),
    max_pixels: int = typer.Option(89_478_485, help="Images with more pixels are recorded as bad (decompression bombs)."),
    out: Optional[Path] = typer.Option(
        None, help="For a plain folder of images: the collection to write (default: <folder>_interest beside it)."
    ),
    part_size: int = typer.Option(1024, help="Embeddings per Parquet part written during the run (what a killed run keeps)."),
    progress: bool = typer.Option(True, help="Show progress bars on stderr."),
    engine: Engine = typer.Option(Engine.local, help="ray: the same pipeline on a Ray cluster (docs/apps.md)."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address for --engine ray (default: start Ray on this machine)."),
) -> None:
    """Embed a collection's photos (or a folder of images) into features/<backbone-id>/embeddings.parquet."""
    from interest.core.collection import has_table
    from interest.imaging.backbones import check_encoder, load_backbone, load_openclip
    from interest.pipeline.local import embed_collection
    from interest.pipeline.reader import folder_collection

    check_device(device, backbone)
    if precision is Precision.int8 and device == "auto":
        device = "cpu"  # int8 is onnxruntime's CPU encoder
    check_encoder(encoder.value, precision.value, device)
    if not data.is_dir():
        raise InterestError(f"{data}: not a directory (give a collection directory or a folder of images)")
    is_collection = has_table(data, "photos")
    if is_collection and out is not None and out.resolve() != data.resolve():
        raise InterestError(f"{data}: is a collection, so --out does not apply; embeddings go under its features/")
    options = dict(batch_size=batch_size, workers=workers, max_pixels=max_pixels, part_size=part_size, progress=progress)
    gpu_actors = engine is Engine.ray and device.startswith("cuda")
    if gpu_actors:  # the encoder actors load the backbone on their GPUs; the driver's copy only names the space
        chosen = None
        options.update(model=model, pretrained=pretrained, backbone_id=backbone)
    else:
        load = dict(device="cpu" if engine is Engine.ray else device, cache_dir=cache_dir, precision=precision.value,
                    encoder=encoder.value)
        # The backbone is built here so that its encoder can report what it measured once the run is done
        # (on Ray the CPU actors run this backbone's onnxruntime tower, and send back what they measured).
        chosen = load_backbone(backbone, **load) if backbone else load_openclip(model, pretrained, **load)
        options["backbone"] = chosen
    if engine is Engine.ray:  # the same pipeline as Ray tasks and actors
        from interest.pipeline.ray import embed_collection_ray as embed_collection

        options.update(address=address, cache_dir=cache_dir, precision=precision.value, encoder=encoder.value,
                       num_gpus=1.0 if gpu_actors else 0.0)
    if is_collection:
        path = embed_collection(data, **options)
        root = data
    else:
        root = out if out is not None else data.resolve().parent / f"{data.resolve().name}_interest"
        path = embed_collection(folder_collection(data, root), image_roots=[data], **options)
    _report(root, path)
    if getattr(chosen, "agreement", None) is not None:
        typer.echo(chosen.agreement.summary())


def _report(root: Path, path: Path) -> None:
    from interest.core.collection import read_manifest, unusable_photos

    backbone_id = path.parent.relative_to(Path(root) / "features").as_posix()
    entry = read_manifest(root)["tables"].get(f"features/{backbone_id}", {})
    bad = unusable_photos(root)
    typer.echo(
        f"wrote {path}: {entry.get('rows', '?')} embeddings ({entry.get('embedded', 0)} new, "
        f"{entry.get('cached', 0)} cached), {bad} photos not usable (see photos.status, status_reason)"
    )


@app.command(rich_help_panel="Features")
def characterize(
    data: Path = typer.Argument(..., help="Collection directory."),
    backbone: Optional[str] = typer.Option(
        None, help="CLIP embeddings for the zero-shot scores (default: the collection's only openclip/... ones)."
    ),
    clip: Optional[str] = typer.Option(
        None, help="MODEL/PRETRAINED of a CLIP model to use (embeds the photos with it first if needed)."
    ),
    prompts: Optional[Path] = typer.Option(None, help="Prompt sets (default: the package's; see configs/prompts.yaml)."),
    aesthetic_head: Optional[Path] = typer.Option(
        None, help="An aesthetic head: .npz (weight, bias, backbone_id) or a LAION predictor .pth over "
                   "openclip/ViT-L-14/openai (linear or MLP); without it: aesthetic_proxy."
    ),
    cache_dir: Optional[str] = typer.Option(None, help="Where open_clip keeps downloaded weights (default: HF_HOME)."),
    device: str = typer.Option("auto", metavar=DEVICE_METAVAR, autocompletion=complete_device, help="Where CLIP runs."),
    workers: Optional[int] = typer.Option(None, help="Decoding processes (default: the cores, at most 8)."),
    progress: bool = typer.Option(True, help="Show progress bars on stderr."),
) -> None:
    """Write features/characteristics.parquet: emotions, styles, perceptual measures, aesthetic score."""
    from interest.core.collection import has_table
    from interest.stages.characterize import characterize as run

    check_device(device)
    if not has_table(data, "photos"):
        raise InterestError(f"{data}: not a collection (no photos.parquet); run `interest embed` on a folder first")
    path = run(data, backbone=backbone, clip=clip, prompts=prompts, aesthetic_head=aesthetic_head,
               cache_dir=cache_dir, device=device, workers=workers, progress=progress)
    import pyarrow.parquet as pq

    typer.echo(f"wrote {path}: {pq.read_metadata(path).num_rows} photos, {len(pq.read_schema(path).names) - 1} columns")
