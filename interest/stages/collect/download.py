"""The download stage: concurrent, verified, hashed, placeholder-aware and atomic image writes.

Each photo is fetched once however many users favourited it (jobs are keyed
by photo_id), checked to decode as a whole image, hashed with SHA-256 and
written under a temporary name then renamed, so ``images/`` never holds a
half-written file. Its file name comes from :func:`interest.core.collection.image_relpath`
(never the raw id) and is checked to stay inside the collection. The file is
written before its row is committed: a crash in between only means the same
bytes are fetched and written again on resume.

A failed download never holds a worker: a transient failure (HTTP 5xx/429,
timeout, connection error) is put back with a not-before time (exponential
backoff with seeded jitter, or the server's ``Retry-After``), behind the fresh
work, up to ``retries`` tries; a body that does not decode as a whole image is
put back at once, behind the fresh work, up to ``body_tries`` tries, then
recorded as ``bad_image``. A 429 pauses only the host that sent it.

Flickr answers a deleted or private photo with a "This photo is no longer
available" image rather than an error. It is recognised two ways, and such a
photo is recorded as ``missing`` (``status_reason`` ``placeholder_redirect``
or ``placeholder_image``) and never written as the photo:

* a redirect to a URL whose file name starts with ``photo_unavailable``; when
  that URL is on an allowed host its bytes are fetched once and their SHA-256
  learnt;
* a body whose SHA-256 is a known placeholder's: learnt from such a redirect,
  or listed in the config (``placeholder_sha256``). Photos saved before a hash
  was learnt are re-checked at the end of the stage.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import threading
import time
import warnings
from pathlib import Path
from typing import Iterable
from urllib.parse import urlsplit

from PIL import Image, UnidentifiedImageError

from interest.stages.collect.client import CallFailed, FlickrClient, rewrite_host
from interest.stages.collect.pool import Later, run_parallel
from interest.stages.collect.state import CrawlState
from interest.core.collection import IMAGES_DIR, atomic_path, image_relpath, inside_collection
from interest.core.progress import progress_bar

#: default pixel cap of a downloaded image (the image loader's cap: larger is a decompression bomb)
MAX_PIXELS = 89_478_485
_LEARNT = "placeholder_sha256"


class BadBody(ValueError):
    """A body that is not a usable image; ``reason`` is ``truncated``, ``not_an_image`` or ``too_many_pixels``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def verify_image(body: bytes, max_pixels: int = MAX_PIXELS) -> None:
    """Raise :class:`BadBody` unless ``body`` decodes as a whole image of at most ``max_pixels`` pixels."""
    if not body:
        raise BadBody("truncated", "empty body")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(body)) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise BadBody("too_many_pixels", f"{width}x{height} is over the cap of {max_pixels} pixels")
                img.load()  # decodes every pixel: a truncated JPEG fails here, not in a later stage
    except BadBody:
        raise
    except Image.DecompressionBombError as exc:
        raise BadBody("too_many_pixels", str(exc)[:200]) from None
    except UnidentifiedImageError as exc:
        raise BadBody("not_an_image", f"not an image ({type(exc).__name__})") from None
    except Exception as exc:  # PIL raises several types for a body cut short
        raise BadBody("truncated", f"not a whole image ({type(exc).__name__}: {exc})") from None


def remove_temporaries(out: str | os.PathLike) -> int:
    """Delete temporary files a killed run left behind (``.<name>.*.tmp``); return how many."""
    out = Path(out)
    removed = 0
    for folder in (out, out / IMAGES_DIR):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed


def _status(reason: str) -> str:
    if reason in ("http_404", "http_410", "placeholder_redirect", "placeholder_image", "no_url"):
        return "missing"
    if reason in ("truncated", "not_an_image", "too_many_pixels", "too_large"):
        return "bad_image"
    return "failed"


