"""The download stage: concurrent, verified, hashed, deduplicated and atomic image writes.

Each photo is fetched once however many users favourited it (jobs are keyed
by photo_id), checked to decode as a whole image (a truncated body is retried
like any transient failure, and recorded as ``bad_image`` when it never comes
whole), hashed with SHA-256 and written under a temporary name then renamed,
so ``images/`` never holds a half-written file. The file is written before its
row is committed: a crash in between only means the same bytes are fetched and
written again on resume.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Iterable

from PIL import Image

from interest.collect.client import CallFailed, FlickrClient
from interest.collect.pool import run_parallel
from interest.collect.state import CrawlState
from interest.collection import atomic_path
from interest.progress import progress_bar

IMAGES_DIR = "images"


def verify_image(body: bytes) -> None:
    """Raise ``ValueError`` unless ``body`` decodes as a whole image."""
    if not body:
        raise ValueError("empty body")
    try:
        with Image.open(io.BytesIO(body)) as img:
            img.load()  # decodes every pixel: a truncated JPEG fails here, not in a later stage
    except Exception as exc:  # PIL raises several types for damaged data
        raise ValueError(f"not a whole image ({type(exc).__name__}: {exc})") from None


def image_relpath(photo_id: str, url: str | None) -> str:
    """The image's path relative to the collection: ``images/<photo_id>.<ext of the URL>``."""
    ext = Path(url.split("?", 1)[0]).suffix.lower() if url else ""
    return f"{IMAGES_DIR}/{photo_id}{ext if ext in ('.jpg', '.jpeg', '.png', '.gif') else '.jpg'}"


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


def download_images(
    out: str | os.PathLike,
    jobs: Iterable[tuple[str, str | None]],
    client: FlickrClient,
    state: CrawlState,
    *,
    threads: int = 8,
    progress: bool = True,
) -> dict[str, int]:
    """Download ``(photo_id, url)`` jobs not yet settled in ``state``; return counts by status."""
    out = Path(out)
    settled = state.image_rows()
    pending: dict[str, str | None] = {}
    for photo_id, url in jobs:
        if photo_id not in settled and photo_id not in pending:
            pending[photo_id] = url
    for photo_id in [p for p, u in pending.items() if not u]:
        state.record_image(photo_id, "missing", None, None, "no_url")
        del pending[photo_id]

    def work(photo_id: str) -> tuple[str, str]:
        url = pending[photo_id]
        body = client.fetch(url, verify_image)
        rel = image_relpath(photo_id, url)
        with atomic_path(out / rel) as tmp:
            tmp.write_bytes(body)
        return rel, hashlib.sha256(body).hexdigest()

    counts: dict[str, int] = {}

    def on_result(photo_id: str, result: tuple[str, str] | CallFailed) -> None:
        if isinstance(result, CallFailed):
            status = "missing" if result.reason == "missing" else "bad_image" if result.reason == "bad_image" else "failed"
            state.record_image(photo_id, status, None, None, result.reason)
        else:
            status = "ok"
            state.record_image(photo_id, "ok", result[0], result[1], None)
        counts[status] = counts.get(status, 0) + 1

    with progress_bar(total=len(pending), desc="images", unit="img", enabled=progress, dynamic_ncols=True) as bar:
        run_parallel(sorted(pending), work, on_result, threads=threads, bar=bar)
    return counts
