"""A bounded thread pool whose results are handled on the calling thread.

Workers only make HTTP calls (and write image files atomically); the calling
thread records each result in the crawl state, so SQLite has a single writer.
A result may enqueue more work (a user's first favourites page says how many
pages follow). Only a bounded number of items is in flight, so a stage over
half a million photos does not hold half a million futures.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable, Iterable, TypeVar

from tqdm import tqdm

from interest.collect.client import CallFailed

T = TypeVar("T")
R = TypeVar("R")


def run_parallel(
    items: Iterable[T],
    work: Callable[[T], R],
    on_result: Callable[[T, R | CallFailed], Iterable[T] | None],
    *,
    threads: int,
    bar: tqdm,
) -> None:
    """Run ``work`` over ``items`` on ``threads`` threads; ``on_result`` may return more items.

    ``work`` raising :class:`CallFailed` hands the exception to ``on_result``
    as the result; any other exception (an invalid API key) stops the stage at
    once: queued items are dropped and the exception propagates.
    """
    queue = deque(items)
    in_flight: dict[Future, T] = {}
    executor = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="collect")
    try:
        while queue or in_flight:
            while queue and len(in_flight) < 2 * threads:
                item = queue.popleft()
                in_flight[executor.submit(_guarded, work, item)] = item
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                item = in_flight.pop(future)
                more = on_result(item, future.result())
                if more:
                    more = list(more)
                    queue.extend(more)
                    bar.total = (bar.total or 0) + len(more)
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
