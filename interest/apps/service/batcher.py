"""Micro-batching of scoring requests, and a score table as the API's rows."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool

from interest.apps.service.state import State
from interest.core.errors import InterestError
from interest.core.vocabulary import TREND_GROUPS


class Batcher:
    """Micro-batching of scoring requests: one backbone call embeds the images of several requests.

    One task takes the first waiting request, then every request already
    queued and, for up to ``Limits.batch_wait_s``, those that arrive, up to
    ``Limits.batch_images`` images; embeds them together in the thread pool,
    and scores each request's rows on its own (its user, its errors). A lone
    request waits only ``batch_wait_s``; under load, requests queue while the
    model is busy and the next batch takes them all.
    """

    def __init__(self, state: State) -> None:
        self.state = state
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    async def submit(self, images: list, user: str | None) -> list[dict]:
        """Scores of ``images`` (one dict per image), within the request timeout (waiting included)."""
        if not images:
            return []
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run())
        done = loop.create_future()
        await self._queue.put((images, user, done))
        try:
            return await asyncio.wait_for(done, self.state.limits.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(
                503, f"the request took over {self.state.limits.timeout_s:g} s; retry later or send fewer images"
            ) from None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        limits = self.state.limits
        while True:
            batch = [await self._queue.get()]
            n = len(batch[0][0])
            deadline = loop.time() + limits.batch_wait_s
            while n < limits.batch_images:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), left)
                    except asyncio.TimeoutError:
                        break
                batch.append(item)
                n += len(item[0])
            batch = [item for item in batch if not item[2].done()]  # a request that timed out is gone
            if not batch:
                continue
            try:
                answers = await run_in_threadpool(score_batch, self.state, [(i, u) for i, u, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the batch's failure is each request's answer
                answers = [exc] * len(batch)
            for (_, _, done), answer in zip(batch, answers):
                if done.done():
                    continue
                if isinstance(answer, BaseException):
                    done.set_exception(answer)
                else:
                    done.set_result(answer)


def score_batch(state: State, requests: list[tuple[list, str | None]]) -> list[Any]:
    """Embed every request's images in one call, then score each request apart: its rows, or its exception."""
    model = state.current()
    answers: list[Any] = [None] * len(requests)
    for k, (_, user) in enumerate(requests):
        if user is not None and user not in model.users:
            answers[k] = HTTPException(404, f"user {user}: no head in this model; POST /users/{user}/personalize first")
    todo = [k for k in range(len(requests)) if answers[k] is None]
    images = [image for k in todo for image in requests[k][0]]
    emb = model.embed_images(images) if images else None
    start = 0
    for k in todo:
        n = len(requests[k][0])
        try:
            answers[k] = score_rows(model.score_embeddings(emb[start : start + n], user=requests[k][1]))
        except InterestError as exc:
            answers[k] = exc
        start += n
    return answers


def score_rows(table: Any) -> list[dict]:
    """A score table as the API's rows (JSON values, group names added)."""
    keep = [c for c in ("ci_score", "trend_group", "p_common", "p_interplay", "p_subjective", "user_score",
                        "deviation", "error") if c in table]
    rows = []
    for record in table[keep].to_dict(orient="records"):
        row = {k: plain(v) for k, v in record.items()}
        if row.get("error") is None:
            row.pop("error", None)
        if row.get("trend_group") is not None:
            row["trend_group_name"] = TREND_GROUPS[int(row["trend_group"])]
        rows.append(row)
    return rows


def plain(value: Any) -> Any:
    """A NumPy/pandas scalar as a JSON value (NaN and NA as null)."""
    if value is None:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(value)
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value
