"""CLI commands of the model: label, train, evaluate, score, personalize."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperCommand

from interest.cli.root import app
from interest.cli.features import DEVICE_METAVAR, Engine, Precision, check_device, complete_device
from interest.cli.xmp import (EMBEDDING_CACHE_HELP, OVERWRITE_RATING_HELP, XMP_HELP, XMP_NAME_HELP, XmpName,
                              check_xmp_options, embedding_cache_for, write_xmp)
from interest.core.errors import InterestError
from interest.core.vocabulary import TREND_GROUPS


class Commonality(str, Enum):
    users = "users"
    size_adjusted = "size_adjusted"


class LabelMethod(str, Enum):
    image = "image"
    paper = "paper"


@app.command(rich_help_panel="Model")
def label(
    data: Path = typer.Argument(..., help="Collection directory."),
    backbone: Optional[str] = typer.Option(None, help="Backbone id under features/ (default: the only one present)."),
    clusters: Optional[int] = typer.Option(None, help="k-means clusters (default: 200, the paper's, with --method paper; 100 with image)."),
    seed: int = typer.Option(0, help="Random seed for the split and the clustering."),
    commonality: Commonality = typer.Option(Commonality.users, help="users: the paper's distinct-user count; size_adjusted: relative to chance."),
    test_fraction: float = typer.Option(0.2, help="Share of photos held out as the test set."),
    merge_ratio: float = typer.Option(0.6, help="Partitions per cluster after merging centroids (the paper: ~120 of 200)."),
    group_cuts: Optional[str] = typer.Option(None, help="CI cut points 'LOWER,UPPER' for the trend groups (default: terciles)."),
    method: LabelMethod = typer.Option(LabelMethod.image, help="image: each photo's distinct users, zero-truncated, smoothed over the embedding (default, docs/labels.md); paper: the study's clusters -> merged partitions -> distinct users."),
    user_test_fraction: float = typer.Option(0.2, help="Share of users held out whole (never labelled, and left out of the common model's training; the bundle's user heads still learn from them) for evaluate's new-user ranking; 0 with --method paper is the study's definition."),
) -> None:
    """Compute the CI score (image-level by default, or the paper's), partitions and trend groups; writes labels.parquet."""
    from interest.stages.labels import label_collection

    _need_dir(data)
    cuts = None
    if group_cuts is not None:
        try:
            cuts = [float(v) for v in group_cuts.split(",")]
        except ValueError:
            raise InterestError(f"--group-cuts {group_cuts!r}: give two numbers like 0.05,0.2") from None
    labels = label_collection(
        data,
        backbone=backbone,
        clusters=clusters,
        merge_ratio=merge_ratio,
        seed=seed,
        test_fraction=test_fraction,
        commonality=commonality.value,
        group_cuts=cuts,
        method=method.value,
        user_test_fraction=user_test_fraction,
    )
    counts = labels["trend_group"].value_counts().sort_index()
    groups = ", ".join(f"{name} {int(counts.get(i, 0))}" for i, name in enumerate(TREND_GROUPS))
    typer.echo(f"wrote {data / 'labels.parquet'}: {len(labels)} photos, {labels['partition'].nunique()} partitions ({groups})")


@app.command(rich_help_panel="Model")
def train(
    data: Path = typer.Argument(..., help="Labelled collection directory."),
    out: Path = typer.Option(..., "--out", help="Model bundle directory to write."),
    backbone: Optional[str] = typer.Option(None, help="Backbone id under features/ (default: the only one present)."),
    config: Optional[Path] = typer.Option(None, help="Training config (YAML), e.g. configs/train.yaml."),
    seed: Optional[int] = typer.Option(None, help="Override the config's seed."),
    evaluation_only: bool = typer.Option(
        False, "--evaluation-only",
        help="Fit everything on the label split's training users and photos only (an evaluation bundle, "
        "not for apps); `interest evaluate` refits an app bundle so itself.",
    ),
) -> None:
    """Train the common model, the trend-group classifier and the per-user heads; writes a model bundle.

    The bundle learns from the whole collection: the common model and the
    user heads from every labelled photo and every user's favourites, the
    photos and users `interest label` held out included, so every user with a
    favourite can be scored with `--user`. `--evaluation-only` keeps the label
    split (what `interest evaluate` measures on the held-out photos and users).
    """
    from interest.core.config import load_config
    from interest.stages.train import TrainConfig, train_model

    _need_dir(data)
    cfg = load_config(TrainConfig, config, seed=seed)
    model = train_model(data, out, backbone=backbone, config=cfg, evaluation_only=evaluation_only)
    typer.echo(f"wrote model bundle {out} (backbone {model.backbone_id}, {len(model.users)} user heads)")
    blend = model.metadata["metrics"]["ridge"].get("faves_blend")
    if blend:
        # what the out-of-fold fit made of Flickr's faves per view (docs/models.md): near 0 = nothing
        typer.echo(f"image-level model: own prediction x {blend[0]:.2f} + faves-per-view prior x {blend[1]:.2f}")


@app.command(rich_help_panel="Model")
def evaluate(
    model: Path = typer.Argument(..., help="Model bundle directory."),
    data: Path = typer.Argument(..., help="Labelled collection directory."),
    out: Optional[Path] = typer.Option(None, help="Write the metrics as JSON here."),
    backbone: Optional[str] = typer.Option(None, help="Backbone id under features/ (default: the model's)."),
) -> None:
    """Evaluate a model on the collection's held-out photos and users; prints a table.

    An app bundle learned from those photos and users too: it is refitted on
    the label split first (as `interest train --evaluation-only` fits it),
    which takes as long as training.
    """
    import interest
    from interest.core.collection import write_json_atomic
    from interest.stages.evaluate import evaluate as run_evaluation
    from interest.stages.evaluate import format_metrics

    _need_dir(data)
    bundle = interest.load(model)
    metrics = run_evaluation(bundle, data, backbone=backbone)
    typer.echo(format_metrics(metrics))
    if out is not None:
        write_json_atomic(out, metrics)
        typer.echo(f"wrote {out}")


@app.command(rich_help_panel="Model")
def score(
    model: Path = typer.Argument(..., help="Model bundle directory."),
    inputs: List[Path] = typer.Argument(..., help="Image files or folders, or one Parquet file of embeddings (photo_id, embedding)."),
    user: Optional[str] = typer.Option(None, help="Add this user's personal score and deviation."),
    out: Optional[Path] = typer.Option(None, help="Write .csv, .parquet or .json (by suffix); a table on stdout without it."),
    engine: Engine = typer.Option(Engine.local, help="ray: INPUT is then one Parquet embeddings file or a collection (docs/apps.md)."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address for --engine ray (default: start Ray on this machine)."),
    device: str = typer.Option("cpu", metavar=DEVICE_METAVAR, autocompletion=complete_device, help="Where the backbone runs."),
    precision: Precision = typer.Option(Precision.fp32, help="Backbone precision."),
    cache_dir: Optional[str] = typer.Option(None, help="Hugging Face cache (weights, Hub bundles) or folder of a local checkpoint."),
    weights: Optional[Path] = typer.Option(None, help="The backbone's checkpoint file (a bundle trained on --pretrained PATH)."),
    xmp: bool = typer.Option(False, "--xmp", help=XMP_HELP),
    xmp_name: XmpName = typer.Option(XmpName.ext, help=XMP_NAME_HELP),
    overwrite_rating: bool = typer.Option(False, "--overwrite-rating", help=OVERWRITE_RATING_HELP),
    embedding_cache: Optional[Path] = typer.Option(None, help=EMBEDDING_CACHE_HELP),
) -> None:
    """Score images or precomputed embeddings: CI score, trend group and group probabilities.

    MODEL is a bundle directory or a Hugging Face Hub name, hf-hub:ORG/NAME[@REVISION].

    Unreadable images are skipped, each named on stderr with the reason; the
    command fails (exit 2) only when no image at all could be scored.

    --xmp writes each image's sidecar (IMG.jpg.xmp): 1-5 stars, the trend group
    as a keyword, the scores; a person's own metadata and rating are kept.
    Exit 2 when a sidecar was left alone (hostile or malformed), after writing the others.
    """
    import interest

    check_xmp_options(xmp, overwrite_rating)
    if xmp and (engine is Engine.ray or any(p.suffix.lower() == ".parquet" for p in inputs)):
        raise InterestError("--xmp writes sidecars beside image files; give images or folders, not embeddings")
    if engine is Engine.ray:
        from interest.apps.ray_scoring import score_ray

        if len(inputs) != 1 or not (inputs[0].is_dir() or inputs[0].suffix == ".parquet"):
            raise InterestError("--engine ray scores one Parquet embeddings file or one collection directory")
        _write_scores(score_ray(model, inputs[0], user=user, address=address), out)
        return
    check_device(device)
    bundle = interest.load(model, device=device, precision=precision.value, cache_dir=cache_dir, weights=weights)
    check_device(device, bundle.backbone_id)  # a GPU asked for a backbone that runs on the CPU only
    resolved = _resolve_inputs(inputs)
    if isinstance(resolved, Path):
        table = bundle.score(resolved, user=user, progress=False)  # a collection's table is checked to be of its backbone
    else:
        table = _score_images(bundle, resolved, user, embedding_cache_for(embedding_cache, xmp))
    _write_scores(table, out)
    if xmp:
        write_xmp(bundle, table, None, user=user, naming=xmp_name, overwrite_rating=overwrite_rating)


def _score_images(bundle, paths: List[Path], user: Optional[str], cache: Optional[Path] = None):
    """Score image files and folders, skipping (and naming on stderr) every file that cannot be read."""
    table = bundle.score(paths, user=user, errors="coerce", cache=cache)
    failed = table["error"].notna()
    for path, reason in table.loc[failed, ["path", "error"]].itertuples(index=False):
        typer.echo(f"skipped {path}: {reason}", err=True)
    if failed.all():
        raise InterestError(f"none of the {len(table)} images could be read (reasons above); nothing was scored")
    table = table[~failed].drop(columns="error").reset_index(drop=True)
    if "trend_group" in table:  # a bundle with only a common head may have no trend groups
        table["trend_group"] = table["trend_group"].astype("int64")
    return table


class _SeveralValuesCommand(TyperCommand):
    """A command whose list options each take several values: ``--liked A B C --disliked D``.

    click reads one value per occurrence, so ``--liked A B`` is rewritten to
    ``--liked A --liked B`` before parsing; the options stay ordinary ones,
    listed in --help and completed by the shell.
    """

    several = ("--liked", "--disliked")

    def parse_args(self, ctx, args: List[str]) -> List[str]:
        rewritten, current = [], None
        for arg in args:
            flag = arg.partition("=")[0]
            if arg.startswith("-"):
                current = flag if flag in self.several else None
            elif current is not None and rewritten[-1] != current:
                rewritten.append(current)  # a further value of the list option before it
            rewritten.append(arg)
        return super().parse_args(ctx, rewritten)


@app.command(rich_help_panel="Model", cls=_SeveralValuesCommand)
def personalize(
    model: Path = typer.Argument(..., help="Model bundle directory (updated in place)."),
    user: str = typer.Option(..., help="User id whose head to fit or replace."),
    device: str = typer.Option("cpu", metavar=DEVICE_METAVAR, autocompletion=complete_device, help="Where the backbone runs."),
    precision: Precision = typer.Option(Precision.fp32, help="Backbone precision."),
    cache_dir: Optional[str] = typer.Option(None, help="Hugging Face cache or folder of the backbone's local checkpoint."),
    weights: Optional[Path] = typer.Option(None, help="The backbone's checkpoint file."),
    liked: List[Path] = typer.Option(
        ..., "--liked", metavar="INPUT...", help="Photos the user likes: image files, folders, or one Parquet embeddings file."
    ),
    disliked: Optional[List[Path]] = typer.Option(
        None, "--disliked", metavar="INPUT...", help="Photos the user dislikes (optional), in the same forms."
    ),
) -> None:
    """Fit a user's head from photos they like (and optionally dislike); saves it into the bundle.

    Example: `interest personalize MODEL --user alice --liked a.jpg b.jpg trip/ --disliked c.jpg`.
    One liked photo already gives a head: it borrows from training users whose
    favourites resemble the liked photos (calibrated for 1, 2, 4 and 8 photos).
    """
    import interest

    from interest.bundle.io import editing

    check_device(device)
    # loaded and saved under the bundle's lock: a service personalising it meanwhile loses no head
    with editing(model, lambda: interest.load(model, device=device, precision=precision.value, cache_dir=cache_dir,
                                              weights=weights)) as bundle:
        bundle.personalize(user, _resolve_inputs(liked), _resolve_inputs(disliked) if disliked else None)
    typer.echo(f"personalized user {user} in {model}")


# ---------------------------------------------------------------- helpers


def _need_dir(path: Path) -> None:
    if not path.is_dir():
        raise InterestError(f"{path}: not a directory; give a collection directory")


def _resolve_inputs(paths: List[Path]):
    """One Parquet embeddings file as a path; otherwise the image files and folders, checked to exist."""
    for path in paths:
        if not path.exists():
            raise InterestError(f"{path}: no such file or folder")
    parquet = [p for p in paths if p.suffix == ".parquet"]
    if parquet:
        if len(paths) > 1:
            raise InterestError(f"{parquet[0]}: give either one Parquet embeddings file or images, not both")
        return parquet[0]
    return list(paths)


def _write_scores(table, out: Optional[Path]) -> None:
    from interest.core.collection import write_csv_atomic

    if out is None:
        import pandas as pd

        with pd.option_context("display.max_rows", 200, "display.width", 200):
            typer.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))  # ci_score is ~0.001-0.05: significant digits
        return
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet", ".json"):
        raise InterestError(f"{out}: unknown output format '{suffix}'; use .csv, .parquet or .json")
    if suffix == ".csv":
        write_csv_atomic(out, table)
    else:
        _write_other(table, out, suffix)
    typer.echo(f"wrote {len(table)} scores to {out}", err=True)


def _write_other(table, out: Path, suffix: str) -> None:
    """Parquet or JSON scores, atomically (their cells are data, never formulas)."""
    from interest.core.collection import atomic_path

    with atomic_path(out) as tmp:
        if suffix == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_json(tmp, orient="records", indent=2)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
