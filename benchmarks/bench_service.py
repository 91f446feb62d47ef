"""The HTTP service on loopback: requests per second and p50/p99 latency at concurrency 1, 8 and 32,
against two baselines measured in the same run on the same JPEGs.

Each request uploads one 640x480 JPEG to POST /score; the model is a bundle
trained on a small synthetic world embedded with open_clip ViT-B-32 (random
weights: the timing is that of the real architecture, the scores mean
nothing). The service runs as `interest serve` in its own process, as it
would beside a photo app; the load comes from client threads here.

Baselines: `interest embed` on a folder of the same JPEGs (its images/s, from
the embedding loop's own timing in manifest.json), and the encoder's time for
one image (decoded image -> embedding, in this process, with the service idle).

    .venv/bin/python benchmarks/bench_service.py [--repeats 3] [--work /tmp/interest-bench-apps]

Prints the baselines, then one line per concurrency level: medians over the repeats.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

BACKBONE = "openclip/ViT-B-32/none"


def build_bundle(work: Path, backbone_id: str = BACKBONE) -> Path:
    """A model bundle for ``backbone_id`` under ``work`` (trained once, then reused)."""
    from interest.pipeline.local import embed_collection
    from interest.stages.labels import label_collection
    from interest.stages.train import train_model
    from interest.synthetic.world import generate_world

    root = work / backbone_id.replace("/", "_")
    bundle = root / "model"
    if (bundle / "model.json").is_file():
        return bundle
    generate_world(root, n_users=40, n_photos=160, n_topics=6, render=True, seed=0, progress=False, overwrite=True)
    embed_collection(root, backbone_id=backbone_id, workers=0, progress=False)
    label_collection(root, clusters=16, progress=False)
    train_model(root, bundle, progress=False)
    return bundle


def photo_jpegs(work: Path, n: int, size: tuple[int, int] = (640, 480)) -> list[Path]:
    """``n`` distinct 640x480 JPEGs with photo-like structure (smooth gradients, shapes, noise)."""
    from PIL import Image, ImageDraw

    folder = work / f"jpegs_{size[0]}x{size[1]}"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"photo_{i:04d}.jpg"
        paths.append(path)
        if path.is_file():
            continue
        w, h = size
        y, x = np.mgrid[0:h, 0:w] / max(w, h)
        base = rng.uniform(0, 255, 3)
        tilt = rng.uniform(-120, 120, (2, 3))
        pixels = base + x[..., None] * tilt[0] + y[..., None] * tilt[1] + rng.normal(0, 6, (h, w, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
            draw.ellipse([x0, y0, x0 + rng.uniform(20, 200), y0 + rng.uniform(20, 200)], fill=tuple(rng.integers(0, 255, 3).tolist()))
        image.save(path, quality=88)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(bundle: Path, port: int) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "interest", "serve", str(bundle), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the service did not start within 180 s")


def load(url: str, jpegs: list[bytes], concurrency: int, requests: int) -> tuple[float, list[float]]:
    """Send ``requests`` POST /score with ``concurrency`` clients; (wall seconds, per-request latencies)."""
    import httpx

    def one(i: int) -> float:
        with httpx.Client(base_url=url, timeout=300) as client:  # a client per request: apps rarely pool
            start = time.perf_counter()
            r = client.post("/score", files=[("files", (f"{i}.jpg", jpegs[i % len(jpegs)], "image/jpeg"))])
            took = time.perf_counter() - start
        if r.status_code != 200 or "ci_score" not in r.json()["results"][0]:
            raise RuntimeError(f"request {i}: {r.status_code} {r.text[:200]}")
        return took

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, range(requests)))
    return time.perf_counter() - start, latencies


def embed_baseline(work: Path, jpegs: list[Path]) -> float:
    """`interest embed`'s images per second on ``jpegs`` (ViT-B-32, random weights, its default workers)."""
    import json
    import shutil

    folder = work / "embed_baseline_photos"
    out = work / "embed_baseline_collection"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    folder.mkdir(parents=True)
    for p in jpegs:
        shutil.copyfile(p, folder / p.name)
    subprocess.run([sys.executable, "-m", "interest", "embed", str(folder), "--out", str(out), "--model", "ViT-B-32",
                    "--pretrained", "none", "--device", "cpu", "--no-progress"], check=True, capture_output=True)
    info = json.loads((out / "manifest.json").read_text())["tables"][f"features/{BACKBONE}"]
    return info["embedded"] / info["seconds"]


