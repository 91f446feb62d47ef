"""CLI commands of the analysis room: `interest analyze` and `interest report`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from interest.cli.root import app
from interest.core.errors import InterestError, not_a_model_bundle


@app.command(rich_help_panel="Analysis")
def analyze(
    data: Path = typer.Argument(..., help="Labelled collection directory."),
    model: Optional[Path] = typer.Option(None, help="Model bundle: adds importance, partial dependence and personal taste."),
    out: Path = typer.Option(Path("analysis"), help="Folder for the tables (one CSV each)."),
    seed: int = typer.Option(0, help="Random seed of the bootstrap and the photo samples."),
    n_boot: int = typer.Option(1000, help="Bootstrap replicates per interval."),
    progress: bool = typer.Option(True, help="Show progress bars on stderr."),
) -> None:
    """Tables of what makes photos commonly vs subjectively interesting, with intervals and tests; writes CSVs."""
    from interest.stages.analyze import analyze as run

    _check(data, model, n_boot)
    tables = run(data, model=model, out=out, seed=seed, n_boot=n_boot, progress=progress)
    typer.echo(f"wrote {len(tables)} tables to {out}: {', '.join(tables)}")
    for section, note in tables["notes"].itertuples(index=False):
        typer.echo(f"note ({section}): {note}", err=True)


@app.command(rich_help_panel="Analysis")
def report(
    data: Path = typer.Argument(..., help="Labelled collection directory."),
    model: Optional[Path] = typer.Option(None, help="Model bundle: adds the model card, drivers and personal taste."),
    out: Path = typer.Option(Path("report.html"), help="HTML file to write; its tables go to <name>_tables/ beside it."),
    seed: int = typer.Option(0, help="Random seed of the bootstrap and the photo samples."),
    n_boot: int = typer.Option(1000, help="Bootstrap replicates per interval."),
    progress: bool = typer.Option(True, help="Show progress bars on stderr."),
) -> None:
    """One self-contained HTML report (figures, tables, model card) that opens offline and prints cleanly."""
    from interest.stages.analyze import report as run

    _check(data, model, n_boot)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InterestError(f"{out}: the report is an HTML file; give a name ending in .html")
    path = run(data, model=model, out=out, seed=seed, n_boot=n_boot, progress=progress)
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and its tables in {path.with_name(path.stem + '_tables')}")


def _check(data: Path, model: Optional[Path], n_boot: int) -> None:
    if not data.is_dir():
        raise InterestError(f"{data}: not a directory; give a labelled collection directory")
    if model is not None and not model.is_dir():
        raise not_a_model_bundle(model)
    if n_boot < 0:
        raise InterestError(f"--n-boot {n_boot}: give 0 (no intervals) or more replicates")
