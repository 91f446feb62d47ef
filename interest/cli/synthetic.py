"""CLI commands of the synthetic world: generate one, or run the whole pipeline on one (demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from interest.cli.root import app


@app.command(rich_help_panel="Synthetic world")
def synthetic(
    out: Path = typer.Argument(..., help="Directory to write the synthetic collection to."),
    users: int = typer.Option(300, help="Number of favouriting users."),
    photos: int = typer.Option(3000, help="Number of photos (each someone's favourite)."),
    topics: int = typer.Option(24, help="Number of topics (a few broadly appealing, most niche)."),
    render: bool = typer.Option(True, help="Render each photo as a JPEG under images/."),
    embed_dim: Optional[int] = typer.Option(None, help="Also write embeddings of this size directly (backbone synthetic/d<D>)."),
    seed: int = typer.Option(0, help="Random seed."),
    overwrite: bool = typer.Option(False, help="Replace an earlier synthetic world at OUT."),
) -> None:
    """Generate a synthetic Flickr world with known ground truth (offline; for demos, tests and benchmarks)."""
    from interest.synthetic.world import generate_world

    summary = generate_world(out, n_users=users, n_photos=photos, n_topics=topics, render=render, embed_dim=embed_dim, seed=seed, overwrite=overwrite)
    typer.echo(f"wrote a synthetic world to {out}: {_summary_line(summary)}")


@app.command(rich_help_panel="Synthetic world")
def demo(
    out: Path = typer.Option(Path("demo-output"), help="Directory for the world, collection, model and report."),
    users: int = typer.Option(300, help="Users in the synthetic world."),
    photos: int = typer.Option(3000, help="Photos in the synthetic world."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Run the whole pipeline offline on a small synthetic world and print the metrics."""
    from interest.apps.demo import run_demo

    run_demo(out, n_users=users, n_photos=photos, seed=seed)


def _summary_line(summary: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in summary.items() if isinstance(v, (int, float, str)))
