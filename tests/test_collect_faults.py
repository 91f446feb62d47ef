"""Damaged image hosts: moved images, placeholders, persistent truncation, outages, --retry-failed, the lock.

Everything runs against the local Flickr-compatible server over real HTTP,
with the real collector (in this process, or as the CLI in a child process).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from interest.stages.collect import CollectConfig, collect, format_summary
from interest.stages.collect.client import CallFailed, FlickrClient
from interest.stages.collect.config import make_client
from interest.stages.collect.limiter import RateLimiter
from interest.core.collection import read_table
from interest.core.errors import InterestError
from interest.synthetic.server import FaultConfig, serve_world

KEY = "faults-key-51d2"
CLI = "import sys; sys.argv[0] = 'interest'; from interest.cli import main; main()"
DAMAGE = dict(truncated_photos=0.06, moved_photos=0.06, placeholder_photos=0.06, placeholder_redirect_photos=0.06)


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
    monkeypatch.setenv("FLICKR_API_KEY", KEY)


@pytest.fixture(scope="module")
def seeds(rendered_world):
    return sorted(read_table(rendered_world, "users")["user_id"])[:36]  # about 200 photos: enough damage to count


def settings(srv, seeds, **extra):
    return CollectConfig(
        rest_url=srv.rest_url, image_host=srv.image_host, rate=0, users=seeds, enrich="none",
        backoff=0.01, timeout=2.0, **extra,
    )


def tables(root):
    return {name: read_table(root, name) for name in ("users", "photos", "favorites")}


@pytest.fixture(scope="module")
def reference(rendered_world, seeds, tmp_path_factory):
    """The clean crawl every damaged one is compared with."""
    out = tmp_path_factory.mktemp("reference") / "out"
    mp = pytest.MonkeyPatch()
    mp.setenv("FLICKR_API_KEY", KEY)
    with serve_world(rendered_world, api_key=KEY) as srv:
        collect(out, settings(srv, seeds), progress=False)
    mp.undo()
    return out


def test_moved_images_are_fetched_and_placeholders_never_ok(rendered_world, seeds, reference, tmp_path):
    out = tmp_path / "out"
    with serve_world(rendered_world, api_key=KEY, faults=FaultConfig(**DAMAGE, seed=4)) as srv:
        summary = collect(out, settings(srv, seeds, body_tries=2), progress=False)
        damaged = {kind: srv.damaged(kind) for kind in DAMAGE}
        placeholder = srv.placeholder_sha256
        stats = dict(srv.stats)
    photos = read_table(out, "photos").set_index("photo_id")
    world = read_table(rendered_world, "photos").set_index("photo_id")
    crawled = set(photos.index)
    moved = damaged["moved_photos"] & crawled
    assert len(moved) >= 4 and (photos.loc[sorted(moved), "status"] == "ok").all()
    for pid in sorted(moved):  # the very bytes of the world's file, under the photo's own name
        assert (out / photos.loc[pid, "path"]).read_bytes() == (rendered_world / world.loc[pid, "path"]).read_bytes()
    direct = damaged["placeholder_photos"] & crawled
    redirected = damaged["placeholder_redirect_photos"] & crawled
    assert len(direct) >= 4 and len(redirected) >= 4
    assert (photos.loc[sorted(redirected), "status_reason"] == "placeholder_redirect").all()
    # served directly, recognised by the hash learnt from the redirect's target
    assert (photos.loc[sorted(direct), "status_reason"] == "placeholder_image").all()
    assert (photos.loc[sorted(direct | redirected), "status"] == "missing").all()
    assert photos.loc[sorted(direct | redirected), "path"].isna().all()
    truncated = damaged["truncated_photos"] & crawled
    assert (photos.loc[sorted(truncated), "status"] == "bad_image").all()
    assert stats["damage:truncated_photos"] == 2 * len(truncated)  # body_tries, then given up
    # no file anywhere holds the placeholder's bytes; every healthy photo is ok and as in the clean crawl
    files = list((out / "images").iterdir())
    assert placeholder not in {hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    healthy = sorted(crawled - direct - redirected - truncated)
    assert (photos.loc[healthy, "status"] == "ok").all() and len(files) == len(healthy)
    want = read_table(reference, "photos").set_index("photo_id")
    assert photos.loc[healthy, "sha256"].equals(want.loc[healthy, "sha256"])
    assert summary["failures"] == {
        "image:placeholder_image": len(direct), "image:placeholder_redirect": len(redirected), "image:truncated": len(truncated),
    }
    pd.testing.assert_frame_equal(read_table(out, "favorites"), read_table(reference, "favorites"))


def test_a_configured_placeholder_hash_is_refused_without_any_redirect(rendered_world, seeds, tmp_path):
    faults = FaultConfig(placeholder_photos=0.1, seed=5)
    with serve_world(rendered_world, api_key=KEY, faults=faults) as srv:
        config = settings(srv, seeds[:20], placeholder_sha256=[srv.placeholder_sha256])
        collect(tmp_path / "out", config, progress=False)
        direct = srv.damaged("placeholder_photos")
    photos = read_table(tmp_path / "out", "photos").set_index("photo_id")
    hit = sorted(direct & set(photos.index))
    assert hit and (photos.loc[hit, "status_reason"] == "placeholder_image").all()
    assert (photos.drop(index=hit)["status"] == "ok").all()


def test_outage_then_retry_failed_on_the_healed_server(rendered_world, seeds, reference, tmp_path):
    out = tmp_path / "out"
    faults = FaultConfig(placeholder_redirect_photos=0.05, outage_photos=0.15, seed=6)
    with serve_world(rendered_world, api_key=KEY, faults=faults) as srv:
        first = collect(out, settings(srv, seeds, image_retries=2), progress=False)
        down = srv.damaged("outage_photos") & set(read_table(out, "photos")["photo_id"])
        gone = srv.damaged("placeholder_redirect_photos") & set(read_table(out, "photos")["photo_id"])
        assert len(down) >= 10 and first["failures"]["image:http_503"] == len(down)
        with pytest.raises(InterestError, match="--resume"):
            collect(out, settings(srv, seeds, image_retries=2), progress=False, retry_failed=True)
        srv.faults.outage_photos = 0.0  # the host is back
        before = srv.stats["image"]
        again = collect(out, settings(srv, seeds, image_retries=2), progress=False, resume=True, retry_failed=True)
        asked = srv.stats["image"] - before
    assert again["retry_failed"] == {"retried": len(down), "came_back": len(down)}
    assert asked == len(down)  # only what failed for a transient reason: the placeholders are not asked again
    photos = read_table(out, "photos").set_index("photo_id")
    assert (photos.drop(index=sorted(gone))["status"] == "ok").all()
    assert (photos.loc[sorted(gone), "status"] == "missing").all()
    want = read_table(reference, "photos").set_index("photo_id").drop(index=sorted(gone))
    assert photos.drop(index=sorted(gone))["sha256"].equals(want["sha256"])
    pd.testing.assert_frame_equal(read_table(out, "favorites"), read_table(reference, "favorites"))
    assert f"retry-failed: {len(down)} retried, {len(down)} came back" in format_summary(again)


def test_an_image_429_does_not_pause_the_api_limiter(rendered_world):
    row = read_table(rendered_world, "photos").iloc[0]
    with serve_world(rendered_world, api_key=KEY, faults=FaultConfig(http_429=1.0, retry_after=600)) as srv:
        api = RateLimiter(0)
        client = FlickrClient(KEY, image_host=srv.image_host, limiter=api, timeout=2.0)
        with pytest.raises(CallFailed) as err:
            client.fetch(row["url"])
        assert (err.value.reason, err.value.retry_after, err.value.transient) == ("http_429", 600.0, True)
        assert err.value.host == srv.image_host.split("//")[1]
        assert api.acquire() == 0.0  # the API key is not held back by the image host's 429


def test_demo_style_client_ignores_the_environment_key(rendered_world, seeds, tmp_path, monkeypatch):
    monkeypatch.setenv("FLICKR_API_KEY", "a-real-users-key-0000")
    monkeypatch.setenv("FLICKR_API_SECRET", "their-secret")
    with serve_world(rendered_world, api_key="demo-key") as srv:
        config = settings(srv, seeds[:3], api_key="demo-key", download=False)
        summary = collect(tmp_path / "out", config, progress=False, client=make_client(config, environment=False))
    assert summary["users"] == 3 and summary["failures"] == {}


def _cli(out, seeds, srv, *extra):
    return [
        sys.executable, "-c", CLI, "collect", str(out), "--users", ",".join(seeds), "--rest-url", srv.rest_url,
        "--image-host", srv.image_host, "--rate", "0", "--threads", "4", "--enrich", "none", "--no-progress", *extra,
    ]


def _env():
    return {**os.environ, "FLICKR_API_KEY": KEY, "OMP_NUM_THREADS": "1"}


def _wait_for(proc, srv, counter, n, limit=60.0):
    deadline = time.monotonic() + limit
    while proc.poll() is None and srv.stats[counter] < n and time.monotonic() < deadline:
        time.sleep(0.005)


def test_a_second_crawl_is_refused_and_the_first_is_untouched(rendered_world, seeds, reference, tmp_path):
    out = tmp_path / "out"
    gate = threading.Event()  # image answers wait here: the first crawl is mid-download while the others try
    with serve_world(rendered_world, api_key=KEY) as srv:
        srv.tamper_image = lambda photo_id, body: body if gate.wait(60) else b""
        first = subprocess.Popen(_cli(out, seeds, srv), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for(first, srv, "image", 4)
        assert first.poll() is None, "the first crawl ended before the second started"
        for extra in ([], ["--resume", "--retry-failed"]):
            second = subprocess.run(_cli(out, seeds, srv, *extra), env=_env(), capture_output=True, text=True, timeout=60)
            assert second.returncode == 2, second.stderr
            line = second.stderr.strip()
            assert "\n" not in line and f"pid {first.pid}" in line and "another crawl" in line
        gate.set()
        _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    for name, df in tables(out).items():
        pd.testing.assert_frame_equal(df, tables(reference)[name], obj=name)


def test_sigkill_during_retry_failed_resumes_cleanly(rendered_world, seeds, reference, tmp_path):
    out = tmp_path / "out"
    faults = FaultConfig(outage_photos=0.5, seed=8)
    with serve_world(rendered_world, api_key=KEY, faults=faults) as srv:
        collect(out, settings(srv, seeds, image_retries=1), progress=False)
        down = len(srv.damaged("outage_photos") & set(read_table(out, "photos")["photo_id"]))
        assert down >= 40
        srv.faults.outage_photos = 0.0
        srv.faults.slow, srv.faults.slow_seconds = 1.0, 0.02
        start = srv.stats["image"]
        proc = subprocess.Popen(_cli(out, seeds, srv, "--resume", "--retry-failed"), env=_env(), stderr=subprocess.PIPE)
        _wait_for(proc, srv, "image", start + down // 3)
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # the killed run's lock does not block; the images it put back are fetched by a plain --resume
        done = subprocess.run(_cli(out, seeds, srv, "--resume"), env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name, df in tables(out).items():
        pd.testing.assert_frame_equal(df, tables(reference)[name], obj=name)
    files = {p.name for p in (out / "images").iterdir()}
    assert not [f for f in files if f.endswith(".tmp")] and len(files) == len(tables(out)["photos"])