ENCODER_RUN = """
import statistics, sys, time
from concurrent.futures import ThreadPoolExecutor
from interest.imaging.backbones import load_backbone
from interest.imaging.images import load_image
backbone = load_backbone(sys.argv[1])
image = load_image(sys.argv[2])

def median_ms():
    backbone.embed([image])
    times = []
    for _ in range(int(sys.argv[3])):
        start = time.perf_counter()
        backbone.embed([image])
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000

main = median_ms()
with ThreadPoolExecutor(1) as pool:  # where the service runs the model: a pool thread
    worker = pool.submit(median_ms).result()
print(main, worker)
"""


def encoder_one_image_ms(jpeg: Path, repeats: int = 9) -> tuple[float, float]:
    """Median milliseconds for the backbone to embed one decoded image (preprocessing + forward pass):
    (called from the main thread, from a pool thread as in the service).

    In a fresh process, as the service's is: nothing else of the benchmark shares its threads. On a
    loaded machine torch's two intra-op threads (main thread) can be far slower than a pool thread's
    call; the smaller of the two is the baseline, the strictest one for the service.
    """
    run = subprocess.run([sys.executable, "-c", ENCODER_RUN, BACKBONE, str(jpeg), str(repeats)],
                         capture_output=True, text=True, check=True)
    main, worker = (float(v) for v in run.stdout.strip().splitlines()[-1].split())
    return main, worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/interest-bench-apps"))
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--requests-per-client", type=int, default=4)
    args = parser.parse_args()

    bundle = build_bundle(args.work)
    jpeg_paths = photo_jpegs(args.work, 64)
    jpegs = [p.read_bytes() for p in jpeg_paths]
    port = free_port()
    proc = start_service(bundle, port)
    url = f"http://127.0.0.1:{port}"
    # every repeat measures the baselines and the service in turn, so load from other processes
    # (the machine is shared) hits them alike; ratios are taken within a repeat
    embed_rates, encoder_ms, encoder_runs = [], [], []
    rows: dict[int, dict[str, list[float]]] = {level: {"rps": [], "p50": [], "p99": []} for level in args.levels}
    try:
        load(url, jpegs, 2, 4)  # warm-up
        for _ in range(args.repeats):
            embed_rates.append(embed_baseline(args.work, jpeg_paths))
            encoder_main, encoder_worker = encoder_one_image_ms(jpeg_paths[0])
            encoder_runs.append((encoder_main, encoder_worker))
            encoder_ms.append(min(encoder_main, encoder_worker))
            for level in args.levels:
                n = max(8, level * args.requests_per_client)
                wall, lat = load(url, jpegs, level, n)
                rows[level]["rps"].append(n / wall)
                rows[level]["p50"].append(float(np.percentile(lat, 50)) * 1000)
                rows[level]["p99"].append(float(np.percentile(lat, 99)) * 1000)
    finally:
        proc.terminate()
        proc.wait(30)
    med = statistics.median
    print(f"service on loopback, {BACKBONE} (random weights), one 640x480 JPEG per POST /score, "
          f"{os.cpu_count()} CPUs, medians of {args.repeats} interleaved runs")
    print(f"baseline: `interest embed` {med(embed_rates):.2f} images/s (runs: {', '.join(f'{r:.2f}' for r in embed_rates)}); "
          f"encoder, one image: {med(encoder_ms):.1f} ms (runs, main/pool thread: "
          f"{', '.join(f'{a:.0f}/{b:.0f}' for a, b in encoder_runs)})")
    for level in args.levels:
        r = rows[level]
        rps_ratio = med([a / b for a, b in zip(r["rps"], embed_rates)])
        p50_ratio = med([a / b for a, b in zip(r["p50"], encoder_ms)])
        print(f"concurrency {level:3d}: {med(r['rps']):7.2f} req/s ({rps_ratio:.2f}x embed)   "
              f"p50 {med(r['p50']):8.1f} ms ({p50_ratio:.2f}x encoder)   p99 {med(r['p99']):8.1f} ms   "
              f"({max(8, level * args.requests_per_client)} requests/run)")


if __name__ == "__main__":
    main()
