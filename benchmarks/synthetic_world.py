"""Time and peak memory of generating synthetic worlds.

Each run is a fresh Python process (so its peak RSS is its own), repeated;
the medians are printed.

    .venv/bin/python benchmarks/synthetic_world.py                 # both worlds, 3 runs each
    .venv/bin/python benchmarks/synthetic_world.py --world small --repeat 5

``paper``: 2,500 users, 500,000 photos, 512-d embeddings, not rendered.
``small``: the default rendered world (300 users, 3,000 photos, 192x144 JPEGs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORLDS = {
    "paper": dict(n_users=2500, n_photos=500_000, embed_dim=512, render=False),
    "small": dict(n_users=300, n_photos=3000, render=True),
}


def _one_run(world: str, out: Path) -> None:
    from interest.synthetic import generate_world

    started = time.perf_counter()
    summary = generate_world(out, seed=0, progress=False, **WORLDS[world])
    wall = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"wall_s": wall, "peak_rss_mib": peak_mib, "summary": summary}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=[*WORLDS, "both"], default="both")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _one_run(args.world, args.out)
        return

    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    for world in WORLDS if args.world == "both" else [args.world]:
        walls, peaks = [], []
        for _ in range(args.repeat):
            out = Path(tempfile.mkdtemp(prefix=f"synthetic-{world}-", dir=args.tmp)) / "world"
            try:
                done = subprocess.run(
                    [sys.executable, __file__, "--one", "--world", world, "--out", str(out)],
                    check=True, capture_output=True, text=True,
                )
            finally:
                shutil.rmtree(out.parent, ignore_errors=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            walls.append(result["wall_s"])
            peaks.append(result["peak_rss_mib"])
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in result["summary"]["seconds"].items())
            print(f"{world}: {result['wall_s']:.1f} s, peak RSS {result['peak_rss_mib']:.0f} MiB ({stages}; "
                  f"{result['summary']['n_favorites']} favourites)")
        print(f"{world} median of {args.repeat}: {statistics.median(walls):.1f} s wall, "
              f"{statistics.median(peaks):.0f} MiB peak RSS  {WORLDS[world]}")


if __name__ == "__main__":
    main()
