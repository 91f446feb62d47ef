"""The process-wide rate limiter holds its rate however many threads share it."""

from __future__ import annotations

import threading
import time

import pytest

from interest.stages.collect.limiter import RateLimiter


class FakeClock:
    """A clock that only moves when someone sleeps: a limiter test that takes no time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.lock = threading.Lock()
        self.slots: list[float] = []

    def time(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now = max(self.now, self.now + seconds)


def test_slots_are_evenly_spaced_across_threads():
    # the clock stands still, so each call's wait is exactly its slot's distance from now
    limiter = RateLimiter(3600, clock=lambda: 1000.0, sleep=lambda s: None)  # one call a second
    waits: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(25):
            waited = limiter.acquire()
            with lock:
                waits.append(waited)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 200 calls from 8 threads got 200 distinct slots, one second apart
    assert sorted(waits) == pytest.approx([float(i) for i in range(200)])


def test_real_threads_never_exceed_the_rate():
    limiter = RateLimiter(36_000)  # 10 calls a second
    stamps: list[float] = []
    lock = threading.Lock()

    def worker():
        for _ in range(4):
            limiter.acquire()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    stamps.sort()
    assert len(stamps) == 16
    assert elapsed >= 1.5 - 0.01  # 16 calls at 10/s: the 16th slot opens 1.5 s after the first
    # A call never returns before its slot and the slots are 0.1 s apart, so the k-th return comes at
    # least k slots after the start. Only this bound holds on a loaded machine: a thread stamped late
    # can land just before the next one, so gaps between stamps say nothing (one was 0.076 s under load).
    early = [round(s - t0 - k * 0.1, 3) for k, s in enumerate(stamps) if s - t0 < k * 0.1 - 0.005]
    assert not early, f"calls returned before their slot (seconds early): {early}"


def test_hold_pushes_every_later_slot_back():
    clock = FakeClock()
    limiter = RateLimiter(0, clock=clock.time, sleep=clock.sleep)  # unlimited...
    assert limiter.acquire() == 0
    limiter.hold(30)  # ...until the server says Retry-After: 30
    assert limiter.acquire() == pytest.approx(30)
    assert limiter.acquire() == 0


def test_rate_must_not_be_negative():
    with pytest.raises(ValueError):
        RateLimiter(-1)
