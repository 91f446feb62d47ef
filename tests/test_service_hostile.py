"""Hostile JSON bodies against a real `interest serve` process on 127.0.0.1: memory is bounded before parsing.

The server's peak resident memory during one request is read from /proc (VmHWM, reset through
clear_refs just before the request), so each figure is that request's own peak above the memory
the server held before it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from apps_helpers import train_tiny_bundle  # noqa: E402

from interest.apps.service import Limits  # noqa: E402

DIM = 512  # a CLIP ViT-B dimension: the largest accepted body is then ~13 MB
LIMITS = Limits()
MAX_JSON = LIMITS.max_json_bytes(DIM)
MiB = 2**20


# the service as `interest serve` runs it, without the warm-up image: the synthetic backbone embeds no images
_SERVER = """
import sys, uvicorn
from interest.apps.service import create_app
uvicorn.run(create_app(sys.argv[1], warm_up=False), host="127.0.0.1", port=int(sys.argv[2]), timeout_keep_alive=5)
"""


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The service on a 512-d bundle in its own process, uvicorn on 127.0.0.1: (base URL, server pid)."""
    root = tmp_path_factory.mktemp("hostile_service")
    bundle = train_tiny_bundle(root, dim=DIM)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    log_path = root / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(bundle), str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, "the service did not start"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        # warm: the thread pool, pandas and LightGBM paths a JSON request takes
        rows = np.random.default_rng(0).normal(size=(4, DIM))
        assert httpx.post(f"{url}/score", json={"embeddings": rows.tolist()}, timeout=60).status_code == 200
        yield url, proc.pid
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of process ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        return {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.startswith(("VmRSS", "VmHWM"))}


def _peak_during(pid: int, send):
    """(send()'s answer, the server's peak resident memory during it above what it held before, in bytes)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident size
    except OSError as exc:
        pytest.skip(f"cannot reset the peak RSS of the server ({exc.strerror})")
    before = _status(pid)["VmHWM"]
    answer = send()
    return answer, _status(pid)["VmHWM"] - before


def _issue_body() -> bytes:
    """The issue's probe: 1,000 rows of 50,000 numbers as JSON, about 95 MB."""
    row = b"[" + b"0," * 49_999 + b"0]"
    return b'{"embeddings": [' + b",".join([row] * 1000) + b"]}"


def test_the_issues_95_mb_json_body_is_refused_before_it_is_read(service):
    url, pid = service
    body = _issue_body()
    assert len(body) > 95 * 10**6
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=url, timeout=120) as client:
        r, peak = _peak_during(pid, lambda: client.post("/score", content=body, headers=headers))
        assert r.status_code == 413, r.text
        detail = r.json()["detail"]
        assert f"over the limit of {MAX_JSON} bytes (1024 rows of 512 numbers)" in detail and "\n" not in detail
        assert peak < 16 * MiB  # refused from Content-Length: nothing was read (3.9 GB before)

        def chunks():
            for start in range(0, len(body), 1 << 16):
                yield body[start : start + (1 << 16)]

        r, peak = _peak_during(pid, lambda: client.post("/score", content=chunks(), headers=headers))
        assert r.status_code == 413 and "over the limit" in r.json()["detail"]
        assert peak < MAX_JSON + 16 * MiB  # without a length: cut once the limit is passed
        assert client.get("/health").status_code == 200


def _largest_accepted_body(rng: np.random.Generator) -> bytes:
    """1,024 rows of 512 numbers with ids and norms, each number as long as JSON writes them (~25 bytes)."""
    rows = rng.normal(scale=1e-5, size=(LIMITS.max_rows, DIM))  # -1.2345678901234567e-05: the longest numbers
    ids = [f"photo-{i:06d}-" + "x" * 120 for i in range(LIMITS.max_rows)]
    norms = rng.uniform(5, 15, LIMITS.max_rows)
    return json.dumps({"embeddings": rows.tolist(), "ids": ids, "norms": norms.tolist()}).encode()


def test_the_largest_accepted_json_request_has_a_bounded_peak(service):
    url, pid = service
    body = _largest_accepted_body(np.random.default_rng(1))
    assert 0.9 * MAX_JSON < len(body) <= MAX_JSON  # at the limit
    with httpx.Client(base_url=url, timeout=120) as client:
        r, peak = _peak_during(pid, lambda: client.post("/score", content=body, headers={"content-type": "application/json"}))
        assert r.status_code == 200, r.text[:300]
        results = r.json()["results"]
        assert len(results) == LIMITS.max_rows and results[7]["id"].startswith("photo-000007-")
        assert all(np.isfinite(x["ci_score"]) for x in results)
        over = body[:-1] + b" " * (MAX_JSON - len(body) + 1) + b"}"  # one byte over the limit, by whitespace
        assert client.post("/score", content=over, headers={"content-type": "application/json"}).status_code == 413
    assert peak <= 4 * len(body) and _status(pid)["VmHWM"] < 2**30, f"peak {peak / MiB:.1f} MiB for {len(body) / MiB:.1f} MiB"


