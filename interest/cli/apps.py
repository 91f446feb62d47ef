"""CLI commands for photo apps: curate, serve, export-onnx."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from interest.cli.root import app
from interest.cli.features import DEVICE_METAVAR, Precision, check_device, complete_device
from interest.cli.collect import import_app
from interest.cli.xmp import (EMBEDDING_CACHE_HELP, OVERWRITE_RATING_HELP, XMP_HELP, XMP_NAME_HELP, XmpName,
                              check_xmp_options, embedding_cache_for, write_xmp)
from interest.core.errors import InterestError

DEVICE_HELP = "Where the backbone runs."
PRECISION_HELP = "Backbone precision."
CACHE_HELP = "Hugging Face cache (backbone weights, Hub bundles) or the folder of a local checkpoint."
WEIGHTS_HELP = "The backbone's checkpoint file (for a bundle trained on embed --pretrained PATH)."


@app.command(rich_help_panel="Photo apps")
def curate(
    model: Path = typer.Argument(..., help="Model bundle directory or hf-hub:ORG/NAME."),
    photos_dir: Path = typer.Argument(..., help="Folder of photos (searched recursively)."),
    user: Optional[str] = typer.Option(None, help="Rank by this user's personal score (default: the common CI score)."),
    keep: Optional[int] = typer.Option(None, help="Select this many photos (best shot of each group first)."),
    top_percent: Optional[float] = typer.Option(None, help="Select this percentage of the photos instead."),
    similarity: Optional[float] = typer.Option(
        None, help="Cosine similarity from which two shots are near-duplicates (default: 0.92 for CLIP, 0.985 perceptual)."
    ),
    out: Optional[Path] = typer.Option(None, help="Write the table (all photos, selected first) as CSV."),
    copy_to: Optional[Path] = typer.Option(None, help="Copy the selected photos here, named <rank>_<name>."),
    xmp: bool = typer.Option(False, "--xmp", help=XMP_HELP + " The selected best shots are picked (digiKam pick label)."),
    xmp_name: XmpName = typer.Option(XmpName.ext, help=XMP_NAME_HELP),
    overwrite_rating: bool = typer.Option(False, "--overwrite-rating", help=OVERWRITE_RATING_HELP),
    reject_others: bool = typer.Option(
        False, "--reject-others", help="With --xmp: rate the near-duplicates that lost to a better shot -1 (rejected)."
    ),
    embedding_cache: Optional[Path] = typer.Option(None, help=EMBEDDING_CACHE_HELP),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    device: str = typer.Option("cpu", metavar=DEVICE_METAVAR, autocompletion=complete_device, help=DEVICE_HELP),
    precision: Precision = typer.Option(Precision.fp32, help=PRECISION_HELP),
    cache_dir: Optional[str] = typer.Option(None, help=CACHE_HELP),
    weights: Optional[Path] = typer.Option(None, help=WEIGHTS_HELP),
) -> None:
    """Group near-duplicate shots (bursts, re-edits), keep the best of each and rank what remains."""
    import interest
    from interest.apps.curate import curate as run_curate

    check_xmp_options(xmp, overwrite_rating, reject_others)
    check_device(device)
    bundle = interest.load(model, device=device, precision=precision.value, cache_dir=cache_dir, weights=weights)
    check_device(device, bundle.backbone_id)  # a GPU asked for a backbone that runs on the CPU only
    table = run_curate(
        bundle, photos_dir, user=user, keep=keep, top_percent=top_percent, similarity=similarity,
        out=out, copy_to=copy_to, progress=progress, cache=embedding_cache_for(embedding_cache, xmp),
    )
    selected = table[table["selected"]]
    if out is None:
        import pandas as pd

        with pd.option_context("display.max_rows", 200, "display.width", 200):
            cols = [c for c in ("rank", "path", "group", "group_size", "score", "trend_group") if c in selected]
            typer.echo(selected[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    n_groups = int(table["group"].nunique())
    n_bad = int(table["error"].notna().sum())
    typer.echo(
        f"selected {len(selected)} of {len(table)} photos ({n_groups} distinct shots after grouping near-duplicates"
        + (f", {n_bad} unreadable" if n_bad else "")
        + ")"
        + (f"; wrote {out}" if out else "")
        + (f"; copied to {copy_to}" if copy_to else ""),
        err=True,
    )
    if xmp:
        write_xmp(bundle, table, photos_dir, user=user, naming=xmp_name, overwrite_rating=overwrite_rating,
                  reject_others=reject_others, progress=progress)


@app.command(rich_help_panel="Photo apps")
def serve(
    model: Path = typer.Argument(..., help="Model bundle directory (personalised heads are saved into it)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; the default answers only this machine."),
    port: int = typer.Option(8000, help="Port to listen on."),
    workers: int = typer.Option(1, help="Worker processes (each loads the model once)."),
    max_upload_mb: float = typer.Option(20.0, help="Largest image file accepted, in MiB."),
    max_pixels: int = typer.Option(40_000_000, help="Largest decoded image accepted (width x height)."),
    max_batch: int = typer.Option(32, help="Most images in one request."),
    timeout: float = typer.Option(60.0, help="Seconds a request may take, queueing included."),
    batch_wait_ms: float = typer.Option(5.0, help="How long a scoring batch waits for more requests (micro-batching)."),
    batch_images: int = typer.Option(64, help="Most images embedded in one batch across requests."),
    max_rows: int = typer.Option(1024, help="Most precomputed embeddings in one JSON request (its body limit follows)."),
    device: str = typer.Option("cpu", metavar=DEVICE_METAVAR, autocompletion=complete_device, help=DEVICE_HELP),
    precision: Precision = typer.Option(Precision.fp32, help=PRECISION_HELP),
    cache_dir: Optional[str] = typer.Option(None, help=CACHE_HELP),
    weights: Optional[Path] = typer.Option(None, help=WEIGHTS_HELP),
) -> None:
    """Serve the model over HTTP: POST /score, POST /users/{user}/personalize, GET /health, /ready, /model; docs at /docs."""
    from interest.core.errors import require

    for module in ("fastapi", "uvicorn", "multipart"):  # multipart: python-multipart, for uploads
        require(module, "serve", "interest serve")
    from interest.apps.service import Limits
    from interest.apps.service import serve as run_service

    if workers < 1:
        raise InterestError(f"--workers {workers}: give at least 1")
    if batch_wait_ms < 0 or batch_images < 1 or max_rows < 1:
        raise InterestError("--batch-wait-ms must be >= 0, --batch-images and --max-rows >= 1")
    limits = Limits(
        max_upload_bytes=int(max_upload_mb * 2**20), max_pixels=max_pixels, max_batch=max_batch, timeout_s=timeout,
        batch_wait_s=batch_wait_ms / 1000, batch_images=batch_images, max_rows=max_rows,
    )
    check_device(device)
    backbone = {"device": device, "precision": precision.value, "cache_dir": cache_dir,
                "weights": None if weights is None else str(weights)}
    run_service(model, host=host, port=port, workers=workers, limits=limits, backbone=backbone)


@app.command("export-onnx", rich_help_panel="Photo apps")
def export_onnx(
    model: Path = typer.Argument(..., help="Model bundle directory."),
    out: Path = typer.Argument(..., help="Directory to write the ONNX files to."),
    opset: int = typer.Option(17, help="ONNX opset of the backbone graph."),
    cache_dir: Optional[str] = typer.Option(None, help="Where open_clip keeps the backbone's weights (as for `interest embed`)."),
) -> None:
    """Write the visual backbone and the heads as ONNX, for torch-free scoring with `interest.onnx`."""
    from interest.apps.export_onnx import export_onnx as run_export

    files = run_export(model, out, opset=opset, cache_dir=cache_dir)
    typer.echo(f"wrote {', '.join(str(f) for f in files)}")


@import_app.command("study-model")
def import_study_model(
    pth: Path = typer.Argument(..., help="The study's CI_R_model.pth (read with torch.load(weights_only=True))."),
    out: Path = typer.Argument(..., help="Model bundle directory to write."),
    group_cuts: Optional[str] = typer.Option(None, help="Trend-group cut points LOW,HIGH on the CI score."),
    cuts_from: Optional[Path] = typer.Option(
        None, help="A collection from `interest import flickruser`: cut points from its published scores."
    ),
    background: Optional[Path] = typer.Option(
        None, help="A collection with embeddings of the backbone: the user heads' background (default: --cuts-from's)."
    ),
) -> None:
    """Import the study's published CI_R model as a bundle over openclip/ViT-L-14-336/openai (docs/apps.md)."""
    from interest.models.study import import_study_model as run_import

    cuts = None
    if group_cuts is not None:
        try:
            cuts = tuple(float(v) for v in group_cuts.split(","))
        except ValueError:
            raise InterestError(f"--group-cuts {group_cuts}: give two numbers, LOW,HIGH") from None
    model = run_import(pth, out, group_cuts=cuts, cuts_from=cuts_from, background=background)
    groups = f"trend groups at {model.group_cuts}" if model.group_cuts else "no trend groups (give --group-cuts)"
    typer.echo(f"wrote {out}: the study's common head over {model.backbone_id}, {groups}")


@app.command("export-hub", rich_help_panel="Photo apps")
def export_hub(
    model: str = typer.Argument(..., help="Model bundle directory or hf-hub:ORG/NAME."),
    out: Path = typer.Argument(..., help="New folder to write (upload it with `hf upload ORG/NAME OUT`)."),
    license: str = typer.Option("other", help="Licence for the model card's front matter (e.g. mit, cc-by-nc-4.0)."),
) -> None:
    """Write a Hugging Face Hub-ready folder: the bundle and a model card (README.md)."""
    from interest.apps.hub_export import export_hub as run_export

    typer.echo(f"wrote {run_export(model, out, license=license)}")
