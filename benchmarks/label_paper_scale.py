"""Paper scale labelling: wall time and peak memory of `label_collection`.

    .venv/bin/python benchmarks/label_paper_scale.py [--world DIR] [--repeats 3]

Generates a paper-scale synthetic world (2,500 users, 500,000 photos, 512-d
embeddings written directly, not rendered) into ``--world`` unless one is
there, then labels it ``--repeats`` times, each in a fresh process, and prints
each run's wall and CPU seconds and peak resident memory, then their medians
(CPU seconds are the steadier figure on a machine shared with other work).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from interest.stages.labels import label_collection
labels = label_collection(sys.argv[1], seed=0, progress=False)
wall = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "wall_s": wall,
    "cpu_s": usage.ru_utime + usage.ru_stime,
    "peak_rss_mb": usage.ru_maxrss / 1024,
    "photos": len(labels),
    "partitions": int(labels["partition"].nunique()),
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=Path("benchmarks/out/paper-scale-labels"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not (args.world / "ground_truth" / "world.json").is_file():
        from interest.synthetic.world import generate_world

        generate_world(args.world, n_users=2500, n_photos=500_000, embed_dim=512, render=False, overwrite=True)
    runs = []
    for i in range(args.repeats):
        cmd = [sys.executable, "-c", CHILD, str(args.world)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        run = runs[-1]
        print(
            f"run {i + 1}: {run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} s CPU, peak RSS {run['peak_rss_mb']:.0f} MB, "
            f"{run['photos']} photos, {run['partitions']} partitions",
            flush=True,
        )
    print(
        f"median: {statistics.median(r['wall_s'] for r in runs):.1f} s wall, "
        f"{statistics.median(r['cpu_s'] for r in runs):.1f} s CPU, "
        f"peak RSS {statistics.median(r['peak_rss_mb'] for r in runs):.0f} MB"
    )


if __name__ == "__main__":
    main()
