"""What `interest score --xmp` and `interest curate --xmp` share: the options' help, the sidecar naming and writing."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

XMP_HELP = "Write stars, keywords and scores into XMP sidecars beside the images, for darktable, digiKam, Immich (docs/apps.md)."
XMP_NAME_HELP = "Sidecar name when none exists yet: ext = IMG.jpg.xmp (darktable, Immich), stem = IMG.xmp (Lightroom)."
OVERWRITE_RATING_HELP = "Replace a rating (or pick label) the person set; by default it is kept."
EMBEDDING_CACHE_HELP = ("Keep the images' embeddings here, by file content, so that scoring again embeds only new "
                        "photos; with --xmp it defaults to ~/.cache/interest/embeddings.")


class XmpName(str, Enum):
    ext = "ext"
    stem = "stem"


def check_xmp_options(xmp: bool, overwrite_rating: bool, reject_others: bool = False) -> None:
    """One line when an option that only changes what goes into sidecars is given without --xmp."""
    from interest.core.errors import InterestError

    for given, flag in ((overwrite_rating, "--overwrite-rating"), (reject_others, "--reject-others")):
        if given and not xmp:
            raise InterestError(f"{flag} changes what goes into XMP sidecars; give --xmp too")


def embedding_cache_for(cache: Optional[Path], xmp: bool) -> Optional[Path]:
    """The embedding cache a command uses: the one given, else the user's cache when writing sidecars."""
    if cache is not None or not xmp:
        return cache
    from interest.pipeline.file_cache import default_cache_dir

    return default_cache_dir()


def write_xmp(bundle, table, photos_dir: Optional[Path], *, user: Optional[str], naming: XmpName,
              overwrite_rating: bool, reject_others: bool = False, progress: bool = True) -> None:
    """Write the sidecars of a score or curation table; each skipped sidecar and a summary on stderr.

    Exit status 2 when a sidecar was left alone (hostile, malformed, shared); the others are written.
    """
    from interest.apps.xmp import write_sidecars

    report = write_sidecars(bundle, table, photos_dir, user=user, naming=naming.value,
                            overwrite_rating=overwrite_rating, reject_others=reject_others, progress=progress)
    for path, reason in report.skipped:
        typer.echo(f"skipped {path}: {reason}", err=True)
    typer.echo(report.summary(details=False), err=True)
    if report.skipped:
        raise typer.Exit(2)
