"""Personalisation across processes: real `interest serve` workers lose no head, and loads never fail mid-save."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from apps_helpers import train_image_model, train_tiny_bundle  # noqa: E402

import interest  # noqa: E402
from interest.errors import InterestError  # noqa: E402
from interest.models import storage  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("workers_world")
    train_image_model(root, n_users=30, n_photos=120, clusters=9)  # small: only the saving is under test
    return root


@pytest.fixture()
def bundle(world, tmp_path):
    shutil.copytree(world / "model", tmp_path / "model")
    return tmp_path / "model"


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """A bundle of a tiny embeddings-only world: fast to load and save, for the stress tests."""
    return train_tiny_bundle(tmp_path_factory.mktemp("tiny"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(bundle, workers: int, log) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "interest", "serve", str(bundle), "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def _wait_healthy(proc: subprocess.Popen, url: str, log_path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the service exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the service did not start: {log_path.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # the whole session: uvicorn's supervisor and its workers
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _personalize_all(urls: list[str], users: list[str], images) -> None:
    """Every user personalised once, spread over ``urls``, several requests in flight at once."""

    def one(i: int) -> tuple[str, int, str]:
        liked = [images[i % len(images)], images[(i + 3) % len(images)]]
        files = [("liked", (p.name, p.read_bytes(), "image/jpeg")) for p in liked]
        r = httpx.post(f"{urls[i % len(urls)]}/users/{users[i]}/personalize", files=files, timeout=120)
        return users[i], r.status_code, r.text

    with ThreadPoolExecutor(8) as pool:
        for user, status, text in pool.map(one, range(len(users))):
            assert status == 200, (user, text)


@pytest.mark.slow  # about 20 s on 2 busy cores: 80 saves, each after reloading the other worker's
def test_two_workers_lose_no_head(world, bundle, tmp_path):
    """The issue's probe: `interest serve MODEL --workers 2`, 80 users personalised once each."""
    images = sorted((world / "images").glob("*.jpg"))[:10]
    users = [f"worker-user-{i}@N0{i % 10}" for i in range(80)]
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc, url = _start(bundle, 2, log)
        try:
            _wait_healthy(proc, url, log_path)
            _personalize_all([url], users, images)
        finally:
            _stop(proc)
    # both workers answered: uvicorn logs each worker's start ("Started server process [pid]")
    assert log_path.read_text().count("Started server process") >= 2
    reloaded = interest.load(bundle)
    assert set(users) <= set(reloaded.users)
    assert len(reloaded.users) == len(set(reloaded.users))
    assert set(users) <= set(reloaded.metadata["personalized"])
    # after a restart every one of them is scored with their head (404 was the symptom)
    from interest.apps.service import background_server, create_app

    with background_server(create_app(bundle, warm_up=False)) as url2, httpx.Client(base_url=url2, timeout=60) as c:
        files = [("files", (images[0].name, images[0].read_bytes(), "image/jpeg"))]
        statuses = {c.post("/score", files=files, data={"user": u}).status_code for u in users[::8]}
    assert statuses == {200}


def test_two_servers_on_one_bundle_lose_no_head(world, bundle, tmp_path):
    """Two separate service processes over one bundle, requests alternating: each writer starts from the other's save."""
    images = sorted((world / "images").glob("*.jpg"))[:10]
    users = [f"alt-{i}" for i in range(16)]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    with open(logs[0], "wb") as log_a, open(logs[1], "wb") as log_b:
        servers = [_start(bundle, 1, log_a), _start(bundle, 1, log_b)]
        try:
            for (proc, url), log_path in zip(servers, logs):
                _wait_healthy(proc, url, log_path)
            _personalize_all([url for _, url in servers], users, images)
        finally:
            for proc, _ in servers:
                _stop(proc)
    assert set(users) <= set(interest.load(bundle).users)


_WRITER = textwrap.dedent(
    """
    import sys, numpy as np, interest
    from interest.models.storage import bundle_lock
    path, n = sys.argv[1], int(sys.argv[2])
    emb = np.random.default_rng(0).normal(size=(6, 16)).astype(np.float32)
    for i in range(n):
        with bundle_lock(path):
            model = interest.load(path)
            model.personalize(f"stress-{i}", emb)
            model.save(path)
    print("saved", n)
    """
)


def test_loads_never_fail_while_another_process_saves(tiny_bundle, tmp_path):
    path = tmp_path / "model"
    shutil.copytree(tiny_bundle, path)
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), "60"], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    loads, failures, users_seen = 0, [], set()
    while writer.poll() is None:
        try:
            users_seen.add(len(interest.load(path).users))
            loads += 1
        except InterestError as exc:
            failures.append(str(exc))
    out, err = writer.communicate()
    assert writer.returncode == 0, err
    assert failures == []
    assert loads >= 30 and len(users_seen) >= 10  # the loads really overlapped many saves
    assert {f"stress-{i}" for i in range(60)} <= set(interest.load(path).users)


def test_loads_never_fail_without_an_atomic_exchange(tiny_bundle, tmp_path, monkeypatch):
    """Where renameat2 is missing the switch is two renames: readers retry through the gap between them."""
    monkeypatch.setattr(storage, "_exchange", lambda a, b: False)
    path = tmp_path / "model"
    shutil.copytree(tiny_bundle, path)
    model = interest.load(path)
    emb = np.random.default_rng(1).normal(size=(6, 16)).astype(np.float32)
    done = threading.Event()
    failures: list[str] = []
    loads = [0]

    def read() -> None:
        while not done.is_set():
            try:
                interest.load(path)
                loads[0] += 1
            except InterestError as exc:
                failures.append(str(exc))

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for i in range(60):
            model.personalize(f"gap-{i}", emb)
            model.save(path)
    finally:
        done.set()
        for t in readers:
            t.join()
    assert failures == [] and loads[0] >= 20
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == [".model.lock"]
