"""The HTTP service on a real uvicorn server on 127.0.0.1: scoring, limits, personalisation across restarts."""

from __future__ import annotations

import shutil
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from apps_helpers import train_image_model  # noqa: E402

from interest.apps.service import Limits, background_server, create_app  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("service_world")
    model = train_image_model(root)
    return root, model


@pytest.fixture()
def bundle(world, tmp_path):
    """A private copy of the bundle: personalisation writes into it."""
    root, _ = world
    shutil.copytree(root / "model", tmp_path / "model")
    return tmp_path / "model"


def _images(world, n):
    root, _ = world
    return sorted((root / "images").glob("*.jpg"))[:n]


def _upload(paths, field="files"):
    return [(field, (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def _png_bomb(width: int, height: int) -> bytes:
    """A real 1-bit PNG of width x height black pixels: a few kB that decode to width*height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_concurrent_scoring_matches_the_library(world, bundle):
    _, model = world
    images = _images(world, 6)
    expected = model.score(images, user=model.users[0], progress=False)
    broken = ("files", ("broken.jpg", b"\xff\xd8\xff not a jpeg", "image/jpeg"))
    app = create_app(bundle, limits=Limits(max_concurrent=2))
    with background_server(app) as url:
        assert url.startswith("http://127.0.0.1:")

        def call(i):
            pair = [images[i % 6], images[(i + 1) % 6]]
            with httpx.Client(base_url=url, timeout=60) as client:
                r = client.post("/score", files=[*_upload(pair), broken], data={"user": model.users[0]})
            return i, r

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(call, range(24)))
        for i, r in responses:
            assert r.status_code == 200, r.text
            results = r.json()["results"]
            assert [x["filename"] for x in results] == [images[i % 6].name, images[(i + 1) % 6].name, "broken.jpg"]
            for row, j in zip(results[:2], (i % 6, (i + 1) % 6)):
                assert row["ci_score"] == pytest.approx(float(expected["ci_score"][j]), abs=1e-5)
                assert row["user_score"] == pytest.approx(float(expected["user_score"][j]), abs=1e-5)
                assert row["trend_group_name"] == ("common", "interplay", "subjective")[int(expected["trend_group"][j])]
            assert "ci_score" not in results[2] and "not an image" in results[2]["error"]

        with httpx.Client(base_url=url) as client:
            assert client.get("/health").json()["status"] == "ok"
            card = client.get("/model").json()
            assert card["backbone_id"] == "perceptual/v1" and card["n_users"] == len(model.users)
            paths = client.get("/openapi.json").json()["paths"]
            assert {"/score", "/users/{user}/personalize", "/health", "/model"} <= set(paths)
            r = client.post("/score", files=_upload(images[:1]), data={"user": "nobody"})
            assert r.status_code == 404 and "nobody" in r.json()["detail"]


def test_limits_refuse_with_4xx(world, bundle):
    images = _images(world, 3)
    small = max(p.stat().st_size for p in images) + 100_000
    limits = Limits(max_upload_bytes=small, max_pixels=1_000_000, max_batch=2)
    app = create_app(bundle, limits=limits, warm_up=False)
    with background_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        big = ("files", ("big.jpg", b"\xff" * (small + 1), "image/jpeg"))
        r = client.post("/score", files=[big])
        assert r.status_code == 413 and "big.jpg" in r.json()["detail"]
        # a body over the whole-request limit is refused while it arrives, with or without a length
        head = b'--b\r\nContent-Disposition: form-data; name="files"; filename="x.jpg"\r\n\r\n'
        huge = head + b"x" * (limits.max_body_bytes + 10) + b"\r\n--b--\r\n"
        multipart = {"content-type": "multipart/form-data; boundary=b"}
        assert client.post("/score", content=huge, headers=multipart).status_code == 413

        def chunks():
            for start in range(0, len(huge), 1 << 16):
                yield huge[start : start + (1 << 16)]

        assert client.post("/score", content=chunks(), headers=multipart).status_code == 413
        r = client.post("/score", files=_upload(images[:3]))
        assert r.status_code == 413 and "3 images" in r.json()["detail"]
        bomb = _png_bomb(20_000, 20_000)  # 400 megapixels in a few kB
        assert len(bomb) < small
        r = client.post("/score", files=[("files", ("bomb.png", bomb, "image/png"))])
        assert r.status_code == 413 and "bomb.png" in r.json()["detail"]
        r = client.post("/score", files=_upload(images[:2]))
        assert r.status_code == 200 and all("ci_score" in x for x in r.json()["results"])
    impatient = create_app(bundle, limits=Limits(timeout_s=1e-4), warm_up=False)
    with background_server(impatient) as url, httpx.Client(base_url=url, timeout=60) as client:
        r = client.post("/score", files=_upload(images[:2]))
        assert r.status_code == 503 and "took over" in r.json()["detail"]


def test_personalisation_survives_a_restart(world, bundle):
    import interest

    images = _images(world, 12)
    liked, probe = images[:5], images[8:10]
    with background_server(create_app(bundle, warm_up=False)) as url, httpx.Client(base_url=url, timeout=60) as client:
        r = client.post("/users/new-user@N01/personalize", files=[*_upload(liked, "liked"), *_upload(images[5:7], "disliked")])
        assert r.status_code == 200, r.text
        assert r.json() == {"user": "new-user@N01", "liked": 5, "disliked": 2, "errors": []}
        before = client.post("/score", files=_upload(probe), data={"user": "new-user@N01"}).json()["results"]
        assert client.post("/users/../personalize", files=_upload(liked, "liked")).status_code in (404, 422)
    # a new process would see the same bundle: a new app loads it from disk
    with background_server(create_app(bundle, warm_up=False)) as url, httpx.Client(base_url=url, timeout=60) as client:
        after = client.post("/score", files=_upload(probe), data={"user": "new-user@N01"}).json()["results"]
        # a head saved into the bundle by another process (another worker, `interest personalize`) is picked up
        assert client.post("/score", files=_upload(probe), data={"user": "cli-user"}).status_code == 404
        other = interest.load(bundle)
        other.personalize("cli-user", images[:3])
        other.save(bundle)
        r = client.post("/score", files=_upload(probe), data={"user": "cli-user"})
        assert r.status_code == 200 and client.get("/model").json()["n_users"] == len(world[1].users) + 2
    assert [x["user_score"] for x in after] == pytest.approx([x["user_score"] for x in before], abs=1e-6)
    library = interest.load(world[0] / "model")  # the library's own head for the same photos
    library.personalize("new-user@N01", liked, images[5:7])
    expected = library.score(probe, user="new-user@N01", progress=False)["user_score"].to_numpy()
    np.testing.assert_allclose([x["user_score"] for x in after], expected, atol=1e-5)


def test_serve_binds_loopback_by_default():
    import inspect

    from interest.cli.apps import serve as serve_command
    from interest.apps.service import serve

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(serve_command).parameters["host"].default.default == "127.0.0.1"


class _CountingBackbone:
    """The model's real backbone, counting the backbone calls and the images in each."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[int] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_raw(self, batch):
        self.calls.append(len(batch))
        return self.inner.encode_raw(batch)


def test_concurrent_requests_share_backbone_calls(world, bundle):
    _, model = world
    images = _images(world, 8)
    expected = model.score(images, progress=False)
    app = create_app(bundle, limits=Limits(batch_wait_s=0.05, batch_images=64))
    state = app.state.interest
    counting = _CountingBackbone(state.model.backbone)
    state.model.backbone_holder.backbone = counting
    with background_server(app) as url:

        def call(i):
            with httpx.Client(base_url=url, timeout=60) as client:
                return i, client.post("/score", files=_upload([images[i]]))

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(call, range(8)))
    for i, r in responses:
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["ci_score"] == pytest.approx(float(expected["ci_score"][i]), abs=1e-5)
    # eight one-image requests, fewer backbone calls: batches formed across requests
    assert sum(counting.calls) == 8 and len(counting.calls) < 8 and max(counting.calls) > 1


def test_readiness_schema_and_json_embeddings(world, bundle):
    _, model = world
    from interest.core.collection import read_embeddings

    _, ids, emb = read_embeddings(world[0], "perceptual/v1")
    expected = model.score_embeddings(emb[:5], user=model.users[0])
    cold = create_app(bundle, warm_up=False)
    with background_server(cold) as url, httpx.Client(base_url=url, timeout=60) as client:
        r = client.get("/ready")
        assert r.status_code == 503 and r.json() == {"ready": False, "model_loaded": True, "backbone_loaded": False,
                                                     "backbone_id": "perceptual/v1"}
        # precomputed embeddings need no backbone
        r = client.post("/score", json={"embeddings": emb[:5].tolist(), "ids": list(ids[:5]), "user": model.users[0]})
        assert r.status_code == 200, r.text
        rows = r.json()["results"]
        assert [row["id"] for row in rows] == list(ids[:5])
        np.testing.assert_allclose([row["ci_score"] for row in rows], expected["ci_score"], atol=1e-5)
        np.testing.assert_allclose([row["user_score"] for row in rows], expected["user_score"], atol=1e-5)
        assert client.get("/ready").status_code == 503
        client.post("/score", files=_upload(_images(world, 1)))
        assert client.get("/ready").json()["ready"] is True
        r = client.post("/score", json={"embeddings": [[0.1, 0.2]]})
        assert r.status_code == 400 and "expects (n, 90)" in r.json()["detail"]
        r = client.post("/score", json={"embeddings": emb[:2].tolist(), "ids": ["a"]})
        assert r.status_code == 422 and "1 ids for 2 embeddings" in r.json()["detail"]
        schema = client.get("/openapi.json").json()
    assert "/ready" in schema["paths"]
    components = schema["components"]["schemas"]
    assert {"ScoreResponse", "ScoreResult", "EmbeddingsRequest", "ReadyResponse", "HealthResponse",
            "PersonalizeResponse", "ModelCard"} <= set(components)
    score_op = schema["paths"]["/score"]["post"]
    assert set(score_op["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert score_op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("ScoreResponse")


def test_no_local_path_leaves_the_machine(world, bundle):
    """GET /model and error bodies name the collection and the bundle, never their place on a disk."""
    import json

    root, _ = world
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["data"]["collection"] == root.name and meta["data"]["fingerprint"].startswith("sha256:")
    # a bundle written before collections were named held the trainer's path (model.json has no checksum)
    meta["data"]["collection"] = str(root.resolve())
    (bundle / "model.json").write_text(json.dumps(meta))
    probe = _images(world, 2)
    with background_server(create_app(bundle, warm_up=False)) as url, httpx.Client(base_url=url, timeout=60) as client:
        card = client.get("/model")
        assert card.status_code == 200
        assert card.json()["metadata"]["data"]["collection"] == root.name
        assert card.json()["metadata"]["data"]["fingerprint"] == meta["data"]["fingerprint"]
        assert str(root) not in card.text and str(bundle) not in card.text
        # an error about the bundle itself names its part, not where the bundle lies
        heads = bundle / "user_heads.npz"
        heads.write_bytes(heads.read_bytes() + b"\0")
        (bundle / "model.json").write_text(json.dumps(meta))  # written again: the service reloads
        r = client.post("/users/someone/personalize", files=_upload(probe, "liked"))
        assert r.status_code == 400 and "user_heads.npz: sha256 differs" in r.json()["detail"]
        assert str(bundle.parent) not in r.text and r.json()["detail"].startswith("model/user_heads.npz")
