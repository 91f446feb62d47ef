"""The root of the `interest` command: the Typer app every command module registers on, and its global options.

A module of its own so that the command modules import it without importing
the package that imports them (no import cycle).
"""

from __future__ import annotations

import logging
import warnings
from enum import Enum
from typing import Optional

import typer
from typer.core import TyperOption

app = typer.Typer(
    name="interest",
    help="Learn what makes images commonly or subjectively interesting from Flickr collections.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)

# typer's rich help prints a value type after every option, so flags (which take no value, --help
# included) read "--render <bool>"; flags and counters show no type, as in click's plain help.
_display_type_rich = TyperOption.display_type_rich
TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag or self.count else _display_type_rich(self, ctx)


class LogLevel(str, Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def _version(value: bool) -> None:
    if value:
        from interest import __version__

        typer.echo(f"interest {__version__}")
        raise typer.Exit()


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python warnings as one log line (no source file, no quoted source line)."""
    logging.getLogger("interest").warning("%s", message)


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the package version and exit."
    ),
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True, show_default=False, help="More messages: -v info, -vv debug (e.g. API retries)."
    ),
    log_level: Optional[LogLevel] = typer.Option(None, help="Log level of the package's messages (overrides -v)."),
) -> None:
    """Learn what makes images commonly or subjectively interesting from Flickr collections."""
    if log_level is not None:
        level = getattr(logging, log_level.value.upper())
    else:
        level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(levelname)s: %(message)s")
    logging.getLogger("interest").setLevel(level)
    warnings.showwarning = _log_warning
