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
from interest.core.errors import InterestError  # noqa: E402
from interest.bundle import storage  # noqa: E402

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
    from interest.bundle.storage import bundle_lock
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


_ACKNOWLEDGING_WRITER = textwrap.dedent(
    """
    import sys, httpx, interest
    from interest.core.collection import read_embeddings
    from interest.bundle.storage import bundle_lock
    path, world, url, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    _, _, emb = read_embeddings(world, "perceptual/v1")
    for i in range(n):
        with bundle_lock(path):
            model = interest.load(path)
            model.personalize(f"api-{i}", emb[i % 40 : i % 40 + 3])
            model.save(path)
        # the library's personalisation has answered: the service must now score this user
        r = httpx.post(f"{url}/score", json={"embeddings": emb[:2].tolist(), "user": f"api-{i}"}, timeout=120)
        print(f"api-{i}", r.status_code, flush=True)
    """
)


@pytest.mark.slow  # about 30 s on 2 busy cores: 3 workers, 48 HTTP and 40 library personalisations, ~400 scores
def test_workers_read_their_writes(world, bundle, tmp_path):
    """Once a personalisation has answered (HTTP, in any worker, or the library), no later score of that user is a 404.

    Reloads are kept busy by a library writer saving heads meanwhile and by scores without a user; each
    user is scored right after its personalisation answered, as JSON embeddings and as an upload.
    """
    from interest.core.collection import read_embeddings

    images = sorted((world / "images").glob("*.jpg"))[:10]
    _, _, emb = read_embeddings(world, "perceptual/v1")
    body = emb[:3].tolist()
    log_path = tmp_path / "serve.log"
    missed: list[tuple] = []
    with open(log_path, "wb") as log:
        proc, url = _start(bundle, 3, log)
        try:
            _wait_healthy(proc, url, log_path)
            writer = subprocess.Popen([sys.executable, "-c", _ACKNOWLEDGING_WRITER, str(bundle), str(world), url, "40"],
                                      env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

            def user_turns(t: int) -> int:
                with httpx.Client(base_url=url, timeout=120) as client:
                    for k in range(6):
                        user = f"ryw-{t}-{k}"
                        liked = [("liked", (p.name, p.read_bytes(), "image/jpeg")) for p in images[k % 8 : k % 8 + 2]]
                        r = client.post(f"/users/{user}/personalize", files=liked)
                        assert r.status_code == 200, (user, r.text)
                        for _ in range(3):
                            r = client.post("/score", json={"embeddings": body, "user": user})
                            if r.status_code != 200:
                                missed.append((user, "json", r.status_code, r.text[:120]))
                        upload = [("files", (images[t].name, images[t].read_bytes(), "image/jpeg"))]
                        r = client.post("/score", files=upload, data={"user": user})
                        if r.status_code != 200:
                            missed.append((user, "upload", r.status_code, r.text[:120]))
                return t

            def background() -> int:
                n = 0
                with httpx.Client(base_url=url, timeout=120) as client:
                    while writer.poll() is None and n < 2000:  # bounded: stops with the writer
                        assert client.post("/score", json={"embeddings": body}).status_code == 200
                        n += 1
                return n

            with ThreadPoolExecutor(10) as pool:
                noise = [pool.submit(background) for _ in range(2)]
                list(pool.map(user_turns, range(8)))
                out, err = writer.communicate(timeout=300)
                scored_meanwhile = sum(f.result() for f in noise)
        finally:
            _stop(proc)
    assert writer.returncode == 0, err
    acknowledged = dict(line.split() for line in out.splitlines())
    assert len(acknowledged) == 40 and set(acknowledged.values()) == {"200"}, out
    assert missed == []
    assert scored_meanwhile > 0
    users = set(interest.load(bundle).users)
    assert {f"ryw-{t}-{k}" for t in range(8) for k in range(6)} | set(acknowledged) <= users


def test_an_acknowledged_head_is_seen_while_a_save_is_switching(tiny_bundle, tmp_path):
    """A save stuck between its two renames (where renameat2 is missing) must not hide a head saved before it.

    The service used to answer from the model it had (404 for the user) while model.json was missing; it now
    waits for the writer to finish, then reads the bundle.
    """
    from interest.apps.service import background_server, create_app
    from interest.bundle.storage import bundle_lock

    path = tmp_path / "model"
    shutil.copytree(tiny_bundle, path)
    emb = np.random.default_rng(2).normal(size=(4, 16)).astype(np.float32)
    switching, done = threading.Event(), threading.Event()

    def stuck_writer() -> None:
        with bundle_lock(path):
            old = tmp_path / ".model.x.old"  # the name storage.switch_in gives the version moved aside
            old.mkdir()
            os.replace(path, old / "bundle")
            switching.set()
            done.wait(2.0)  # the service waits for this writer; it is never told to stop
            os.replace(old / "bundle", path)
            old.rmdir()

    with background_server(create_app(path, warm_up=False)) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.post("/score", json={"embeddings": emb.tolist()}).status_code == 200
        with bundle_lock(path):  # the library's personalisation, acknowledged when save returns
            model = interest.load(path)
            model.personalize("acked", emb)
            model.save(path)
        thread = threading.Thread(target=stuck_writer)
        thread.start()
        try:
            switching.wait(10)
            r = client.post("/score", json={"embeddings": emb.tolist(), "user": "acked"})
        finally:
            done.set()
            thread.join()
    assert r.status_code == 200, r.text
    assert [row["user_score"] is not None for row in r.json()["results"]] == [True] * 4
