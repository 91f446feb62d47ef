"""Ctrl-C during `interest embed`: exit 130, one line saying how to go on, no traceback from any worker."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow.parquet as pq

from interest.core.collection import read_table, write_table

# Ctrl-C handled as when started from a terminal: a test run started in the background without job
# control (`make test &`, nohup) hands SIGINT down ignored, and an ignored SIGINT stays ignored
CLI = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
       "sys.argv[0] = 'interest'; from interest.cli import main; main()")


def test_ctrl_c_during_embed_exits_130_and_a_rerun_finishes(rendered_world, tmp_path):
    root = tmp_path / "coll"
    shutil.copytree(rendered_world / "images", root / "images")
    photos = read_table(rendered_world, "photos")[["photo_id", "path"]]
    # the same files under several ids: enough rows for the interrupt to land inside the embedding loop
    many = pd.concat([photos.assign(photo_id=photos["photo_id"] + f"-{k}") for k in range(2)], ignore_index=True)
    write_table(root, "photos", many)
    cmd = [sys.executable, "-c", CLI, "embed", str(root), "--backbone", "perceptual/v1", "--workers", "2",
           "--part-size", "16", "--batch-size", "16", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a terminal's Ctrl-C goes to the whole process group: the decoding workers get it too
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    parts = root / "features" / "perceptual" / "v1" / "parts"
    deadline = time.monotonic() + 120
    while proc.poll() is None and not (parts.is_dir() and any(parts.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the embedding finished before the interrupt"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [line for line in err.strip().splitlines() if not line.startswith("WARNING")]
    assert lines == ["interrupted: the embeddings finished so far are kept; re-run the same command to continue"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    table = pq.read_table(root / "features" / "perceptual" / "v1" / "embeddings.parquet")
    assert sorted(table.column("photo_id").to_pylist()) == sorted(many["photo_id"])
