"""A photo library scored into XMP sidecars twice: what the second run costs, against scoring without the cache.

The bundle is trained on a small rendered world over the weight-free
``perceptual/v1`` backbone (as tests/test_xmp.py). The library is ``--photos``
distinct JPEGs (the world's images, each copy re-saved with its own
one-pixel mark, so that every file has its own sha256), one in ten with a
darktable sidecar already beside it. Then, in one process:

1. first run: ``model.score(folder, cache=...)`` + ``write_sidecars``;
2. second run, same inputs: the cache's hits and the sidecars left unchanged;
3. baseline: the second run's scoring without the cache (what it cost before).

    flock /tmp/interest-heavy.lock nice -n 5 .venv/bin/python benchmarks/bench_xmp.py [--photos 10000] [--work /tmp/interest-bench-xmp]

Prints the seconds of each step, how many files were embedded, and the sidecar summary lines.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

DARKTABLE = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:darktable="http://darktable.sf.net/"
   xmp:Rating="0" darktable:xmp_version="5" darktable:history_end="1">
   <darktable:history>
    <rdf:Seq>
     <rdf:li darktable:num="0" darktable:operation="exposure" darktable:enabled="1" darktable:params="00"/>
    </rdf:Seq>
   </darktable:history>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def build(work: Path, photos: int) -> tuple[Path, Path]:
    """The bundle and the library folder (made once)."""
    from PIL import Image

    from interest.pipeline.local import embed_collection
    from interest.stages.labels import label_collection
    from interest.stages.train import train_model
    from interest.synthetic.world import generate_world

    world, library = work / "world", work / f"library-{photos}"
    if not (world / "model" / "model.json").is_file():
        generate_world(world, n_users=40, n_photos=240, n_topics=6, render=True, seed=5, progress=False)
        embed_collection(world, backbone_id="perceptual/v1", workers=0, progress=False)
        label_collection(world, clusters=19, progress=False)
        train_model(world, world / "model", progress=False)
    if not library.is_dir():
        sources = [Image.open(p).convert("RGB") for p in sorted((world / "images").glob("*.jpg"))]
        tmp = library.with_name(library.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for i in range(photos):
            image = sources[i % len(sources)].copy()
            image.putpixel((i % image.width, (i // image.width) % image.height), (i % 256, (i // 256) % 256, 7))
            folder = tmp / f"{i // 1000:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"IMG_{i:05d}.jpg", quality=90)
            if i % 10 == 0:
                (folder / f"IMG_{i:05d}.jpg.xmp").write_text(DARKTABLE, encoding="utf-8")
        tmp.rename(library)
    return world / "model", library


def run(model, library: Path, cache: Path | None) -> tuple[float, float, str, int]:
    """(seconds scoring, seconds writing sidecars, the summary line, files embedded)."""
    from interest.apps.xmp import write_sidecars

    parts = len(list(cache.rglob("*.parquet"))) if cache is not None and cache.exists() else 0
    start = time.perf_counter()
    scores = model.score([library], errors="coerce", progress=False, cache=cache)
    scored = time.perf_counter()
    report = write_sidecars(model, scores, progress=False)
    done = time.perf_counter()
    embedded = -1
    if cache is not None:  # the rows of this run's new parts
        import pyarrow.parquet as pq

        new = sorted(cache.rglob("part-*.parquet"))[parts:] if len(list(cache.rglob("*.parquet"))) > parts else []
        embedded = sum(pq.read_metadata(p).num_rows for p in new)
    return scored - start, done - scored, report.summary(), embedded


def main() -> None:
    import interest

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--work", type=Path, default=Path("/tmp/interest-bench-xmp"))
    args = parser.parse_args()
    bundle, library = build(args.work, args.photos)
    for sidecar in library.rglob("*.xmp"):  # start from the library as made: only the darktable sidecars
        if "darktable" not in sidecar.read_text(encoding="utf-8") or "interest" in sidecar.read_text(encoding="utf-8"):
            sidecar.unlink()
    for i, sidecar in enumerate(sorted(library.rglob("*.jpg"))):
        if i % 10 == 0:
            Path(str(sidecar) + ".xmp").write_text(DARKTABLE, encoding="utf-8")
    cache = args.work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    model = interest.load(bundle)
    model.score([next(library.rglob("*.jpg"))], progress=False)  # backbone loaded before timing

    for label, use_cache in (("first run", True), ("second run", True), ("baseline: second run, no cache", False)):
        score_s, xmp_s, summary, embedded = run(model, library, cache if use_cache else None)
        what = f"embedded {embedded}" if embedded >= 0 else "embedded all"
        print(f"{label}: scoring {score_s:.1f} s ({what}), sidecars {xmp_s:.1f} s; {summary}")


if __name__ == "__main__":
    main()
