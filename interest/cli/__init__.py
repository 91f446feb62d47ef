"""The `interest` command line: one thin command per stage, over the library.

Each room of the package registers its commands from its own module here, so
the commands of a stage sit beside nothing else. Heavy libraries (torch,
lightgbm) are imported inside the commands, which keeps `interest --help` fast.
"""

from __future__ import annotations

import sys

import typer

from interest.cli.root import app
from interest.errors import InterestError

# Each module registers its commands on `app`; the order here is the order of `interest --help`.
# isort: off
from interest.cli import collect, features, synthetic, model, analyze, apps  # noqa: F401
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
             "jupyter_client": "notebooks", "defusedxml": "xmp"}
