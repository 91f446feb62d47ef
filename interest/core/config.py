"""YAML configs mapped onto dataclasses.

A config file holds only the keys a user wants to change; the dataclass holds
the defaults. Unknown keys are an error (a misspelt key silently ignored is a
wasted training run), and so is a value of the wrong type.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml

from interest.core.errors import InterestError, one_line

T = TypeVar("T")


def load_config(cls: type[T], path: str | os.PathLike | None = None, **overrides: Any) -> T:
    """Build dataclass ``cls`` from defaults, then YAML file ``path``, then ``overrides``.

    ``overrides`` whose value is None are ignored, so CLI options that were not
    given leave the file's value alone.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InterestError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise InterestError(f"{path}: not valid YAML ({one_line(exc)})") from None
        if not isinstance(loaded, dict):
            raise InterestError(f"{path}: a config must be a mapping of keys to values")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return config_from_dict(cls, values, source=str(path) if path else "options")


def config_from_dict(cls: type[T], values: dict[str, Any], source: str = "config") -> T:
    """Build dataclass ``cls`` from a dict, naming the unknown or mistyped key."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise InterestError(f"{source}: unknown key '{key}' (known keys: {known})")
        default = getattr(cls, key, None) if fields[key].default is not dataclasses.MISSING else None
        if default is not None and value is not None and not _same_kind(default, value):
            raise InterestError(
                f"{source}: key '{key}' should be {type(default).__name__}, got {value!r}"
            )
    obj = cls(**values)
    return obj


def _same_kind(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a plain, JSON-ready dict."""
    return dataclasses.asdict(config)
