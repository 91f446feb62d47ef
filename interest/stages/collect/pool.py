"""A bounded thread pool whose results are handled on the calling thread, with rescheduled work.

Workers only make HTTP calls (and write image files atomically); the calling
thread records each result in the crawl state, so SQLite has a single writer.
A result may enqueue more work (a user's first favourites page says how many
pages follow) or put its item back for later (:class:`Later`: a download to
retry after a not-before time). Items put back wait behind fresh work and
never hold a worker while they wait. Only a bounded number of items is in
flight, so a stage over half a million photos does not hold half a million futures.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Generic, Iterable, TypeVar

from tqdm import tqdm

from interest.stages.collect.client import CallFailed

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Later(Generic[T]):
    """Run ``item`` again, not before ``at`` (``time.monotonic()`` seconds), after any fresh work."""

    at: float
    item: T


def run_parallel(
    items: Iterable[T],
    work: Callable[[T], R],
    on_result: Callable[[T, R | CallFailed], Iterable[T | Later[T]] | None],
    *,
    threads: int,
    bar: tqdm,
    not_before: Callable[[T], float] | None = None,
) -> None:
    """Run ``work`` over ``items`` on ``threads`` threads; ``on_result`` may return more items.

    ``work`` raising :class:`CallFailed` hands the exception to ``on_result``
    as the result; any other exception (an invalid API key) stops the stage at
    once: queued items are dropped and the exception propagates. An item
    returned as :class:`Later` is the same item again (the bar does not move);
    ``not_before(item)`` may delay any item (e.g. while its host asked us to
    slow down).
    """
    queue = deque(items)
    later: list[tuple[float, int, T]] = []
    order = itertools.count()
    in_flight: dict[Future, T] = {}
    executor = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="collect")
    try:
        while queue or in_flight or later:
            now = time.monotonic()
            while len(in_flight) < 2 * threads:
                if queue:
                    item = queue.popleft()
                elif later and later[0][0] <= now:
                    item = heapq.heappop(later)[2]
                else:
                    break
                wait_until = not_before(item) if not_before else 0.0
                if wait_until > now:
                    heapq.heappush(later, (wait_until, next(order), item))
                    continue
                in_flight[executor.submit(_guarded, work, item)] = item
            if not in_flight:
                time.sleep(max(0.0, later[0][0] - time.monotonic()))  # nothing else to do until then
                continue
            timeout = max(0.0, later[0][0] - now) if later else None
            done, _ = wait(in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
            for future in done:
                item = in_flight.pop(future)
                more = list(on_result(item, future.result()) or ())
                fresh = [m for m in more if not isinstance(m, Later)]
                for m in more:
                    if isinstance(m, Later):
                        heapq.heappush(later, (m.at, next(order), m.item))
                if fresh:
                    queue.extend(fresh)
                    bar.total = (bar.total or 0) + len(fresh)
                if len(fresh) == len(more):
                    bar.update(1)
    except BaseException:
        # stop at once: in-flight calls finish on their own, nothing new starts
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown(wait=True)


def _guarded(work: Callable[[T], R], item: T) -> R | CallFailed:
    try:
        return work(item)
    except CallFailed as exc:
        return exc
