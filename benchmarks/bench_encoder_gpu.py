"""On a GPU: `interest embed` at fp16 against the GPU's encode-only ceiling, for ViT-B-32 and ViT-L-14.

For each model (random weights, nothing downloaded), each repeat measures:

1. ceiling: torch eager under fp16 autocast on preprocessed tensors already
   on the GPU, at the embed command's GPU batch size (what the GPU alone can do);
2. end to end: ``embed_folder`` (what ``interest embed FOLDER --device cuda
   --precision fp16`` runs) with its default batch size and workers: decoding
   and preprocessing in worker processes, copies to the GPU, encoding, hashing,
   Parquet parts and the table; the backbone already loaded.

Target (issue 10): end to end >= 0.85 of the ceiling. Ratios are taken within
a repeat, then the median over ``--repeats``. On a GPU the encoder is torch
eager (``--encoder auto`` keeps it there: no onnxruntime GPU encoder has been
measured against it).

    python benchmarks/bench_encoder_gpu.py --images 2048 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_embed import make_folder  # noqa: E402 - the same generated photos as the CPU benchmarks
from bench_encoder import cpu_name, end_to_end  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-L-14"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--ceiling-images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=256, help="the embed command's GPU default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", default=None, help="reuse a folder of JPEGs instead of generating one")
    args = parser.parse_args()

    import torch

    from interest.imaging.backbones import load_openclip
    from interest.imaging.images import load_image

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible to torch: this benchmark needs one (the CPU one is bench_encoder.py)")
    folder = Path(args.folder or tempfile.mkdtemp(prefix="bench_encoder_gpu_")) / "jpegs"
    if not folder.is_dir():
        make_folder(folder, args.images)
    files = sorted(folder.glob("*.jpg"))
    print(f"# {torch.cuda.get_device_name()} ({cpu_name()}, {os.cpu_count()} CPUs), torch {torch.__version__}; "
          f"{len(files)} 640x480 JPEGs; fp16; batch {args.batch_size}; medians of {args.repeats}", flush=True)
    for model in args.models:
        backbone = load_openclip(model, "none", device=args.device, precision="fp16")
        batch = torch.from_numpy(np.stack([backbone.transform(load_image(f)) for f in files[:args.ceiling_images]]))
        on_gpu = batch.to(args.device)
        backbone.encode_raw(on_gpu[:args.batch_size])  # warm-up: kernels chosen, memory pooled
        ratios, ceilings, rates = [], [], []
        for _ in range(args.repeats):
            torch.cuda.synchronize()
            started = time.perf_counter()
            for start in range(0, len(on_gpu), args.batch_size):
                backbone.encode_raw(on_gpu[start:start + args.batch_size])  # returns on the CPU: synchronised
            ceiling = len(on_gpu) / (time.perf_counter() - started)
            rate, _ = end_to_end(folder, backbone, args.batch_size)
            ceilings.append(ceiling)
            rates.append(rate)
            ratios.append(rate / ceiling)
        print(f"{model} fp16: ceiling {statistics.median(ceilings):.0f} img/s, interest embed "
              f"{statistics.median(rates):.0f} img/s = {statistics.median(ratios):.2f} of the ceiling "
              f"(target >= 0.85)", flush=True)
        del backbone, on_gpu
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
