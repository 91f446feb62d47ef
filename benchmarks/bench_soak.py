"""Soak: `interest serve` under mixed traffic for --minutes, checking that load does not wear it down.

Sixteen clients (``--concurrency``) on 127.0.0.1 send, in a seeded mix: image uploads to POST
/score, JSON embeddings to POST /score, POST /users/soakN/personalize for 20 users (two liked
photos each), and scores with a user (JSON or upload) for users whose personalisation has
answered. The service runs as `interest serve BUNDLE --workers 2` in its own process group on a
fresh copy of the demo bundle (``interest demo --out DIR`` makes one; it is made here if missing).

Passes when: no request failed (any status but 200 is an error, a 404 for an acknowledged user
above all: read-your-writes), the service's resident memory (supervisor and workers, summed)
grows by at most 10% from the end of the first minute to the end, and the p99 latency of the last
minute is within 1.5x of the second minute's (the run's own baseline). Every loop is bounded by
the deadline; the service is stopped at the end.

    .venv/bin/python benchmarks/bench_soak.py [--minutes 10] [--demo /tmp/interest-bench-soak/demo]

Prints one line per minute (requests, errors, p50/p99, resident memory) and the three verdicts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

USERS = [f"soak{i}" for i in range(20)]
MIX = {"upload": 0.35, "json": 0.35, "personalize": 0.05, "user_json": 0.15, "user_upload": 0.10}


def demo_bundle(demo: Path) -> Path:
    """The demo's output folder ``demo`` (``interest demo --out DEMO``), made if it has no bundle yet."""
    if not (demo / "model" / "model.json").is_file():
        subprocess.run([sys.executable, "-m", "interest", "demo", "--out", str(demo)], check=True,
                       stdout=subprocess.DEVNULL)
    return demo


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(bundle: Path, port: int, workers: int, log: Path) -> subprocess.Popen:
    import httpx

    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "interest", "serve", str(bundle), "--port", str(port), "--workers", str(workers)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "TQDM_DISABLE": "1"},
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}: {log.read_text()[-1000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_service(proc)
    raise RuntimeError("the service did not become ready within 300 s")


def stop_service(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def tree_usage(pid: int) -> tuple[int, float]:
    """Resident bytes and CPU seconds of process ``pid`` and all its descendants (uvicorn's supervisor and workers)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0.0
    rss, cpu = 0, 0.0
    for p in procs:
        try:
            rss += p.memory_info().rss
            times = p.cpu_times()
            cpu += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return rss, cpu


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all processes, every core)."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--demo", type=Path, default=Path("/tmp/interest-bench-soak/demo"),
                        help="The demo's output folder (made with `interest demo --out` if it has no bundle).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.minutes < 2:
        parser.error("--minutes: give at least 2 (the first minute is warm-up, the second the baseline)")

    import httpx

    from interest.core.collection import read_embeddings

    demo = demo_bundle(args.demo)
    work = args.demo.parent / "soak"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bundle = work / "model"
    shutil.copytree(demo / "model", bundle)  # personalisations are saved into it: a fresh copy each run
    images = [p.read_bytes() for p in sorted((demo / "collection" / "images").glob("*.jpg"))[:64]]
    _, _, emb = read_embeddings(demo / "collection", "perceptual/v1")
    emb = emb[:256]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_service(bundle, port, args.workers, work / "serve.log")
    records: list[tuple[float, float, str, int]] = []  # (end time, latency s, kind, status)
    errors: list[str] = []
    acknowledged: set[str] = set()
    lock = threading.Lock()
    # every 5 s: (time, service resident bytes, service CPU s, machine busy CPU s, this client's CPU s)
    memory: list[tuple[float, int, float, float, float]] = []
    start = time.monotonic()
    deadline = start + args.minutes * 60
    kinds, weights = list(MIX), np.array(list(MIX.values()))

    def sample_memory() -> None:
        while time.monotonic() < deadline:
            rss, cpu = tree_usage(proc.pid)
            own = os.times()
            memory.append((time.monotonic() - start, rss, cpu, machine_busy(), own.user + own.system))
            time.sleep(5)

    def client(k: int) -> int:
        rng = np.random.default_rng([args.seed, k])
        sent = 0
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.monotonic() < deadline:  # bounded: every loop ends at the deadline
                kind = kinds[int(rng.choice(len(kinds), p=weights))]
                with lock:
                    ready = sorted(acknowledged)
                if kind.startswith("user_") and not ready:
                    kind = kind[5:]
                user = ready[int(rng.integers(len(ready)))] if kind.startswith("user_") else None
                rows = emb[rng.integers(0, len(emb), 4)].tolist()
                image = images[int(rng.integers(len(images)))]
                t0 = time.monotonic()
                try:
                    if kind == "personalize":
                        user = USERS[int(rng.integers(len(USERS)))]
                        liked = [("liked", (f"{j}.jpg", images[int(rng.integers(len(images)))], "image/jpeg")) for j in range(2)]
                        r = http.post(f"/users/{user}/personalize", files=liked)
                    elif kind.endswith("json"):
                        r = http.post("/score", json={"embeddings": rows, **({"user": user} if user else {})})
                    else:
                        r = http.post("/score", files=[("files", ("photo.jpg", image, "image/jpeg"))],
                                      data={"user": user} if user else None)
                    status, text = r.status_code, r.text[:160]
                except httpx.HTTPError as exc:
                    status, text = 0, f"{type(exc).__name__}: {exc}"
                t1 = time.monotonic()
                with lock:
                    records.append((t1 - start, t1 - t0, kind, status))
                    if status != 200:
                        errors.append(f"{t1 - start:.1f}s {kind} user={user}: {status} {text}")
                    elif kind == "personalize":
                        acknowledged.add(user)
                sent += 1
        return sent

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    try:
        with ThreadPoolExecutor(args.concurrency) as pool:
            sent = sum(pool.map(client, range(args.concurrency)))
    finally:
        end_rss = tree_usage(proc.pid)[0]
        stop_service(proc)
    sampler.join(10)

    ok = summarize(records, memory, errors, end_rss, sent=sent, minutes=args.minutes,
                   workers=args.workers, concurrency=args.concurrency)
    sys.exit(0 if ok else 1)


def summarize(records: list, memory: list, errors: list[str], end_rss: int, *, sent: int, minutes: float,
              workers: int, concurrency: int) -> bool:
    """Print the per-minute figures and the three verdicts; True when all pass."""
    buckets = int(np.ceil(minutes))
    print(f"soak: `interest serve` --workers {workers} on the demo bundle, concurrency {concurrency}, "
          f"{minutes:g} min, {sent} requests ({', '.join(f'{k} {v}' for k, v in sorted(Counter(r[2] for r in records).items()))}), "
          f"{os.cpu_count()} CPUs")
    p99 = {}
    cores = os.cpu_count() or 1
    print("(CPU: the service's CPU seconds in the minute; 'others' what the rest of the machine, this client "
          "excluded, kept busy, in cores: a busy shared machine slows the service without wearing it down)")
    for m in range(buckets):
        lat = [r[1] for r in records if m * 60 <= r[0] < (m + 1) * 60]
        rss = [x[1] for x in memory if m * 60 <= x[0] < (m + 1) * 60]
        bad = sum(1 for r in records if m * 60 <= r[0] < (m + 1) * 60 and r[3] != 200)
        inside = [x for x in memory if m * 60 <= x[0] < (m + 1) * 60]
        cpu = others = float("nan")
        if len(inside) >= 2:
            (t0, _, s0, b0, c0), (t1, _, s1, b1, c1) = inside[0], inside[-1]
            cpu = (s1 - s0) * 60 / (t1 - t0)
            others = ((b1 - b0) - (s1 - s0) - (c1 - c0)) / (t1 - t0)
        if lat:
            p99[m] = float(np.percentile(lat, 99))
            print(f"minute {m + 1:2d}: {len(lat):5d} requests, {bad} errors, p50 {np.percentile(lat, 50) * 1000:6.0f} ms, "
                  f"p99 {p99[m] * 1000:6.0f} ms, resident {max(rss, default=0) / 2**20:6.0f} MiB, "
                  f"service CPU {cpu:5.1f} s ({len(lat) / cpu if cpu > 0 else float('nan'):5.0f} requests per CPU s), "
                  f"others {others:4.2f} of {cores} cores")
    rss_1 = [x[1] for x in memory if x[0] <= 60][-1]
    after = [x[1] for x in memory if x[0] > 60] + [end_rss]
    growth = (end_rss - rss_1) / rss_1
    growth_max = (max(after) - rss_1) / rss_1
    last = max(p99)
    ratio = p99[last] / p99[1]
    print(f"errors: {len(errors)} of {len(records)}" + "".join(f"\n  {e}" for e in errors[:20]))
    print(f"resident memory: {rss_1 / 2**20:.0f} MiB at 1 min, {end_rss / 2**20:.0f} MiB at the end "
          f"({growth:+.1%}; highest after the first minute {max(after) / 2**20:.0f} MiB, {growth_max:+.1%})")
    print(f"p99: minute 2 {p99[1] * 1000:.0f} ms, last minute {p99[last] * 1000:.0f} ms (x{ratio:.2f})")
    verdicts = {"no error": not errors, "memory grows <= 10% after the first minute": growth_max <= 0.10,
                "last minute's p99 within 1.5x of the second's": ratio <= 1.5}
    for name, ok in verdicts.items():
        print(f"{'PASS' if ok else 'FAIL'}: {name}")
    return all(verdicts.values())


if __name__ == "__main__":
    main()
