"""The `interest` command line: one thin command per stage, over the library.

Each room of the package registers its commands from its own module here, so
the commands of a stage sit beside nothing else. Heavy libraries (torch,
lightgbm) are imported inside the commands, which keeps `interest --help` fast.
"""

from __future__ import annotations

import logging
import sys
import warnings
from enum import Enum
from typing import Optional

import typer
from typer.core import TyperOption

from interest.errors import InterestError

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

# Each module registers its commands on `app`; the order here is the order of `interest --help`.
# isort: off
from interest.cli import collect, features, synthetic, model, analyze, apps  # noqa: E402,F401
# isort: on


def main() -> None:
    """Console entry point: a user's mistake is one line on stderr and exit status 2."""
    try:
        app()  # standalone mode: usage errors already exit 2 with a one-line message
    except InterestError as exc:
        if sys.stderr.isatty():
            sys.stderr.write("\n")  # a progress bar may hold the current line
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except ModuleNotFoundError as exc:
        # a lighter install (e.g. interest[onnx], torch-free) lacks a library this command imports
        module = (exc.name or "").split(".")[0]
        if not module or module == "interest":
            raise  # our own module missing is a bug: keep the traceback
        extra = _EXTRA_OF.get(module, "research")
        typer.echo(f"error: this command needs {module}, which is not installed: pip install 'interest[{extra}]'", err=True)
        sys.exit(2)


# which extra brings a module (pyproject.toml); anything else of the pipeline is in `research`
_EXTRA_OF = {"fastapi": "serve", "uvicorn": "serve", "multipart": "serve", "onnxruntime": "onnx", "onnx": "export",
             "onnxmltools": "export", "ray": "ray", "nbclient": "notebooks", "nbformat": "notebooks",
             "jupyter_client": "notebooks"}
