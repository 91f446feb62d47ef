"""CLI commands of the collector: ``interest collect`` and ``interest import flickruser``."""

from __future__ import annotations

import functools
import sys
from enum import Enum
from pathlib import Path
from typing import Callable, List, Optional, TypeVar

import typer

from interest.cli.root import app
from interest.core.errors import InterestError


class Enrich(str, Enum):
    none = "none"
    owners = "owners"
    photos = "photos"


class ImageSize(str, Enum):
    z = "z"
    c = "c"
    b = "b"


import_app = typer.Typer(help="Import published datasets into a collection.", no_args_is_help=True)
app.add_typer(import_app, name="import", rich_help_panel="Collect")

F = TypeVar("F", bound=Callable)


def on_interrupt(hint: str) -> Callable[[F], F]:
    """Decorate a command: Ctrl-C ends it with exit status 130 and one line saying how to go on."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def run(*args, **kwargs):
            try:
                return command(*args, **kwargs)
            except KeyboardInterrupt:
                if sys.stderr.isatty():
                    sys.stderr.write("\n")  # a progress bar may hold the current line
                typer.echo(f"interrupted: {hint}", err=True)
                raise typer.Exit(130) from None

        return run  # type: ignore[return-value]

    return decorate


@app.command(rich_help_panel="Collect")
@on_interrupt("nothing is lost; re-run the same command with --resume to continue")
def collect(
    out: Path = typer.Argument(..., help="Collection directory to write (tables, images/, manifest.json)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML config (see configs/collect.yaml)."),
    users: Optional[str] = typer.Option(None, "--users", help="Seed user NSIDs, comma-separated."),
    users_file: Optional[Path] = typer.Option(None, "--users-file", help="File of seed NSIDs, one a line."),
    snowball: Optional[int] = typer.Option(None, "--snowball", help="Rounds of growing the users from favourites' owners."),
    max_users: Optional[int] = typer.Option(None, "--max-users", help="Cap on crawl users (0 = none)."),
    min_favorites: Optional[int] = typer.Option(None, "--min-favorites", help="Leave out users with fewer favourites."),
    max_favorites_per_user: Optional[int] = typer.Option(None, "--max-favorites-per-user", help="Newest N per user (0 = all)."),
    enrich: Optional[Enrich] = typer.Option(None, "--enrich", help="owners: their PRO status and occupation; photos: also per-photo faves and comments."),
    image_size: Optional[ImageSize] = typer.Option(None, "--image-size", help="z (640 px), c (800) or b (1024)."),
    no_download: bool = typer.Option(False, "--no-download", help="Collect metadata only."),
    rate: Optional[float] = typer.Option(None, "--rate", help="API calls an hour, all threads together (0 = unlimited)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Concurrent requests."),
    rest_url: Optional[str] = typer.Option(None, "--rest-url", help="REST endpoint (a local server for tests)."),
    image_host: Optional[str] = typer.Option(None, "--image-host", help="Replace the static image host, e.g. http://127.0.0.1:8000."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (calls per stage, time at the rate) and stop."),
    resume: bool = typer.Option(False, "--resume", help="Continue the crawl recorded in OUT."),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="With --resume: try again what failed for a transient reason (5xx/429, timeouts, truncated)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
) -> None:
    """Collect Flickr users' favourites (metadata and images) into a collection; resumable.

    The API key comes from FLICKR_API_KEY / FLICKR_API_SECRET or the config file.
    """
    from interest.stages.collect import CollectConfig, format_plan, plan_crawl
    from interest.stages.collect import collect as run_collect
    from interest.stages.collect.config import make_client
    from interest.core.config import load_config

    seed_list = [u.strip() for u in users.split(",") if u.strip()] if users is not None else None
    cfg = load_config(
        CollectConfig,
        config,
        users=seed_list,
        users_file=str(users_file) if users_file else None,
        snowball=snowball,
        max_users=max_users,
        min_favorites=min_favorites,
        max_favorites_per_user=max_favorites_per_user,
        enrich=enrich.value if enrich else None,
        image_size=image_size.value if image_size else None,
        download=False if no_download else None,
        rate=rate,
        threads=threads,
        rest_url=rest_url,
        image_host=image_host,
    )
    if dry_run:
        typer.echo(format_plan(plan_crawl(cfg, make_client(cfg, threads=1))))
        return
    summary = run_collect(out, cfg, progress=progress, resume=resume, retry_failed=retry_failed)
    if not progress:
        from interest.stages.collect import format_summary

        typer.echo(format_summary(summary))


@import_app.command("flickruser")
@on_interrupt("nothing is lost; re-run the same command to continue the downloads")
def import_flickruser(
    paths: List[Path] = typer.Argument(..., help="FlickrUser CSV file(s), then the output collection directory."),
    download: bool = typer.Option(False, "--download", help="Also download the images (same downloader as collect)."),
    image_host: Optional[str] = typer.Option(None, "--image-host", help="Replace the static image host (a mirror)."),
    threads: int = typer.Option(8, "--threads", help="Concurrent downloads."),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="With --download: try again the images that failed for a transient reason."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
) -> None:
    """Import the published FlickrUser CSVs (definition/additional, or the older single file) into OUT."""
    from interest.stages.collect import import_flickruser as run_import

    if len(paths) < 2:
        raise InterestError("give one or more FlickrUser CSV files and then the output directory")
    *csvs, out = paths
    summary = run_import(
        csvs, out, download=download, image_host=image_host, threads=threads, progress=progress, retry_failed=retry_failed
    )
    typer.echo(
        f"imported {summary['users']} users, {summary['photos']} photos, {summary['favorites']} favourites "
        f"into {out} (rows skipped: {summary['rows_skipped']}; images: {summary['images']})"
    )
    for column, rows in summary["out_of_range"].items():
        shown = ", ".join(str(r) for r in rows[:5]) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
        typer.echo(f"  {column}: {len(rows)} values out of range left empty (rows {shown})")
    if "retry_failed" in summary:
        r = summary["retry_failed"]
        typer.echo(f"retry-failed: {r['retried']} retried, {r['came_back']} came back")