def download_images(
    out: str | os.PathLike,
    jobs: Iterable[tuple[str, str | None]],
    client: FlickrClient,
    state: CrawlState,
    *,
    threads: int = 8,
    progress: bool = True,
    retries: int = 6,
    body_tries: int = 3,
    backoff: float = 2.0,
    max_backoff: float = 300.0,
    placeholder_sha256: Iterable[str] = (),
    max_pixels: int = MAX_PIXELS,
    seed: int = 0,
) -> dict[str, int]:
    """Download ``(photo_id, url)`` jobs not yet settled in ``state``; return counts by status.

    ``retries`` bounds the tries of a transient failure, ``body_tries`` those
    of a body that never arrives whole; ``placeholder_sha256`` lists hashes of
    placeholder images to refuse besides those learnt from redirects.
    """
    out = Path(out)
    settled = state.image_rows()
    pending: dict[str, str | None] = {}
    for photo_id, url in jobs:
        if photo_id not in settled and photo_id not in pending:
            pending[photo_id] = url
    for photo_id in [p for p, u in pending.items() if not u]:
        state.record_image(photo_id, "missing", None, None, "no_url")
        del pending[photo_id]

    known = {h.lower() for h in placeholder_sha256} | set(state.get_meta(_LEARNT) or [])
    learnt_urls: set[str] = set()
    lock = threading.Lock()
    tries: dict[str, int] = {}
    paused: dict[str, float] = {}  # host -> not before (a 429 slows only that host)
    hosts: dict[str, str] = {}
    rng = random.Random(seed)

    def host_of(photo_id: str) -> str:
        if photo_id not in hosts:
            hosts[photo_id] = urlsplit(rewrite_host(pending[photo_id] or "", client.image_host)).netloc
        return hosts[photo_id]

    def learn(url: str) -> str | None:
        """The SHA-256 of the placeholder at ``url``, fetched once per URL (only from an allowed host)."""
        with lock:
            if url in learnt_urls:
                return None
            learnt_urls.add(url)
        if not client.allowed_host(url):
            return None
        try:
            return hashlib.sha256(client.fetch(url)).hexdigest()
        except CallFailed:
            return None

    def work(photo_id: str) -> tuple[str, str | None, str | None]:
        """(status_reason or "ok", relative path, sha256 or a learnt placeholder hash)."""
        url = pending[photo_id]
        try:
            body = client.fetch(url)
        except CallFailed as exc:
            if exc.reason == "placeholder":
                return "placeholder_redirect", None, learn(exc.url) if exc.url else None
            raise
        sha = hashlib.sha256(body).hexdigest()
        with lock:
            if sha in known:
                return "placeholder_image", None, None
        try:
            verify_image(body, max_pixels)
        except BadBody as exc:
            raise CallFailed(exc.reason, str(exc)) from None
        rel = image_relpath(photo_id, url)
        with atomic_path(inside_collection(out, rel)) as tmp:
            tmp.write_bytes(body)
        return "ok", rel, sha

    counts: dict[str, int] = {}

    def settle(photo_id: str, status: str, rel: str | None, sha: str | None, reason: str | None) -> None:
        state.record_image(photo_id, status, rel, sha, reason)
        counts[status] = counts.get(status, 0) + 1

    def on_result(photo_id: str, result: tuple[str, str | None, str | None] | CallFailed) -> list:
        if isinstance(result, CallFailed):
            n = tries[photo_id] = tries.get(photo_id, 0) + 1
            bad_body = result.reason == "truncated"
            if result.transient and n < (body_tries if bad_body else retries):
                client.count_retry(result.reason)
                now = time.monotonic()
                delay = 0.0 if bad_body else min(max_backoff, backoff * 2 ** (n - 1)) * (0.5 + rng.random())
                if result.retry_after is not None:
                    delay = max(delay, result.retry_after)
                if result.reason == "http_429":
                    host = result.host or host_of(photo_id)
                    paused[host] = max(paused.get(host, 0.0), now + delay)
                return [Later(now + delay, photo_id)]
            settle(photo_id, _status(result.reason), None, None, result.reason)
            return []
        reason, rel, sha = result
        if reason == "ok":
            settle(photo_id, "ok", rel, sha, None)
        else:
            if sha is not None and sha not in known:
                with lock:
                    known.add(sha)
                state.set_meta(_LEARNT, sorted({*(state.get_meta(_LEARNT) or []), sha}))
            settle(photo_id, "missing", None, None, reason)
        return []

    with progress_bar(total=len(pending), desc="images", unit="img", enabled=progress, dynamic_ncols=True) as bar:
        run_parallel(sorted(pending), work, on_result, threads=threads, bar=bar,
                     not_before=lambda p: paused.get(host_of(p), 0.0))
    _recheck_placeholders(out, state, known)
    return counts


def _recheck_placeholders(out: Path, state: CrawlState, known: set[str]) -> int:
    """Turn saved images whose bytes are a known placeholder into ``missing``; return how many."""
    if not known:
        return 0
    n = 0
    for photo_id, (status, rel, sha, _) in state.image_rows().items():
        if status == "ok" and sha in known:
            state.record_image(photo_id, "missing", None, None, "placeholder_image")
            if rel:
                inside_collection(out, rel).unlink(missing_ok=True)
            n += 1
    return n
