"""kill -9 at several points of a crawl, then --resume: the tables of an uninterrupted crawl."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd

from interest.stages.collect import CollectConfig, collect
from interest.core.collection import read_table
from interest.synthetic.server import FaultConfig, serve_world

KEY = "resume-key-8c1e"
# Ctrl-C handled as when started from a terminal: a test run started in the background without job
# control (`make test &`, nohup) hands SIGINT down ignored, and an ignored SIGINT stays ignored
CLI = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
       "sys.argv[0] = 'interest'; from interest.cli import main; main()")
SETTINGS = {"enrich": "photos", "threads": 4}


def _tables(root):
    return {name: read_table(root, name) for name in ("users", "photos", "favorites")}


def _cli(out, seeds, srv, *extra):
    return [
        sys.executable, "-c", CLI, "collect", str(out), "--users", ",".join(seeds), "--rest-url", srv.rest_url,
        "--image-host", srv.image_host, "--rate", "0", "--threads", str(SETTINGS["threads"]),
        "--enrich", SETTINGS["enrich"], "--no-progress", *extra,
    ]


def test_killed_crawl_resumes_to_identical_tables(rendered_world, tmp_path, monkeypatch):
    monkeypatch.setenv("FLICKR_API_KEY", KEY)
    seeds = sorted(read_table(rendered_world, "users")["user_id"])[:20]
    reference = tmp_path / "reference"
    with serve_world(rendered_world, api_key=KEY) as srv:
        config = CollectConfig(rest_url=srv.rest_url, image_host=srv.image_host, rate=0, users=seeds, **SETTINGS)
        collect(reference, config, progress=False)

    out = tmp_path / "killed"
    env = {**os.environ, "FLICKR_API_KEY": KEY, "OMP_NUM_THREADS": "1"}
    # slow answers stretch the crawl so that each kill lands inside the stage it aims at
    faults = FaultConfig(slow=1.0, slow_seconds=0.02)
    kills = [  # (counter, how many more requests of it before SIGKILL): users, lists, per-photo, downloads
        ("flickr.people.getInfo", 8),
        ("flickr.profile.getProfile", 30),
        ("flickr.photos.getInfo", 40),
        ("image", 30),
    ]
    killed = 0
    with serve_world(rendered_world, faults=faults, api_key=KEY) as srv:
        for run, (counter, more) in enumerate(kills):
            start = srv.stats[counter]
            proc = subprocess.Popen(_cli(out, seeds, srv, *(["--resume"] if run else [])), env=env, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 60
            while proc.poll() is None and srv.stats[counter] - start < more and time.monotonic() < deadline:
                time.sleep(0.002)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                killed += 1
            proc.wait()
        done = subprocess.run(_cli(out, seeds, srv, "--resume"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert killed >= 3  # the kills really interrupted the crawl
    want, got = _tables(reference), _tables(out)
    for name in want:
        pd.testing.assert_frame_equal(got[name], want[name], obj=name)
        key = ["user_id", "photo_id"] if name == "favorites" else [f"{name[:-1]}_id"]
        assert not got[name].duplicated(key).any()
    # no orphan, no temporary file: images/ holds exactly the files the photos table names
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and ".collect" not in p.parts}
    assert not [f for f in files if f.endswith(".tmp")]
    assert {f for f in files if f.startswith("images/")} == set(got["photos"]["path"].dropna())
    assert (got["photos"]["status"] == "ok").all()


def test_cli_dry_run_prints_the_plan(rendered_world, tmp_path):
    seeds = sorted(read_table(rendered_world, "users")["user_id"])[:4]
    env = {**os.environ, "FLICKR_API_KEY": KEY}
    with serve_world(rendered_world, api_key=KEY) as srv:
        cmd = _cli(tmp_path / "out", seeds, srv, "--dry-run")
        cmd[cmd.index("--rate") + 1] = "360000"  # the probe calls share the limit: keep it fast
        result = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert dict(srv.stats) == {"flickr.favorites.getPublicList": 4}
    assert result.returncode == 0, result.stderr
    assert "lists" in result.stdout and "at 360000 calls/hour" in result.stdout
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_cli_user_mistake_is_one_line_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", CLI, "collect", str(tmp_path / "out"), "--max-users", "-1", "--users", "1@N00"],
        env={**os.environ, "FLICKR_API_KEY": KEY}, capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "max_users" in result.stderr


class _Hold:
    """A server hook that keeps the n-th matching request waiting until released.

    The crawl cannot finish while one of its requests is held, so a Ctrl-C sent
    once the hold is reached always lands mid-crawl, however loaded the machine.
    """

    def __init__(self, n: int) -> None:
        self.n, self.seen = n, 0
        self.lock = threading.Lock()
        self.reached, self.released = threading.Event(), threading.Event()

    def __call__(self, reply):
        with self.lock:
            self.seen += 1
            hit = self.seen == self.n
        if hit:
            self.reached.set()
            self.released.wait(60)
        return reply


def test_ctrl_c_exits_130_with_one_line_and_resume_finishes(rendered_world, tmp_path, monkeypatch):
    monkeypatch.setenv("FLICKR_API_KEY", KEY)
    seeds = sorted(read_table(rendered_world, "users")["user_id"])[:6]
    reference = tmp_path / "reference"
    with serve_world(rendered_world, api_key=KEY) as srv:
        collect(reference, CollectConfig(rest_url=srv.rest_url, image_host=srv.image_host, rate=0, users=seeds, **SETTINGS), progress=False)
    out = tmp_path / "out"
    env = {**os.environ, "FLICKR_API_KEY": KEY, "OMP_NUM_THREADS": "1"}
    with serve_world(rendered_world, faults=FaultConfig(slow=1.0, slow_seconds=0.02), api_key=KEY) as srv:
        # Ctrl-C (the signal a terminal sends) during API calls, then during downloads
        for run, stage in enumerate(["api", "image"]):
            hold = _Hold(20 if stage == "api" else 10)
            if stage == "api":
                srv.tamper_api = lambda params, reply: hold(reply) if params.get("method") == "flickr.photos.getInfo" else reply
            else:
                srv.tamper_api, srv.tamper_image = None, lambda photo_id, body: hold(body)
            proc = subprocess.Popen(_cli(out, seeds, srv, *(["--resume"] if run else [])), env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert hold.reached.wait(60), f"the crawl never reached its {hold.n}th {stage} request"
            proc.send_signal(signal.SIGINT)
            threading.Timer(1.0, hold.released.set).start()  # the held request ends; the crawl is stopping by then
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 130, err
            assert err.strip().count("\n") == 0 and "--resume" in err and "Traceback" not in err
        srv.tamper_image = None
        done = subprocess.run(_cli(out, seeds, srv, "--resume"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for name, df in _tables(reference).items():
        pd.testing.assert_frame_equal(_tables(out)[name], df, obj=name)
