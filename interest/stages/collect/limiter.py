"""One rate limiter for the whole process, shared by every thread that calls the API.

Flickr allows under 3,600 calls an hour per key, across the whole key, so the
limit must hold however many threads the crawl runs. The limiter hands out
evenly spaced time slots: a call waits until its slot, so no burst ever
exceeds the rate, and a retry takes a slot like any other call.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class RateLimiter:
    """Evenly spaced slots at ``per_hour`` calls an hour; ``per_hour=0`` means unlimited.

    ``clock`` and ``sleep`` are injectable so that tests can run on a fake clock.
    """

    def __init__(
        self,
        per_hour: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_hour < 0:
            raise ValueError("per_hour must be >= 0")
        self.per_hour = per_hour
        self.interval = 3600.0 / per_hour if per_hour else 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = None  # the earliest time the next slot may start
        self.acquired = 0

    def acquire(self) -> float:
        """Wait for this call's slot; return the seconds waited."""
        with self._lock:
            self.acquired += 1
            now = self._clock()
            slot = now if self._next is None else max(now, self._next)
            if self.interval:
                self._next = slot + self.interval
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return wait

    def hold(self, seconds: float) -> None:
        """Push every later slot back by at least ``seconds`` (the server asked us to slow down)."""
        if seconds <= 0:
            return
        with self._lock:
            until = self._clock() + seconds
            if self._next is None or self._next < until:
                self._next = until
