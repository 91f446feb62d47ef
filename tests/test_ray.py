"""The Ray engine against the local one, on a local Ray instance started once for this module."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from interest.core.collection import embeddings_path, read_manifest, read_table  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    from interest.pipeline.ray import init_ray

    init_ray(num_cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def twin_collections(tmp_path_factory):
    """The same small rendered collection twice, with one damaged and one missing image file."""
    from interest.synthetic.world import generate_world

    base = tmp_path_factory.mktemp("ray_world")
    generate_world(base, n_users=20, n_photos=60, n_topics=4, render=True, seed=3, progress=False)
    photos = read_table(base, "photos")
    paths = photos["path"].dropna().tolist()
    (base / paths[5]).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (base / paths[9]).unlink()
    twins = []
    for name in ("local", "ray"):
        root = tmp_path_factory.mktemp(name)
        shutil.copytree(base, root, dirs_exist_ok=True)
        twins.append(root)
    return twins


def test_ray_embeddings_equal_local(local_ray, twin_collections):
    from typer.testing import CliRunner

    from interest.cli import app
    from interest.pipeline.local import embed_collection

    local, remote = twin_collections
    embed_collection(local, backbone_id="perceptual/v1", workers=0, progress=False)
    args = ["embed", str(remote), "--backbone", "perceptual/v1", "--engine", "ray", "--batch-size", "16", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    a = pq.read_table(embeddings_path(local, "perceptual/v1")).to_pandas()
    b = pq.read_table(embeddings_path(remote, "perceptual/v1")).to_pandas()
    assert len(a) == 58  # 60 photos, one damaged, one missing
    assert a["photo_id"].tolist() == b["photo_id"].tolist()
    assert a["sha256"].tolist() == b["sha256"].tolist()
    np.testing.assert_array_equal(np.stack(a["embedding"]), np.stack(b["embedding"]))

    cols = ["photo_id", "status", "status_reason", "sha256"]
    pd.testing.assert_frame_equal(read_table(local, "photos")[cols], read_table(remote, "photos")[cols])
    assert set(read_table(remote, "photos")["status"]) == {"ok", "bad_image", "missing"}
    entry = read_manifest(remote)["tables"]["features/perceptual/v1"]
    assert entry["engine"] == "ray" and entry["rows"] == 58 and entry["failed"] == 2
    assert entry["preprocessing"] == read_manifest(local)["tables"]["features/perceptual/v1"]["preprocessing"]


def test_ray_rerun_is_a_cache_hit(local_ray, twin_collections):
    """After the Ray run above, a second Ray run embeds nothing and leaves the same table."""
    from interest.pipeline.ray import embed_collection_ray

    _, remote = twin_collections
    path = embeddings_path(remote, "perceptual/v1")
    before = path.read_bytes()
    embed_collection_ray(remote, "perceptual/v1", batch_size=16, progress=False)
    entry = read_manifest(remote)["tables"]["features/perceptual/v1"]
    assert (entry["embedded"], entry["cached"], entry["rows"], entry["engine"]) == (0, 58, 58, "ray")
    assert path.read_bytes() == before


def test_ray_embeds_a_plain_folder_like_local_and_reruns_from_the_cache(local_ray, twin_collections, tmp_path):
    from typer.testing import CliRunner

    from interest.cli import app
    from interest.pipeline.local import embed_folder

    folder = tmp_path / "my photos"
    shutil.copytree(twin_collections[0] / "images", folder)
    embed_folder(folder, tmp_path / "local", backbone_id="perceptual/v1", workers=0, progress=False)
    args = ["embed", str(folder), "--backbone", "perceptual/v1", "--engine", "ray", "--out", str(tmp_path / "ray"),
            "--batch-size", "16", "--no-progress"]
    for run in range(2):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        entry = read_manifest(tmp_path / "ray")["tables"]["features/perceptual/v1"]
        assert entry["engine"] == "ray" and entry["rows"] == 58
        assert (entry["embedded"], entry["cached"]) == ((58, 0) if run == 0 else (0, 58))
    a = pq.read_table(embeddings_path(tmp_path / "local", "perceptual/v1")).to_pandas()
    b = pq.read_table(embeddings_path(tmp_path / "ray", "perceptual/v1")).to_pandas()
    assert a["photo_id"].tolist() == b["photo_id"].tolist() and len(a) == 58
    np.testing.assert_array_equal(np.stack(a["embedding"]), np.stack(b["embedding"]))
    assert not (tmp_path / "ray" / "features" / "perceptual" / "v1" / "parts").exists()


def test_ray_limits_behave_as_locally(local_ray, twin_collections, tmp_path):
    """--max-pixels on Ray refuses the same photos, with the same reason, as the local engine."""
    from interest.pipeline.local import embed_collection
    from interest.pipeline.ray import embed_collection_ray

    local, remote = tmp_path / "local", tmp_path / "ray"
    for root in (local, remote):
        shutil.copytree(twin_collections[0], root, ignore=shutil.ignore_patterns("features"))
    photos = read_table(local, "photos")
    big = photos["path"].dropna().iloc[[0, 3]]
    from PIL import Image

    for rel in big:  # two photos over the limit of 192 x 144 = 27,648 pixels
        for root in (local, remote):
            Image.new("RGB", (400, 300), (90, 120, 150)).save(root / rel)
    embed_collection(local, backbone_id="perceptual/v1", workers=0, max_pixels=192 * 144, progress=False)
    embed_collection_ray(remote, "perceptual/v1", batch_size=16, max_pixels=192 * 144, progress=False)
    cols = ["photo_id", "status", "status_reason", "sha256"]
    a, b = read_table(local, "photos")[cols], read_table(remote, "photos")[cols]
    pd.testing.assert_frame_equal(a, b)
    assert (a["status_reason"] == "too_many_pixels").sum() == 2
    np.testing.assert_array_equal(
        np.stack(pq.read_table(embeddings_path(local, "perceptual/v1")).column("embedding").to_numpy(zero_copy_only=False)),
        np.stack(pq.read_table(embeddings_path(remote, "perceptual/v1")).column("embedding").to_numpy(zero_copy_only=False)))


def test_ray_resumes_from_the_parts_of_a_killed_run(local_ray, twin_collections, tmp_path):
    """Parts a killed Ray run left behind are cache hits for the next run, which ends with the local table."""
    from interest.pipeline.ray import embed_collection_ray
    from interest.pipeline.writer import PartWriter

    local = twin_collections[0]  # embedded locally by the first test
    done = pq.read_table(embeddings_path(local, "perceptual/v1")).to_pandas()
    root = tmp_path / "killed"
    shutil.copytree(local, root, ignore=shutil.ignore_patterns("features"))
    writer = PartWriter(embeddings_path(root, "perceptual/v1").parent / "parts", 4, prefix="ray-0123456789abcdef-")
    for row in done.iloc[:10].itertuples():
        writer.add(row.photo_id, row.sha256, np.asarray(row.embedding, dtype=np.float32), row.norm)
    writer.flush()  # three parts, as Ray's write tasks leave them
    embed_collection_ray(root, "perceptual/v1", batch_size=16, progress=False)
    entry = read_manifest(root)["tables"]["features/perceptual/v1"]
    assert (entry["cached"], entry["embedded"], entry["rows"]) == (10, 48, 58)
    assert not (embeddings_path(root, "perceptual/v1").parent / "parts").exists()
    again = pq.read_table(embeddings_path(root, "perceptual/v1")).to_pandas()
    assert again["photo_id"].tolist() == done["photo_id"].tolist()
    np.testing.assert_array_equal(np.stack(again["embedding"]), np.stack(done["embedding"]))


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_ray_runs_the_drivers_onnx_tower_as_locally(local_ray, tmp_path, monkeypatch, precision):
    """An open_clip model on Ray: the CPU actors run the onnxruntime tower the driver resolved (fp32: the
    default encoder; int8: quantised, with the agreement the actors measured reported), tables equal local's."""
    from typer.testing import CliRunner

    from image_files import photo_like
    from interest.cli import app

    monkeypatch.setenv("INTEREST_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(5):
        photo_like(160, 120, seed=i).save(folder / f"p{i}.jpg", quality=90)
    common = ["embed", str(folder), "--model", "ViT-S-32", "--pretrained", "none", "--precision", precision,
              "--batch-size", "2", "--workers", "0", "--no-progress"]
    outputs = {}
    for engine in ("local", "ray"):
        result = CliRunner().invoke(app, [*common, "--engine", engine, "--out", str(tmp_path / engine)])
        assert result.exit_code == 0, result.output
        outputs[engine] = result.output
    space = "none@int8" if precision == "int8" else "none"
    a, b = (pq.read_table(embeddings_path(tmp_path / e, f"openclip/ViT-S-32/{space}")).to_pandas() for e in ("local", "ray"))
    assert len(a) == 5 and a["photo_id"].tolist() == b["photo_id"].tolist()
    np.testing.assert_array_equal(np.stack(a["embedding"]), np.stack(b["embedding"]))
    entries = [read_manifest(tmp_path / e)["tables"][f"features/openclip/ViT-S-32/{space}"] for e in ("local", "ray")]
    assert entries[1]["engine"] == "ray" and entries[0]["preprocessing"] == entries[1]["preprocessing"]
    assert entries[0]["encoder"] == entries[1]["encoder"] == f"onnxruntime-{precision}"  # what ran the tower
    agreement = [line for line in outputs["ray"].splitlines() if line.startswith("int8 agrees with fp32")]
    if precision == "int8":  # the same five photos measured, so the same line as the local engine's
        assert agreement == [line for line in outputs["local"].splitlines() if line.startswith("int8 agrees")]
        assert len(agreement) == 1 and "on 5 of the photos embedded" in agreement[0]
    else:
        assert agreement == []


@pytest.fixture(scope="module")
def embedded_model(tmp_path_factory):
    """A model trained on a world with directly written 32-d embeddings (no images: fast)."""
    from interest.stages.labels import label_collection
    from interest.stages.train import train_model
    from interest.synthetic.world import generate_world

    root = tmp_path_factory.mktemp("ray_scoring")
    generate_world(root, n_users=40, n_photos=500, n_topics=6, render=False, embed_dim=32, seed=2, progress=False)
    label_collection(root, clusters=20, progress=False)
    model = train_model(root, root / "model", progress=False)
    return root, root / "model", model


def test_ray_scores_equal_local(local_ray, embedded_model):
    from interest.apps.ray_scoring import score_ray

    root, bundle, model = embedded_model
    source = embeddings_path(root, model.backbone_id)
    user = model.users[1]
    local = model.score(source, user=user, progress=False)
    remote = score_ray(bundle, source, user=user, batch_size=128, progress=False)
    assert len(remote) == 500
    # exactly equal, not within a tolerance: scoring accumulates in float64, so Ray's batches of 128
    # and one local call give bit-identical float32 scores (docs/apps.md, "the same values")
    pd.testing.assert_frame_equal(remote, local, check_exact=True)
    # a collection directory stands for its embeddings of the model's backbone
    pd.testing.assert_frame_equal(
        score_ray(bundle, root, batch_size=37, progress=False), model.score(source, progress=False), check_exact=True
    )


def test_scores_do_not_depend_on_the_batch(embedded_model):
    """The property the Ray comparison rests on, checked without Ray: any split gives the same bits."""
    from interest.core.collection import read_embeddings_file

    root, _, model = embedded_model
    _, emb = read_embeddings_file(embeddings_path(root, model.backbone_id))
    user = model.users[1]
    whole = model.score_embeddings(emb, user=user)
    for size in (1, 7, 128):
        parts = pd.concat([model.score_embeddings(emb[s : s + size], user=user) for s in range(0, len(emb), size)])
        pd.testing.assert_frame_equal(parts.reset_index(drop=True), whole, check_exact=True)
    # one row far from unit norm in a batch rescales that row only, not its neighbours
    mixed = emb[:10].copy()
    mixed[3] *= 3.0
    got = model.score_embeddings(mixed, user=user)
    others = [i for i in range(10) if i != 3]
    pd.testing.assert_frame_equal(got.iloc[others], whole.iloc[others], check_exact=True)
    # the rescaled row itself matches to float32 rounding of its new unit vector
    np.testing.assert_allclose(got.iloc[3, 2:].to_numpy(float), whole.iloc[3, 2:].to_numpy(float), atol=1e-5)


def test_cli_score_engine_ray(local_ray, embedded_model, tmp_path):
    from typer.testing import CliRunner

    from interest.cli import app

    root, bundle, model = embedded_model
    out = tmp_path / "scores.parquet"
    result = CliRunner().invoke(app, ["score", str(bundle), str(root), "--engine", "ray", "--out", str(out)])
    assert result.exit_code == 0, result.output
    expected = model.score(embeddings_path(root, model.backbone_id), progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(out), expected, check_dtype=False)
    bad = CliRunner().invoke(app, ["score", str(bundle), str(root), "--engine", "spark"])
    assert bad.exit_code == 2 and "--engine" in bad.output and "'spark'" in bad.output  # click's usage error


def test_an_actor_that_cannot_see_the_drivers_encoder_cache_loads_the_backbone(tmp_path, monkeypatch):
    """On a cluster without a shared cache the driver's tower file is not on the actor's node: the actor
    loads the backbone itself (exporting into its node's cache) and encodes the same features."""
    from interest.imaging.backbones import load_backbone
    from interest.pipeline.ray import _EncoderActor

    monkeypatch.setenv("INTEREST_CACHE", str(tmp_path / "driver"))
    backbone = load_backbone("openclip/ViT-S-32/none")
    tower = backbone.image_encoder
    assert tower is not None and tower.path.is_file()
    pixels = np.random.default_rng(0).normal(size=(2, 3, *backbone.input_size)).astype(np.float32)
    expected = backbone.encode_raw(pixels)
    shutil.move(tmp_path / "driver", tmp_path / "elsewhere")  # as seen from another node
    monkeypatch.setenv("INTEREST_CACHE", str(tmp_path / "node"))
    options = {"device": "cpu", "precision": "fp32", "cache_dir": None, "encoder": "auto"}
    setup = {"backbone_id": backbone.id, "options": options, "threads": None, "tower": tower, "dim": backbone.dim}
    actor = _EncoderActor()
    batch = {"row": np.arange(2), "photo_id": np.array(["a", "b"], dtype=object),
             "sha256": np.array(["0", "1"], dtype=object), "pixels": pixels,
             "reason": np.array(["", ""], dtype=object)}
    raw = actor.encode(batch, setup)["raw"]
    assert actor.tower is not tower and actor.tower.path.is_relative_to(tmp_path / "node")
    np.testing.assert_allclose(raw, expected, rtol=1e-5, atol=1e-5)
