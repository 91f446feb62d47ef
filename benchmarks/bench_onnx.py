"""ONNX (onnxruntime, no torch) vs torch scoring throughput on this CPU, as a ratio.

Both paths score the same 640x480 JPEG files end to end (decode, preprocess,
ViT-B-32 with random weights, heads), with the same number of threads.
``--torch-free`` runs the ONNX side in a fresh venv holding only
``pip install '.[onnx]'`` (no torch, open_clip, LightGBM: what a photo app
installs), built once under ``--work``; the torch side runs here.

    .venv/bin/python benchmarks/bench_onnx.py [--images 64] [--repeats 3] [--threads 2] [--torch-free]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_service import BACKBONE, build_bundle, photo_jpegs


REPO = Path(__file__).resolve().parents[1]
ONNX_RUN = """
import json, sys, time
import interest.onnx
scorer = interest.onnx.load(sys.argv[1], threads=int(sys.argv[2]))
files = sys.argv[3:]
scorer.score(files[:2])
start = time.perf_counter()
scorer.score(files, batch_size=32)
took = time.perf_counter() - start
import importlib.util
print(json.dumps({"rate": len(files) / took, "torch": importlib.util.find_spec("torch") is not None}))
"""


def torch_free_python(work: Path) -> Path:
    """The python of a venv with only `pip install '<this project>[onnx]'` (built once under ``work``)."""
    env = work / "torch_free_env"
    python = env / "bin" / "python"
    if python.is_file():
        return python
    source = work / "torch_free_src"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, source / name)
    shutil.copytree(REPO / "interest", source / "interest", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"{source}[onnx]"], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/interest-bench-apps"))
    parser.add_argument("--torch-free", action="store_true", help="Score ONNX in a venv with only interest[onnx].")
    args = parser.parse_args()

    import torch

    import interest
    import interest.onnx
    from interest.apps.export_onnx import export_onnx

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

    def torch_free_rate(python: Path) -> float:
        run = subprocess.run([str(python), "-c", ONNX_RUN, str(export_dir), str(args.threads), *map(str, files)],
                             capture_output=True, text=True, check=True)
        answer = json.loads(run.stdout)
        if answer["torch"]:
            raise RuntimeError(f"{python}: torch is installed in the torch-free environment")
        return answer["rate"]

    python = torch_free_python(args.work) if args.torch_free else None
    torch_rates, onnx_rates = [], []
    for _ in range(args.repeats):  # interleaved, so load from other processes hits both alike
        torch_rates.append(rate(lambda: model.score(files, batch_size=32, progress=False)))
        onnx_rates.append(torch_free_rate(python) if python else rate(lambda: scorer.score(files, batch_size=32)))
    t, o = statistics.median(torch_rates), statistics.median(onnx_rates)
    where = "in a torch-free venv (interest[onnx] only)" if python else "in this process"
    print(f"{BACKBONE} (random weights), {len(files)} 640x480 JPEGs, {args.threads} threads, medians of "
          f"{args.repeats} runs; onnxruntime {where}")
    print(f"torch: {t:6.2f} images/s   onnxruntime: {o:6.2f} images/s   ONNX/torch ratio: {o / t:.2f}")


if __name__ == "__main__":
    main()
