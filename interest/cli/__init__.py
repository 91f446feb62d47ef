"""The `interest` command line: one thin command per stage, over the library.

Each room of the package registers its commands from its own module here, so
the commands of a stage sit beside nothing else. Heavy libraries (torch,
lightgbm) are imported inside the commands, which keeps `interest --help` fast.
"""

from __future__ import annotations

import logging
import sys

import typer

from interest.errors import InterestError

app = typer.Typer(
    name="interest",
    help="Learn what makes images commonly or subjectively interesting from Flickr collections.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module registers its commands on `app`; the order here is the order of `interest --help`.
# isort: off
from interest.cli import collect, features, pipeline, analyze, apps  # noqa: E402,F401
# isort: on


def main() -> None:
    """Console entry point: a user's mistake is one line on stderr and exit status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        app()  # standalone mode: usage errors already exit 2 with a one-line message
    except InterestError as exc:
        if sys.stderr.isatty():
            sys.stderr.write("\n")  # a progress bar may hold the current line
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
