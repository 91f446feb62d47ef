"""Collector figures against the local Flickr server (no rate limit).

    .venv/bin/python benchmarks/bench_collect.py [--users 2500] [--photos 100000] [--repeats 3]

Prints:
  * API calls per 1,000 favourites in the lists stage, on the 2,500-user world
    and on a world with heavier users (the cost is ceil(n/500) calls per user,
    so it falls to 2 per 1,000 as users' lists grow; one call per photo would be 1,000);
  * throughput: favourites/s of a lists-only crawl, images/s of a crawl with downloads;
  * peak memory (max RSS) of a 2,500-user crawl (enrich=owners, no download),
    run as the `interest collect` CLI in a child process so only the collector is measured.
Each throughput figure is the median of --repeats crawls.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from interest.collect import CollectConfig, collect
from interest.collection import read_table
from interest.synthetic.server import serve_world
from interest.synthetic.world import generate_world

KEY = "bench-key"
CLI = "import sys; sys.argv[0] = 'interest'; from interest.cli import main; main()"


def crawl(world: Path, out: Path, **settings) -> tuple[dict, dict, float]:
    users = sorted(read_table(world, "users")["user_id"])
    with serve_world(world, api_key=KEY) as srv:
        config = CollectConfig(
            rest_url=srv.rest_url, image_host=srv.image_host, api_key=KEY, rate=0, users=users, **settings
        )
        t0 = time.perf_counter()
        summary = collect(out, config, progress=False)
        return summary, dict(srv.stats), time.perf_counter() - t0


def lists_cost(world: Path, tmp: Path, repeats: int, label: str) -> None:
    rates, per_1000 = [], None
    for r in range(repeats):
        summary, stats, seconds = crawl(world, tmp / f"{label}-{r}", enrich="none", download=False, threads=8)
        per_1000 = 1000 * stats["flickr.favorites.getPublicList"] / summary["favorites"]
        rates.append(summary["favorites"] / seconds)
    fav = read_table(world, "favorites").groupby("user_id").size()
    print(
        f"[{label}] users {len(fav)}, favourites {int(fav.sum())} (mean {fav.mean():.0f}/user): "
        f"list calls per 1000 favourites {per_1000:.2f}; lists-only crawl {statistics.median(rates):.0f} favourites/s "
        f"(median of {repeats}: {', '.join(f'{x:.0f}' for x in rates)})"
    )


def images_rate(tmp: Path, repeats: int) -> None:
    world = tmp / "rendered"
    generate_world(world, n_users=300, n_photos=3000, render=True, seed=2, progress=False)
    rates = []
    for r in range(repeats):
        summary, stats, seconds = crawl(world, tmp / f"img-{r}", enrich="none", download=True, threads=8)
        rates.append(summary["images"] / seconds)
    print(
        f"[images] {summary['images']} images (192x144 JPEG) in a crawl with downloads: "
        f"{statistics.median(rates):.0f} images/s (median of {repeats}: {', '.join(f'{x:.0f}' for x in rates)}), "
        "lists and users stages included"
    )


def peak_memory(world: Path, tmp: Path) -> None:
    users = tmp / "users.txt"
    users.write_text("\n".join(sorted(read_table(world, "users")["user_id"])) + "\n")
    env = {**os.environ, "FLICKR_API_KEY": KEY, "OMP_NUM_THREADS": "1"}
    with serve_world(world, api_key=KEY) as srv:
        cmd = [sys.executable, "-c", CLI, "collect", str(tmp / "mem"), "--users-file", str(users), "--rest-url", srv.rest_url,
               "--rate", "0", "--no-download", "--enrich", "owners", "--no-progress"]
        t0 = time.perf_counter()
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        calls = sum(v for k, v in srv.stats.items() if k.startswith("flickr."))
    if result.returncode:
        raise SystemExit(result.stderr)
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"[memory] 2,500-user crawl (enrich=owners, no download): {calls} API calls in {seconds:.0f} s "
          f"({calls / seconds:.0f} calls/s), peak RSS of the collector {rss_mb:.0f} MB")
    print("         " + result.stdout.strip().replace("\n", "\n         "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2500)
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        big = tmp / "world"
        t0 = time.perf_counter()
        generate_world(big, n_users=args.users, n_photos=args.photos, render=False, seed=0, progress=False)
        print(f"world: {args.users} users, {args.photos} photos generated in {time.perf_counter() - t0:.0f} s")
        heavy = tmp / "heavy"
        generate_world(heavy, n_users=200, n_photos=args.photos, render=False, seed=1, progress=False)
        lists_cost(big, tmp, args.repeats, f"{args.users}-user world")
        lists_cost(heavy, tmp, args.repeats, "heavy users")
        images_rate(tmp, args.repeats)
        if not args.skip_memory:
            peak_memory(big, tmp)


if __name__ == "__main__":
    main()
