"""The image encoder on a CPU: `interest embed` with each encoder against torch eager's encode-only ceiling.

On a generated folder of 640x480 JPEGs, for an open_clip model with random
weights (``pretrained none``: the same speed as real weights, nothing
downloaded), each repeat measures, one after the other in this process:

1. ceiling: torch eager fp32 alone on preprocessed tensors already in memory
   (what ``interest embed`` could reach if decoding were free), at the
   embed command's batch size;
2. encode-only with the onnxruntime fp32 and int8 encoders, the same way;
3. end to end: ``embed_folder`` (what ``interest embed FOLDER`` runs) with
   the default encoder (``auto``: onnxruntime fp32 on a CPU), with
   ``--encoder torch`` (eager, the reference) and with ``--precision int8``:
   decoding, preprocessing in the default worker processes, encoding,
   hashing, Parquet parts and the table; the backbones already loaded.

Ratios are taken close in time, so that load from other users of the machine
falls on both sides alike: the encode-only rates interleave the encoders batch
by batch, and each end-to-end run is divided by the mean of two ceiling
measurements (one batch each) taken just before and just after it; then the
median over ``--repeats``.
Agreement: cosine between each end-to-end table and the eager one, row by row.

    python benchmarks/bench_encoder.py --images 320 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_embed import make_folder  # noqa: E402 - the same generated photos as the embed benchmark


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def encode_rates(backbones: dict, batch, batch_size: int) -> dict[str, float]:
    """Images per second of each backbone's ``encode_raw`` over ``batch``, the backbones taking turns per chunk."""
    seconds = dict.fromkeys(backbones, 0.0)
    for start in range(0, len(batch), batch_size):
        for name, backbone in backbones.items():
            started = time.perf_counter()
            backbone.encode_raw(batch[start:start + batch_size])
            seconds[name] += time.perf_counter() - started
    return {name: len(batch) / s for name, s in seconds.items()}


def end_to_end(folder: Path, backbone, batch_size: int) -> tuple[float, np.ndarray]:
    """Images per second of ``embed_folder`` and the table's embeddings (rows in file order)."""
    from interest.core.collection import read_embeddings
    from interest.pipeline.local import embed_folder

    out = Path(tempfile.mkdtemp(prefix="bench_encoder_"))
    try:
        started = time.perf_counter()
        embed_folder(folder, out / "c", backbone=backbone, batch_size=batch_size, progress=False)
        seconds = time.perf_counter() - started
        _, ids, emb = read_embeddings(out / "c", backbone.id)
        order = np.argsort(np.asarray(ids, dtype=str))
        return len(ids) / seconds, np.asarray(emb, dtype=np.float32)[order]
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=320, help="JPEGs in the generated folder (end-to-end set)")
    parser.add_argument("--ceiling-images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64, help="the embed command's CPU default")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", default=None, help="reuse a folder of JPEGs instead of generating one")
    args = parser.parse_args()

    import torch

    from interest.imaging.backbones import load_openclip
    from interest.imaging.images import load_image

    folder = Path(args.folder or tempfile.mkdtemp(prefix="bench_encoder_")) / "jpegs"
    if not folder.is_dir():
        make_folder(folder, args.images)
    files = sorted(folder.glob("*.jpg"))
    print(f"# {args.model} (random weights) on {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); {len(files)} 640x480 JPEGs; batch {args.batch_size}; medians of "
          f"{args.repeats}; load average before: {os.getloadavg()[0]:.1f}", flush=True)
    started = time.perf_counter()
    backbones = {
        "torch": load_openclip(args.model, "none", device="cpu", encoder="torch"),
        "auto": load_openclip(args.model, "none", device="cpu"),
        "int8": load_openclip(args.model, "none", device="cpu", precision="int8"),
    }
    print(f"# backbones loaded (exports made or found in the cache) in {time.perf_counter() - started:.0f} s; "
          f"auto = {backbones['auto'].encoder}, int8 = {backbones['int8'].encoder}", flush=True)
    batch = np.stack([backbones["torch"].transform(load_image(f)) for f in files[:args.ceiling_images]])
    for backbone in backbones.values():
        backbone.encode_raw(batch[:args.batch_size])  # warm-up (the int8 one also fills its agreement sample)

    rows: list[dict] = []
    for repeat in range(args.repeats):
        row = {f"encode_{name}": rate for name, rate in encode_rates(backbones, batch, args.batch_size).items()}
        emb = {}
        ceiling = {"torch": backbones["torch"]}
        for name, backbone in backbones.items():
            before = encode_rates(ceiling, batch[:args.batch_size], args.batch_size)["torch"]
            row[f"e2e_{name}"], emb[name] = end_to_end(folder, backbone, args.batch_size)
            after = encode_rates(ceiling, batch[:args.batch_size], args.batch_size)["torch"]
            row[f"ceiling_{name}"] = (before + after) / 2
        row["cos_auto"] = float(np.min(np.sum(emb["auto"] * emb["torch"], axis=1)))
        row["cos_int8_mean"] = float(np.mean(np.sum(emb["int8"] * emb["torch"], axis=1)))
        row["cos_int8_min"] = float(np.min(np.sum(emb["int8"] * emb["torch"], axis=1)))
        rows.append(row)
        print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v:.4f}" if k.startswith("cos") else f"{k} {v:.1f} img/s"
                                                  for k, v in row.items()), flush=True)

    def ratio(name: str) -> float:
        baseline = "encode_torch" if name.startswith("encode") else f"ceiling_{name[4:]}"
        return statistics.median(r[name] / r[baseline] for r in rows)

    def rate(name: str) -> float:
        return statistics.median(r[name] for r in rows)

    print(f"ceiling (torch eager fp32, encode only): {rate('encode_torch'):.1f} img/s = 1.00 (around the end-to-end "
          f"runs: {statistics.median(r[k] for r in rows for k in r if k.startswith('ceiling_')):.1f} img/s)")
    print(f"encode only, onnxruntime fp32: {rate('encode_auto'):.1f} img/s = {ratio('encode_auto'):.2f} of the ceiling")
    print(f"encode only, onnxruntime int8: {rate('encode_int8'):.1f} img/s = {ratio('encode_int8'):.2f}")
    print(f"interest embed, default encoder ({backbones['auto'].encoder}): {rate('e2e_auto'):.1f} img/s = "
          f"{ratio('e2e_auto'):.2f} of the ceiling; min cosine to eager {min(r['cos_auto'] for r in rows):.6f}")
    print(f"interest embed --encoder torch: {rate('e2e_torch'):.1f} img/s = {ratio('e2e_torch'):.2f}")
    print(f"interest embed --precision int8: {rate('e2e_int8'):.1f} img/s = {ratio('e2e_int8'):.2f}; cosine to "
          f"eager mean {statistics.median(r['cos_int8_mean'] for r in rows):.4f}, "
          f"min {min(r['cos_int8_min'] for r in rows):.4f}")


if __name__ == "__main__":
    main()