# (body, status, a fragment of the one-line detail): each refused before the parse where it could allocate
def _hostile_bodies() -> list[tuple[str, bytes, int, str]]:
    zeros = b"0," * (MAX_JSON // 2 - 100) + b"0"
    row = "[" + ",".join(["0.01"] * DIM) + "]"
    return [
        ("values packed under the byte limit", b'{"embeddings": [[' + zeros + b"]]}", 413, "values in"),
        ("5,000 nested lists", b"[" * 5000 + b"]" * 5000, 413, "lists"),
        ("900 nested lists", b'{"embeddings": ' + b"[" * 900 + b"]" * 900 + b"}", 422, "numbers only"),
        ("1,050 nested lists (deeper than the parser's recursion limit)", b"[" * 1050 + b"]" * 1050, 400, "not valid JSON"),
        ("one row too many", ('{"embeddings": [' + ",".join([row] * 1025) + "]}").encode(), 422, "give 1 to 1024 rows, not 1025"),
        ("a row of 50,000 numbers", b'{"embeddings": [[' + b"0," * 49_999 + b"0]]}", 400, "expects (n, 512)"),
        ("NaN", ('{"embeddings": [[NaN' + ",0" * (DIM - 1) + "]]}").encode(), 400, "NaN is not a JSON number"),
        ("a 5,000-digit integer", b'{"embeddings": [[' + b"1" * 5000 + b"]]}", 400, "not valid JSON"),
        ("text in a row", ('{"embeddings": [["a"' + ",0" * (DIM - 1) + "]]}").encode(), 422, "numbers only"),
        ("null in a row", ('{"embeddings": [[null' + ",0" * (DIM - 1) + "]]}").encode(), 422, "numbers only"),
        ("rows of different lengths", b'{"embeddings": [[1, 2], [3]]}', 422, "different lengths"),
        ("no rows", b'{"embeddings": []}', 422, "give 1 to 1024 rows, not 0"),
        ("a list, not an object", b"[1, 2, 3]", 422, "JSON object"),
        ("bytes that are not UTF-8", b'{"embeddings": [[\xff\xfe]]}', 400, "not UTF-8"),
        ("ids that are numbers", f'{{"embeddings": [{row}], "ids": [7]}}'.encode(), 422, "a string per row"),
        ("a negative norm", f'{{"embeddings": [{row}], "norms": [-1]}}'.encode(), 422, "positive numbers"),
        ("a user that is a list", f'{{"embeddings": [{row}], "user": ["x"]}}'.encode(), 422, "user: give a string"),
        ("a user id with a newline", f'{{"embeddings": [{row}], "user": "evil\\n"}}'.encode(), 422, "user id"),
    ]


def test_hostile_json_bodies_are_one_line_refusals(service):
    url, pid = service
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=url, timeout=120) as client:
        for name, body, status, fragment in _hostile_bodies():
            assert len(body) <= MAX_JSON, name
            r, peak = _peak_during(pid, lambda: client.post("/score", content=body, headers=headers))  # noqa: B023
            detail = r.json()["detail"]
            assert (r.status_code, fragment in str(detail)) == (status, True), (name, r.status_code, detail)
            assert isinstance(detail, str) and "\n" not in detail, name
            assert peak <= 4 * MAX_JSON, (name, peak)
        assert client.get("/health").status_code == 200


def test_fuzzed_json_bodies_never_fail_the_server(service):
    """Seeded damage to a valid body (flips, cuts, inserted brackets and quotes): always a 2xx or a one-line 4xx."""
    url, _ = service
    rng = np.random.default_rng(22)
    valid = json.dumps({"embeddings": rng.normal(size=(3, DIM)).round(4).tolist(), "ids": ["a", "b", "c"],
                        "norms": [1.0, 2.0, 3.0], "user": None}).encode()
    statuses = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for _ in range(150):
            body = bytearray(valid)
            for _ in range(int(rng.integers(1, 4))):
                at = int(rng.integers(0, len(body)))
                kind = int(rng.integers(0, 4))
                if kind == 0:
                    body[at] = int(rng.integers(0, 256))
                elif kind == 1:
                    del body[at:]
                else:
                    body[at:at] = rng.choice([b"[", b"]", b'"', b",", b"{", b"-1e999", b"null"]) * int(rng.integers(1, 50))
            r = client.post("/score", content=bytes(body), headers={"content-type": "application/json"})
            statuses.append(r.status_code)
            assert r.status_code in (200, 400, 413, 422), (bytes(body)[:200], r.text[:200])
            if r.status_code != 200:
                detail = r.json()["detail"]
                assert isinstance(detail, str) and "\n" not in detail
        assert client.get("/health").status_code == 200
    assert statuses.count(200) < len(statuses) and set(statuses) - {200}  # the damage was mostly refused
