"""Bundles by name on the Hugging Face Hub, and knowing quickly when the network is not there.

``interest.load("hf-hub:ORG/NAME[@REV]")`` resolves a Hub repository to a
local folder through ``huggingface_hub``'s own cache (``HF_HOME``, or
``cache_dir``): downloaded once, then read from the cache, also offline.

Offline in seconds: before anything asks the Hub for a file, :func:`check_network`
tries one TCP connection to the Hub (or to the proxy in ``HTTPS_PROXY``),
bounded by a few seconds, once per process. When it fails, the process
switches ``huggingface_hub`` to offline mode (``HF_HUB_OFFLINE``), so a
missing file is one line at once instead of a minute of retries.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from interest.core.errors import InterestError, one_line

HUB_PREFIX = "hf-hub:"
PROBE_TIMEOUT_S = 3.0
_NAME = re.compile(r"^hf-hub:([A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*)(?:@([A-Za-z0-9._/-]+))?$")

_state: dict[str, bool] = {}
_state_lock = threading.Lock()


def is_hub_name(name: object) -> bool:
    """Whether ``name`` is a Hub bundle name (``hf-hub:ORG/NAME[@REV]``) rather than a path."""
    return isinstance(name, str) and name.startswith(HUB_PREFIX)


def parse_hub_name(name: str) -> tuple[str, str | None]:
    """``hf-hub:ORG/NAME[@REV]`` as (repo id, revision or None); InterestError when malformed."""
    match = _NAME.match(name.strip())
    if not match:
        raise InterestError(f"{name}: not a Hub bundle name; write hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION")
    revision = match.group(2)
    # huggingface_hub joins the revision into a cache path: it is a name (a branch like refs/pr/1, a tag, a
    # commit), never a path that climbs or starts at the root
    if revision is not None and (revision.startswith("/") or revision.endswith("/") or "//" in revision
                                 or any(part in (".", "..") for part in revision.split("/"))):
        what = "starts with /" if revision.startswith("/") else "climbs out (..)" if ".." in revision.split("/") \
            else "is not a plain branch, tag or commit name"
        raise InterestError(f"{name}: the revision '{revision}' {what}; write hf-hub:ORG/NAME@REVISION with a "
                            "branch, tag or commit")
    return match.group(1), revision


def _probe_target() -> tuple[str, int]:
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy if proxy else os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme in ("https", "") else 80)


def _reachable(host: str, port: int, timeout: float) -> bool:
    result: list[bool] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    # name resolution ignores socket timeouts: bound the whole attempt with a thread join
    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def go_offline() -> None:
    """Put this process's ``huggingface_hub`` in offline mode (cached files only, no requests)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as constants

        constants.HF_HUB_OFFLINE = True  # read at import time: the environment alone is too late
    except ImportError:
        pass


def hub_offline() -> bool:
    """Whether the Hub is off for this process: ``HF_HUB_OFFLINE`` set, or found unreachable by :func:`check_network`."""
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.strip().lower() in ("1", "true", "yes", "on") or _state.get("online") is False


def check_network(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when the Hub can be reached; tried once per process, then remembered.

    When it cannot, the process goes offline (:func:`go_offline`), so every
    later lookup answers from the cache at once.
    """
    if hub_offline():
        return False
    with _state_lock:
        if "online" not in _state:
            started = time.monotonic()
            _state["online"] = _reachable(*_probe_target(), timeout)
            _state["probe_s"] = time.monotonic() - started  # type: ignore[assignment]
            if not _state["online"]:
                go_offline()
    return bool(_state["online"])


def offline_help(what: str) -> str:
    """The one-line tail of a "not cached and offline" message."""
    home = os.environ.get("HF_HOME") or "~/.cache/huggingface"
    return (
        f"{what} is not in the Hugging Face cache ({home}) and the Hub cannot be reached; download it once on a "
        "machine with internet (`hf download` / `huggingface-cli download`) and copy the cache, or point "
        "HF_HOME or --cache-dir at it"
    )


def resolve_bundle(name: str, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """The local folder of the Hub bundle ``hf-hub:ORG/NAME[@REV]`` (downloaded into the cache when missing)."""
    from interest.core.errors import require

    snapshot_download = require("huggingface_hub", "research", "loading a bundle by Hub name").snapshot_download
    repo, revision = parse_hub_name(name)
    check_network()
    try:
        folder = snapshot_download(
            repo_id=repo, revision=revision, cache_dir=None if cache_dir is None else str(cache_dir),
            local_files_only=hub_offline(),
        )
    except Exception as exc:  # noqa: BLE001 - huggingface_hub raises many types; each is one line here
        if hub_offline() or type(exc).__name__ in ("LocalEntryNotFoundError", "OfflineModeIsEnabled"):
            raise InterestError(f"{name}: {offline_help('this bundle')}") from None
        text = one_line(exc)
        raise InterestError(f"{name}: cannot fetch the bundle from the Hub ({text[:160]})") from None
    return Path(folder)
