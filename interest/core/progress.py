"""Progress bars: shown to a person at a terminal, kept out of logs, pipes and tests."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


def progress_bar(*args: Any, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr, shown only when ``enabled`` and stderr is a terminal."""
    return tqdm(*args, disable=None if enabled else True, **kwargs)
