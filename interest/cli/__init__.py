"""The `interest` command line: one thin command per stage, over the library.

Each room of the package registers its commands from its own module here, so
the commands of a stage sit beside nothing else. Heavy libraries (torch,
lightgbm) are imported inside the commands, which keeps `interest --help` fast.
"""

from __future__ import annotations

import sys

import typer

from interest.cli.root import app
from interest.core.errors import DiskFull, InterestError, is_disk_full

# Each module registers its commands on `app`; the order here is the order of `interest --help`.
# isort: off
from interest.cli import collect, features, synthetic, model, analyze, apps  # noqa: F401
# isort: on


def main() -> None:
    """Console entry point: a user's mistake is one line on stderr and exit status 2; a full disk one line and 1."""
    try:
        app()  # standalone mode: usage errors already exit 2 with a one-line message
    except InterestError as exc:
        _one_line(f"error: {exc}")
        sys.exit(2)
    except ModuleNotFoundError as exc:
        # a lighter install (e.g. interest[onnx], torch-free) lacks a library this command imports
        module = (exc.name or "").split(".")[0]
        if not module or module == "interest":
            raise  # our own module missing is a bug: keep the traceback
        extra = _EXTRA_OF.get(module, "research")
        typer.echo(f"error: this command needs {module}, which is not installed: pip install 'interest[{extra}]'", err=True)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - only a full disk is handled here; anything else keeps its traceback
        if not is_disk_full(exc):
            raise
        _one_line(f"error: {_disk_full_message(exc, sys.argv[1:])}")
        sys.exit(1)


def _one_line(message: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\n")  # a progress bar may hold the current line
    typer.echo(message, err=True)


def _disk_full_message(exc: BaseException, argv: list[str]) -> str:
    """The one line for a full disk: the file being written, why, and how to go on without losing anything."""
    cause = exc
    while cause is not None and not isinstance(cause, DiskFull) and not getattr(cause, "filename", None):
        cause = cause.__cause__ or cause.__context__
    positional = [a for a in argv if not a.startswith("-")]
    command = positional[0] if positional else ""
    if cause is None:  # SQLite and some pyarrow paths name no file: name what the command writes into
        cause = DiskFull(positional[1] if len(positional) > 1 else "the output folder", exc)
    elif not isinstance(cause, DiskFull):
        cause = DiskFull(cause.filename, cause)
    again = "run it again with --resume" if command == "collect" else "run the same command again"
    return f"{cause.path}: {cause.why}; free space, then {again} (what was already written is kept and reused)"


# which extra brings a module (pyproject.toml); anything else of the pipeline is in `research`
_EXTRA_OF = {"fastapi": "serve", "uvicorn": "serve", "multipart": "serve", "onnxruntime": "onnx", "onnx": "export",
             "onnxmltools": "export", "ray": "ray", "nbclient": "notebooks", "nbformat": "notebooks",
             "jupyter_client": "notebooks", "defusedxml": "xmp"}
