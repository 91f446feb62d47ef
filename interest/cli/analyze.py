"""CLI commands of this room (see interest/cli/__init__.py)."""

from interest.cli import app  # noqa: F401
