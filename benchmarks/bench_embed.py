"""Embedding throughput: `interest embed` against the encode-only ceiling and a naive loop.

On a generated folder of 640x480 JPEGs (Flickr's `z` size), for an open_clip
model with random weights (``pretrained none``: the speed is the same as with
real weights, and nothing is downloaded):

1. ceiling: the model alone on preprocessed tensors already in memory, at the
   best of several batch sizes;
2. end-to-end: ``embed_folder`` (what ``interest embed FOLDER --batch-size B``
   runs) at the ceiling's batch size with the default workers, the backbone
   already loaded: decoding, preprocessing, encoding, hashing, writing
   Parquet parts and the table;
3. naive: one image at a time (open, preprocess, encode).

The batch size of the ceiling is chosen first by a sweep; then each repeat
runs the three modes one after the other, each in its own process (so that
its peak memory, max RSS with workers, is its own, and so that load from
other users of the machine falls on all three alike). Figures are medians
over ``--repeats``; the ratios are medians of the per-repeat ratios.

    python benchmarks/bench_embed.py                      # ViT-B-32 on CPU
    python benchmarks/bench_embed.py --device cuda --model ViT-L-14 --images 2000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_folder(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` photo-like 640x480 JPEGs: smooth colour fields, texture and noise (JPEG-typical sizes)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:480, 0:640].astype(np.float32) / 480
    for i in range(n):
        a, b, c = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3), rng.uniform(2, 30)
        theta = rng.uniform(0, np.pi)
        pattern = np.sin(c * (np.cos(theta) * x + np.sin(theta) * y) * 2 * np.pi)[..., None]
        img = 255 * (a * (1 - y[..., None]) + b * y[..., None]) * (0.8 + 0.2 * pattern)
        img += rng.normal(0, 8, (480, 640, 1))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img{i:05d}.jpg", quality=90)


def peak_rss_mb() -> float:
    """Peak resident memory of this process plus that of its largest finished child (Linux: KiB units)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def run_mode(args: argparse.Namespace) -> dict:
    import torch

    from interest.imaging.backbones import load_openclip
    from interest.pipeline.local import embed_folder
    from interest.pipeline.decoder import default_workers
    from interest.imaging.images import load_image

    backbone = load_openclip(args.model, "none", device=args.device, precision=args.precision)
    files = sorted(Path(args.folder).glob("*.jpg"))
    result: dict = {"mode": args.mode, "torch_threads": torch.get_num_threads()}
    if args.mode == "ceiling":
        n = min(len(files), args.ceiling_images)
        batch = torch.from_numpy(np.stack([backbone.transform(load_image(f)) for f in files[:n]]))
        rates = {}
        for bs in args.batch_sizes:
            backbone.encode(batch[:bs])  # warm-up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                for start in range(0, n, bs):
                    backbone.encode(batch[start : start + bs])
                times.append(time.perf_counter() - t0)
            rates[bs] = n / statistics.median(times)
        best = max(rates, key=rates.get)
        result.update(images=n, per_batch_size={str(k): round(v, 2) for k, v in rates.items()},
                      best_batch_size=best, images_per_s=round(rates[best], 2))
    elif args.mode == "end_to_end":
        times = []
        backbone.encode(torch.from_numpy(backbone.transform(Image.new("RGB", (224, 224)))[None]))  # warm-up
        for r in range(args.repeats):
            out = Path(tempfile.mkdtemp(prefix=f"bench_e2e{r}_"))
            t0 = time.perf_counter()
            embed_folder(args.folder, out, backbone=backbone, batch_size=args.batch_sizes[0], progress=False)
            times.append(time.perf_counter() - t0)
        result.update(images=len(files), images_per_s=round(len(files) / statistics.median(times), 2),
                      batch_size=args.batch_sizes[0], workers=default_workers(args.device, backbone),
                      seconds=[round(t, 2) for t in times])
    else:  # naive
        n = min(len(files), args.naive_images)
        model, preprocess = backbone.model, backbone.preprocess
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for f in files[:n]:
                x = preprocess(Image.open(f).convert("RGB"))[None].to(args.device)
                with torch.inference_mode():
                    model.encode_image(x).cpu()
            times.append(time.perf_counter() - t0)
        result.update(images=n, images_per_s=round(n / statistics.median(times), 2))
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--images", type=int, default=320, help="JPEGs in the generated folder (end-to-end set)")
    parser.add_argument("--ceiling-images", type=int, default=128)
    parser.add_argument("--naive-images", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", default=None, help="reuse a folder of JPEGs instead of generating one")
    parser.add_argument("--mode", choices=["ceiling", "end_to_end", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args)))
        return

    folder = Path(args.folder or tempfile.mkdtemp(prefix="bench_embed_")) / "jpegs"
    if not folder.is_dir():
        make_folder(folder, args.images)
    print(f"# {args.model} (random weights), {args.device}, {args.precision}; {len(list(folder.glob('*.jpg')))} "
          f"640x480 JPEGs in {folder}; {os.cpu_count()} CPUs; medians of {args.repeats}; "
          f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    common = ["--folder", str(folder), "--model", args.model, "--device", args.device, "--precision", args.precision,
              "--ceiling-images", str(args.ceiling_images), "--naive-images", str(args.naive_images)]

    def run(mode: str, batch_sizes: list[int]) -> dict:
        cmd = [sys.executable, __file__, "--mode", mode, "--repeats", "1", *common,
               "--batch-sizes", *map(str, batch_sizes)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(result), flush=True)
        return result

    best = run("ceiling", args.batch_sizes)["best_batch_size"]
    runs: dict[str, list[dict]] = {"ceiling": [], "end_to_end": [], "naive": []}
    for _ in range(args.repeats):
        for mode in runs:
            runs[mode].append(run(mode, [best]))

    def median(mode: str) -> float:
        return statistics.median(r["images_per_s"] for r in runs[mode])

    def peak(mode: str) -> float:
        return max(r["peak_rss_mb"] for r in runs[mode])

    to_ceiling = statistics.median(e["images_per_s"] / c["images_per_s"]
                                   for e, c in zip(runs["end_to_end"], runs["ceiling"]))
    to_naive = statistics.median(e["images_per_s"] / n["images_per_s"]
                                 for e, n in zip(runs["end_to_end"], runs["naive"]))
    print(f"ceiling (encode only, batch {best}): {median('ceiling'):.2f} img/s, peak {peak('ceiling'):.0f} MB")
    print(f"end-to-end (interest embed, batch {runs['end_to_end'][0]['batch_size']}, "
          f"{runs['end_to_end'][0]['workers']} workers): {median('end_to_end'):.2f} img/s = {to_ceiling:.2f} "
          f"of the ceiling, peak {peak('end_to_end'):.0f} MB")
    print(f"naive loop: {median('naive'):.2f} img/s; end-to-end / naive = {to_naive:.2f}x, "
          f"peak {peak('naive'):.0f} MB")


if __name__ == "__main__":
    main()
