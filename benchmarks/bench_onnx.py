"""ONNX (onnxruntime, no torch) vs torch scoring throughput on this CPU, as a ratio.

Both paths score the same 640x480 JPEG files end to end (decode, preprocess,
ViT-B-32 with random weights, heads), with the same number of threads.

    .venv/bin/python benchmarks/bench_onnx.py [--images 64] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench_service import BACKBONE, build_bundle, photo_jpegs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/interest-bench-apps"))
    args = parser.parse_args()

    import torch

    import interest
    import interest.onnx
    from interest.serve.export_onnx import export_onnx

    torch.set_num_threads(args.threads)
    bundle = build_bundle(args.work)
    export_dir = args.work / "onnx_vitb32"
    if not (export_dir / "interest-onnx.json").is_file():
        export_onnx(bundle, export_dir)
    files = photo_jpegs(args.work, args.images)
    model = interest.load(bundle)
    scorer = interest.onnx.load(export_dir, threads=args.threads)
    model.score(files[:2], progress=False)  # load the backbone, warm caches
    scorer.score(files[:2])

    def rate(fn) -> float:
        start = time.perf_counter()
        fn()
        return len(files) / (time.perf_counter() - start)

    torch_rates, onnx_rates = [], []
    for _ in range(args.repeats):  # interleaved, so load from other processes hits both alike
        torch_rates.append(rate(lambda: model.score(files, batch_size=32, progress=False)))
        onnx_rates.append(rate(lambda: scorer.score(files, batch_size=32)))
    t, o = statistics.median(torch_rates), statistics.median(onnx_rates)
    print(f"{BACKBONE} (random weights), {len(files)} 640x480 JPEGs, {args.threads} threads, medians of {args.repeats} runs")
    print(f"torch: {t:6.2f} images/s   onnxruntime: {o:6.2f} images/s   ONNX/torch ratio: {o / t:.2f}")


if __name__ == "__main__":
    main()
