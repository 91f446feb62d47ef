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

from interest.errors import InterestError

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
    from interest.errors import require

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
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InterestError(f"{name}: cannot fetch the bundle from the Hub ({text[:160]})") from None
    return Path(folder)


def _card(meta: dict, name: str, license: str) -> str:
    """README.md of a Hub bundle: YAML front matter (license, use, provenance, backbone, metrics) and prose."""
    import json

    backbone = meta.get("backbone", {}).get("id", "unknown")
    provenance = meta.get("provenance") or {}
    data = meta.get("data") or {}
    source = provenance.get("source") or (
        f"Flickr favourites of collection {Path(str(data.get('collection', 'unknown'))).name}" if data else "unknown"
    )
    metrics = meta.get("metrics") or {}
    consent = (
        "Flickr users did not consent to having their favourites used to train models; the photos stay their "
        "owners' (see each photo's licence). The bundle stores no images, only model weights and, for "
        "personalised users, their ids and heads: remove a user's head on request."
    )
    front = {
        "license": license,
        "library_name": "interest",
        "tags": ["image-aesthetics", "interestingness", "clip", "flickr"],
        "backbone": backbone,
        "intended_use": "Ranking and curating a person's own photos by how commonly interesting they are "
                        "likely to be, with optional per-user taste; not for judging people or for moderation.",
        "data_provenance": source,
        "consent": consent,
        "metrics": metrics,
    }
    # JSON is valid YAML: the front matter needs no YAML writer and keeps nested metrics exact
    lines = ["---"] + [f"{k}: {json.dumps(v, sort_keys=True, default=str)}" for k, v in front.items()] + ["---", ""]
    body = f"""# {name}

An `interest` model bundle: a common interestingness (CI) score for photos,
{'trend groups' if meta.get('thresholds', {}).get('group_cuts') else 'no trend groups'} and per-user heads.

```python
import interest
model = interest.load("hf-hub:ORG/{name}")
model.score(["photo.jpg"])
```

- **Backbone**: `{backbone}` (images are embedded with it; embeddings of another backbone are refused).
- **Data**: {source}.
- **Consent**: {consent}
- **Intended use**: {front['intended_use']}
- **Metrics**: see the front matter (held-out evaluation recorded at training; empty for imported heads).
"""
    return "\n".join(lines) + body


def export_hub(model: str | os.PathLike, out: str | os.PathLike, *, license: str = "other") -> Path:
    """Write a Hub-ready folder at ``out``: the bundle's files and a model card (README.md).

    ``model`` is a bundle directory or Hub name. Upload the folder with
    ``hf upload ORG/NAME OUT`` (or ``huggingface_hub.upload_folder``);
    ``interest.load("hf-hub:ORG/NAME")`` then loads it. Written into a
    temporary folder and renamed, so ``out`` is never half-written.
    """
    import json
    import shutil
    import tempfile

    from interest.models.bundle import MODEL_JSON, load_bundle, without_local_paths

    src = resolve_bundle(str(model)) if is_hub_name(str(model)) else Path(model)
    load_bundle(src)  # refuses a damaged bundle before anything is written
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InterestError(f"{out}: exists and is not empty; choose a new folder for the Hub export")
    out.parent.mkdir(parents=True, exist_ok=True)
    # older bundles hold the collection's path on the trainer's disk: the export names it (parts keep their checksums)
    meta = without_local_paths(json.loads((src / MODEL_JSON).read_text(encoding="utf-8")))
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        tmp.chmod(0o755)
        for name in meta.get("parts", {}):
            shutil.copyfile(src / name, tmp / name)
        (tmp / MODEL_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        repo_name = out.name if not is_hub_name(str(model)) else parse_hub_name(str(model))[0].split("/")[1]
        (tmp / "README.md").write_text(_card(meta, repo_name, license), encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
