"""The service's loaded model: reloaded when the bundle changes on disk, personalised under the bundle's lock."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool

from interest.apps.service.schemas import Limits
from interest.core.errors import InterestError

if TYPE_CHECKING:
    from interest.models.base import EmbeddingModel


class State:
    """The loaded model and what guards it.

    The bundle on disk is the truth: when its model.json changes (another
    worker process, or `interest personalize`, saved new heads), the next
    request reloads it, keeping the backbone already in memory.

    Read your writes: once a personalisation has answered (here, in another
    worker, or through the library under the bundle's lock), every later
    request sees that head or a newer one. Hence three rules. The model is
    swapped only under ``_write``, and the bundle's stamp is read under it,
    before the reload, so a reload never installs a version older than one
    already seen. A writer holds ``_write`` from its reload to its save, so no
    reload can swap in, meanwhile, a model without the head it is adding (the
    race a soak found: a request that had read the stamp before the writer
    reloaded it swapped in the bundle as it was before the save, and the
    acknowledged head was missing until the next save). And a reload that keeps
    racing other saves is done again while holding the bundle's lock, instead
    of answering from the model we had. Lock order: the bundle's lock, then
    ``_write``.
    """

    def __init__(self, model: EmbeddingModel, model_path: Path, limits: Limits) -> None:
        self.model = model
        self.model_path = model_path
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.max_concurrent)
        self._write = threading.Lock()
        self._stamp = self._bundle_stamp()

    def _bundle_stamp(self) -> tuple[int, ...] | None:
        """Which version of the bundle is on disk: its directory and model.json, as stat sees them."""
        try:
            folder = os.stat(self.model_path)
            st = os.stat(self.model_path / "model.json")
        except OSError:
            return None
        # inode numbers are reused once an old version is removed: the times and size tell such twins apart
        return folder.st_ino, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size

    def current(self) -> Any:
        """The model, reloaded first if the bundle changed on disk since it was loaded.

        A bundle that fails to reload even with writers held off (damaged on
        disk) keeps the model we have.
        """
        stamp = self._bundle_stamp()
        if stamp is not None and stamp == self._stamp:
            return self.model
        with self._write:
            try:
                return self._catch_up()
            except InterestError:
                pass
        # every lock-free read raced a save (or the bundle is damaged): once more with writers held off
        from interest.bundle.storage import bundle_lock

        try:
            with bundle_lock(self.model_path), self._write:
                return self._catch_up()
        except InterestError:
            return self.model

    def _catch_up(self) -> Any:
        """Reload the bundle if its stamp differs from the model's (call with ``_write`` held)."""
        stamp = self._bundle_stamp()  # read before the load: the model loaded is this version or a newer one
        if stamp is not None and stamp == self._stamp:
            return self.model
        self.model = self.model.reloaded(self.model_path)
        self._stamp = stamp
        return self.model

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run blocking model work in the thread pool, within the request timeout (waiting included)."""

        async def run() -> Any:
            async with self._slots:
                return await run_in_threadpool(fn, *args)

        try:
            return await asyncio.wait_for(run(), self.limits.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(503, f"the request took over {self.limits.timeout_s:g} s; retry later or send fewer images") from None

    def personalize(self, user: str, liked: list, disliked: list | None) -> None:
        """Fit ``user``'s head on the newest bundle and save it, before the request answers."""
        from interest.bundle.io import editing

        # One writer at a time across threads *and* worker processes, each starting from the bundle
        # on disk as the previous writer left it (or not at all: a damaged bundle): two heads saved at
        # once must not lose either.
        def saved() -> None:
            self._stamp = self._bundle_stamp()

        try:
            with editing(self.model_path, self._catch_up, hold=self._write, saved=saved) as model:
                model.personalize(user, liked, disliked)
        except BaseException:
            self._stamp = None  # the model in memory may hold a head the disk lacks: reload it next time
            raise
