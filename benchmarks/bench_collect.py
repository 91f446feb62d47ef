"""Collector figures against the local Flickr server (no rate limit), each measured side by side in one run.

    nice -n 10 .venv/bin/python benchmarks/bench_collect.py [--users 2500] [--photos 100000] [--repeats 3]

Prints:
  * list calls against the floor (sum over users of max(1, ceil(favourites / 500))),
    on a world of many short lists and one of long lists, no faults;
  * crawl time of a rendered world with 3% of images persistently truncated and
    3% of photos deleted (half answered with the placeholder directly, half
    after a redirect), against the same world served clean: the ratio of the
    medians of --repeats crawls, the two arms alternating;
  * the same for the issue's harder world (3% truncated, 3% moved behind a
    redirect, 40 images lost to an outage) with the default retry settings;
  * images per second with 15% transient faults against the clean crawl;
  * peak memory (max RSS) of `interest collect` in a child process against a
    server that answers some API calls with 300 MB of JSON and some images
    with 512 MB bodies, against a clean crawl of the same world, with the caps.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from interest.stages.collect import CollectConfig, collect
from interest.core.collection import read_table
from interest.synthetic.server import FaultConfig, serve_world
from interest.synthetic.world import generate_world

KEY = "bench-key"
CLI = "import sys; sys.argv[0] = 'interest'; from interest.cli import main; main()"
#: the CLI, reporting its own peak RSS (KiB) on stderr at exit: RUSAGE_CHILDREN would mix in other children
CLI_RSS = ("import atexit, resource, sys; atexit.register(lambda: sys.stderr.write("
           "f'MAXRSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n')); " + CLI)


def crawl(world: Path, out: Path, faults: FaultConfig | None = None, **settings) -> tuple[dict, dict, float]:
    users = sorted(read_table(world, "users")["user_id"])
    with serve_world(world, api_key=KEY, faults=faults) as srv:
        config = CollectConfig(
            rest_url=srv.rest_url, image_host=srv.image_host, api_key=KEY, rate=0, users=users, **settings
        )
        t0 = time.perf_counter()
        summary = collect(out, config, progress=False)
        return summary, dict(srv.stats), time.perf_counter() - t0


def list_floor(world: Path, tmp: Path, label: str) -> None:
    summary, stats, seconds = crawl(world, tmp / f"lists-{label}", enrich="none", download=False)
    fav = read_table(world, "favorites").groupby("user_id").size()
    floor = sum(max(1, math.ceil(n / 500)) for n in fav)
    calls = stats["flickr.favorites.getPublicList"]
    print(
        f"[lists {label}] {len(fav)} users, {int(fav.sum())} favourites (mean {fav.mean():.0f}/user): "
        f"{calls} list calls, floor {floor}, ratio {calls / floor:.3f} (summary's floor {summary['list_calls_floor']}); "
        f"{summary['favorites'] / seconds:.0f} favourites/s"
    )


def side_by_side(world: Path, tmp: Path, repeats: int, label: str, faults: FaultConfig, **settings) -> None:
    times: dict[str, list[float]] = {"clean": [], "damaged": []}
    images: dict[str, int] = {}
    for r in range(repeats):
        for arm in ("clean", "damaged"):
            summary, stats, seconds = crawl(world, tmp / f"{label}-{arm}-{r}", faults if arm == "damaged" else None,
                                            enrich="none", **settings)
            times[arm].append(seconds)
            images[arm] = summary["images"]
            if arm == "damaged":
                failures = summary["failures"]
    clean, damaged = statistics.median(times["clean"]), statistics.median(times["damaged"])
    print(
        f"[{label}] clean {clean:.2f} s ({', '.join(f'{t:.2f}' for t in times['clean'])}), "
        f"damaged {damaged:.2f} s ({', '.join(f'{t:.2f}' for t in times['damaged'])}): ratio {damaged / clean:.2f}; "
        f"images ok {images['clean']} vs {images['damaged']} "
        f"({images['clean'] / clean:.0f} vs {images['damaged'] / damaged:.0f} images/s); failures {failures}"
    )


def peak_memory(world: Path, tmp: Path) -> None:
    users = tmp / "users.txt"
    users.write_text("\n".join(sorted(read_table(world, "users")["user_id"])) + "\n")
    env = {**os.environ, "FLICKR_API_KEY": KEY, "OMP_NUM_THREADS": "1"}
    photo_ids = sorted(read_table(world, "photos")["photo_id"])
    oversize_images = set(photo_ids[::20])  # one photo in 20 answers 512 MB
    seeds = sorted(read_table(world, "users")["user_id"])
    oversize_users = set(seeds[::10])  # one user in 10 gets 300 MB answers to people.getInfo

    def api(params: dict, reply: dict):
        if params.get("method") == "flickr.people.getInfo" and params.get("user_id") in oversize_users:
            return (b" " * 65536 for _ in range(300 * 16))
        return reply

    def image(photo_id: str, body: bytes):
        return (b"\0" * 65536 for _ in range(512 * 16)) if photo_id in oversize_images else body

    rss = {}
    for arm in ("clean", "oversize"):
        with serve_world(world, api_key=KEY) as srv:
            if arm == "oversize":
                srv.tamper_api, srv.tamper_image = api, image
            cmd = [sys.executable, "-c", CLI_RSS, "collect", str(tmp / f"mem-{arm}"), "--users-file", str(users),
                   "--rest-url", srv.rest_url, "--image-host", srv.image_host, "--rate", "0", "--enrich", "none",
                   "--no-progress"]
            t0 = time.perf_counter()
            result = subprocess.run(cmd, env=env, capture_output=True, text=True)
            seconds = time.perf_counter() - t0
            if result.returncode:
                raise SystemExit(result.stderr)
            rss[arm] = int(result.stderr.rsplit("MAXRSS ", 1)[1].split()[0]) / 1024
            print(f"[memory {arm}] {seconds:.1f} s, peak RSS {rss[arm]:.0f} MiB; "
                  + result.stdout.strip().replace("\n", " / "))
    caps = CollectConfig()
    print(f"[memory] oversize / clean peak RSS {rss['oversize'] / rss['clean']:.2f}; caps {caps.max_json_bytes >> 20} MiB JSON, "
          f"{caps.max_image_bytes >> 20} MiB image, {caps.threads} threads; {len(oversize_images)} oversize images, "
          f"{len(oversize_users)} oversize API answers (300 MB and 512 MB each, uncapped that is "
          f"{(len(oversize_images) * 512 + len(oversize_users) * 300) / 1024:.0f} GB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2500)
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", default="", help="comma-separated: lists,damage,issue,faults,memory")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "lists" not in skip:
            big, heavy = tmp / "world", tmp / "heavy"
            generate_world(big, n_users=args.users, n_photos=args.photos, render=False, seed=0, progress=False)
            generate_world(heavy, n_users=200, n_photos=args.photos, render=False, seed=1, progress=False)
            list_floor(big, tmp, f"{args.users} users")
            list_floor(heavy, tmp, "long lists")
        rendered = tmp / "rendered"
        generate_world(rendered, n_users=150, n_photos=1500, render=True, seed=2, progress=False)
        n = len(read_table(rendered, "photos"))
        if "damage" not in skip:
            damage = FaultConfig(truncated_photos=0.03, placeholder_photos=0.015, placeholder_redirect_photos=0.015)
            side_by_side(rendered, tmp, args.repeats, "3% truncated + 3% deleted", damage)
        if "issue" not in skip:
            outage = 40 / n
            hard = FaultConfig(truncated_photos=0.03, moved_photos=0.03, outage_photos=outage)
            side_by_side(rendered, tmp, args.repeats, "3% truncated + 3% moved + 40 in an outage", hard)
        if "faults" not in skip:
            transient = FaultConfig.uniform(0.15, seed=3, slow_seconds=0.05, timeout_seconds=2.0)
            side_by_side(rendered, tmp, args.repeats, "15% transient faults", transient, timeout=1.0, retries=8, backoff=0.5)
        if "memory" not in skip:
            peak_memory(rendered, tmp)


if __name__ == "__main__":
    main()
