"""The study's CI_R model imported as a bundle: safe reading, exact scores on raw features, groups, heads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import interest
from interest.core.collection import embeddings_to_arrow, write_parquet_atomic
from interest.core.errors import InterestError
from interest.pipeline.encoder import split_norms
from interest.models.study import STUDY_BACKBONE, import_study_model, read_linear_state_dict


class StudyHead(torch.nn.Module):
    """The study's architecture: ``fc = nn.Sequential(nn.Linear(768, 1))``, keys ``fc.0.weight``/``fc.0.bias``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Sequential(torch.nn.Linear(768, 1))

    def forward(self, x):
        return self.fc(x)


@pytest.fixture()
def study(tmp_path):
    torch.manual_seed(3)
    head = StudyHead()
    path = tmp_path / "CI_R_model.pth"
    torch.save(head.state_dict(), path)
    # raw CLIP ViT-L/14 image features have norms far from 1; these are of the same kind
    rng = np.random.default_rng(0)
    raw = (rng.normal(size=(40, 768)) * 0.6 + rng.normal(size=768)).astype(np.float32)
    with torch.no_grad():
        expected = head(torch.from_numpy(raw)).numpy().ravel()
    return head, path, raw, expected


def test_scores_equal_the_study_head_on_raw_features_and_on_stored_embeddings(study, tmp_path):
    _, path, raw, expected = study
    model = import_study_model(path, tmp_path / "bundle", group_cuts=(-0.2, 0.3))
    loaded = interest.load(tmp_path / "bundle")
    assert loaded.backbone_id == STUDY_BACKBONE
    assert loaded.capabilities == {"ci_score", "trend_group", "user_heads"}
    # raw features, as the study's notebook feeds them
    got = loaded.score(raw)
    np.testing.assert_allclose(got["ci_score"], expected, atol=1e-5)
    assert list(got.columns) == ["index", "ci_score", "trend_group"]
    want_groups = np.where(expected >= 0.3, 0, np.where(expected < -0.2, 2, 1))
    np.testing.assert_array_equal(got["trend_group"], want_groups)
    # the contract's stored form: normalised rows plus their norm
    unit, norms = split_norms(raw)
    table = embeddings_to_arrow([f"p{i}" for i in range(len(raw))], unit, norms=norms)
    write_parquet_atomic(tmp_path / "emb.parquet", table)
    from_file = loaded.score([tmp_path / "emb.parquet"])
    np.testing.assert_allclose(from_file["ci_score"], expected, atol=1e-5)
    frame = pd.DataFrame({"photo_id": [f"p{i}" for i in range(len(raw))], "embedding": list(unit), "norm": norms})
    np.testing.assert_allclose(loaded.score(frame)["ci_score"], expected, atol=1e-5)
    np.testing.assert_allclose(model.score(raw)["ci_score"], expected, atol=1e-5)


def test_a_raw_head_refuses_normalised_embeddings_without_norms(study, tmp_path):
    _, path, raw, _ = study
    import_study_model(path, tmp_path / "bundle")
    model = interest.load(tmp_path / "bundle")
    assert "trend_group" not in model.capabilities
    unit, _ = split_norms(raw)
    with pytest.raises(InterestError, match="raw .*norm"):
        model.score(unit)
    write_parquet_atomic(tmp_path / "plain.parquet", embeddings_to_arrow(["a"] * 0 + [f"p{i}" for i in range(40)], unit))
    with pytest.raises(InterestError, match=r"plain\.parquet: no 'norm' column"):
        model.score([tmp_path / "plain.parquet"])
    with pytest.raises(InterestError, match="metadata"):
        model.score_embeddings(raw, metadata=pd.DataFrame({"views": range(40)}))


@pytest.mark.parametrize(
    "state, message",
    [
        ({"fc.0.weight": torch.zeros(1, 768)}, "missing fc.0.bias"),
        ({"fc.0.weight": torch.zeros(1, 768), "fc.0.bias": torch.zeros(1), "fc.1.weight": torch.zeros(1)},
         "unexpected fc.1.weight"),
        ({"fc.0.weight": torch.zeros(1, 512), "fc.0.bias": torch.zeros(1)}, r"'fc.0.weight' has shape \(1, 512\)"),
        ({"fc.0.weight": torch.full((1, 768), float("nan")), "fc.0.bias": torch.zeros(1)}, "NaN"),
        ([torch.zeros(1)], "not a state dict"),
    ],
)
def test_wrong_state_dicts_are_refused_in_one_line(tmp_path, state, message):
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(InterestError, match=message) as info:
        read_linear_state_dict(path)
    assert "\n" not in str(info.value) and "bad.pth" in str(info.value)


class Payload:
    """An object whose unpickling would run code: weights_only=True must refuse it."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def test_a_pickle_that_runs_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"fc.0.weight": Payload(), "fc.0.bias": torch.zeros(1)}, path)
    with pytest.raises(InterestError, match="weights_only=True"):
        read_linear_state_dict(path)
    assert "unpickled!" not in capsys.readouterr().out


def test_cuts_from_the_published_reference_and_personalize(study, tmp_path):
    _, path, raw, expected = study
    collection = tmp_path / "flickruser"
    collection.mkdir()
    ci = np.linspace(0, 1, 30)
    groups = np.where(ci >= 0.7, 0, np.where(ci < 0.35, 2, 1))
    pd.DataFrame({"photo_id": [str(i) for i in range(30)], "set": "train",
                  "published_ci_score": ci, "published_trend_group": groups}).to_parquet(collection / "reference.parquet")
    model = import_study_model(path, tmp_path / "bundle", cuts_from=collection)
    lo, hi = model.group_cuts
    assert lo == pytest.approx(ci[groups == 1].min()) and hi == pytest.approx(ci[groups == 0].min())
    assert model.metadata["provenance"]["group_cuts_from"]["agreement"] == 1.0
    # personalize adds a head as on any bundle, and it survives a save and load
    liked = raw[:8] * 1.0 + raw[:8].mean(axis=0)
    model.personalize("alice", liked)
    model.save(tmp_path / "bundle")
    again = interest.load(tmp_path / "bundle")
    scored = again.score(raw, user="alice")
    np.testing.assert_allclose(scored["ci_score"], expected, atol=1e-5)
    np.testing.assert_allclose(scored["user_score"] - scored["ci_score"], scored["deviation"], atol=1e-6)
    assert np.abs(scored["deviation"]).max() > 0
    # the liked photos themselves rank above the others for alice
    dev = scored["deviation"].to_numpy()
    assert dev[:8].mean() > dev[8:].mean()


def test_cli_imports_the_study_model(study, tmp_path):
    _, path, raw, expected = study
    out = tmp_path / "cli-bundle"
    run = subprocess.run([sys.executable, "-m", "interest", "import", "study-model", str(path), str(out),
                          "--group-cuts", "-0.2,0.3"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    np.testing.assert_allclose(interest.load(out).score(raw)["ci_score"], expected, atol=1e-5)
    unit, norms = split_norms(raw)
    write_parquet_atomic(tmp_path / "emb.parquet", embeddings_to_arrow([f"p{i}" for i in range(len(raw))], unit, norms=norms))
    scored = subprocess.run([sys.executable, "-m", "interest", "score", str(out), str(tmp_path / "emb.parquet"),
                             "--out", str(tmp_path / "s.csv"), "--device", "cpu", "--precision", "fp32"],
                            capture_output=True, text=True)
    assert scored.returncode == 0, scored.stderr
    np.testing.assert_allclose(pd.read_csv(tmp_path / "s.csv")["ci_score"], expected, atol=1e-5)
    bad = subprocess.run([sys.executable, "-m", "interest", "import", "study-model", str(tmp_path / "nope.pth"),
                          str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode == 2 and "nope.pth: file not found" in bad.stderr and "Traceback" not in bad.stderr


def test_embed_writes_the_norm_column(tmp_path):
    from interest.core.collection import read_embedding_norms
    from interest.imaging.backbones import PerceptualBackbone
    from interest.imaging.perceptual import perceptual_vector
    from interest.pipeline.local import embed_folder
    from interest.imaging.images import load_image
    from tests.image_files import jpeg_bytes, photo_like

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(jpeg_bytes(photo_like(64, 48, seed=i)))
    table = embed_folder(folder, tmp_path / "col", backbone=PerceptualBackbone(), workers=0, progress=False)
    norms = read_embedding_norms(table)
    ids = pd.read_parquet(table)["photo_id"]
    want = [np.linalg.norm(perceptual_vector(load_image(folder / pid))) for pid in ids]
    np.testing.assert_allclose(norms, want, rtol=1e-5)


def test_an_unreadable_image_beside_a_head_without_groups(study, tmp_path):
    from interest.imaging.perceptual import PERCEPTUAL_DIM
    from interest.models.study import linear_model
    from interest.scoring import with_images
    from tests.image_files import jpeg_bytes, photo_like

    rng = np.random.default_rng(5)
    model = with_images(linear_model(rng.normal(size=PERCEPTUAL_DIM), 0.0, backbone_id="perceptual/v1", raw=True))
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes(photo_like(64, 48, seed=1)))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    table = model.score([good, bad], errors="coerce", progress=False)
    assert list(table.columns) == ["path", "ci_score", "error"]
    assert np.isfinite(table["ci_score"][0]) and np.isnan(table["ci_score"][1]) and table["error"][1]


def test_a_background_collection_centres_the_heads(study, tmp_path):
    from interest.core.collection import write_embeddings

    _, path, _, _ = study
    rng = np.random.default_rng(7)
    shared = rng.normal(size=768) * 3  # CLIP-like: every embedding shares a large component
    topic_a, topic_b = rng.normal(size=768), rng.normal(size=768)
    photos = np.vstack([shared + topic_a + rng.normal(size=(500, 768)), shared + topic_b + rng.normal(size=(500, 768))])
    library = tmp_path / "library"
    write_embeddings(library, STUDY_BACKBONE, [f"b{i}" for i in range(1000)], photos)
    model = import_study_model(path, tmp_path / "bundle", background=library)
    assert model.metadata["user_heads"]["background"].startswith("1000 photos of")
    liked = (shared + topic_a + rng.normal(size=(20, 768))) * 7.0  # raw features: any scale
    model.personalize("alice", liked)
    dev = model.user_deviation("alice", photos)
    assert dev[:500].mean() > 0 > dev[500:].mean()  # her topic up, the other down
    assert abs(dev.mean()) < 0.05 * dev.std()  # centred on the background: a re-ranking, not a shift
    isotropic = import_study_model(path, tmp_path / "iso")
    isotropic.personalize("alice", liked)
    flat = isotropic.user_deviation("alice", photos)
    assert flat.mean() > 3 * flat.std()  # without a background the head mostly shifts every score
    with pytest.raises(InterestError, match="too few"):
        write_embeddings(tmp_path / "small", STUDY_BACKBONE, ["x", "y"], photos[:2])
        import_study_model(path, tmp_path / "b2", background=tmp_path / "small")


def test_write_embeddings_keeps_the_norms_of_raw_rows(study, tmp_path):
    from interest.core.collection import embeddings_path, read_embedding_norms, write_embeddings

    _, path, raw, expected = study
    ids = [f"p{i}" for i in range(len(raw))]
    write_embeddings(tmp_path / "c", STUDY_BACKBONE, ids, raw, raw=True)
    table = embeddings_path(tmp_path / "c", STUDY_BACKBONE)
    np.testing.assert_allclose(read_embedding_norms(table), np.linalg.norm(raw, axis=1), rtol=1e-6)
    model = import_study_model(path, tmp_path / "bundle")
    np.testing.assert_allclose(model.score([table])["ci_score"], expected, atol=1e-5)
    write_embeddings(tmp_path / "d", STUDY_BACKBONE, ids, raw)  # not raw: no norm column
    assert read_embedding_norms(embeddings_path(tmp_path / "d", STUDY_BACKBONE)) is None


def test_direction_heads_carry_their_parameters_and_table_through_the_estimator_state():
    """The imported model's heads save and restore like every estimator: parameters and fitted arrays."""
    from interest.models.study import DirectionHeads

    rng = np.random.default_rng(4)
    mean = rng.normal(size=8).astype(np.float32)
    heads = DirectionHeads(kappa=3.0, min_favourites=2).fit(mean, np.eye(8, dtype=np.float32), 0.5)
    liked = rng.normal(size=(4, 8)).astype(np.float32)
    w, b = heads.fit_one(liked)
    grown = heads.with_head("alice", w, b, 4)
    assert heads.users_.tolist() == [] and grown.users_.tolist() == ["alice"]  # with_head leaves heads alone
    params, arrays = grown.to_state()
    assert params == {"kappa": 3.0, "min_favourites": 2}
    again = DirectionHeads.from_state(params, arrays)
    assert again.get_params() == params and again.scale_ == 0.5
    z = rng.normal(size=(5, 8)).astype(np.float32)
    np.testing.assert_array_equal(again.deviation("alice", z), grown.deviation("alice", z))
    # the shrinkage the parameters set: n / (n + kappa) of the unshrunk direction
    unshrunk = 0.5 * (liked.astype(np.float64).mean(axis=0) - mean)
    np.testing.assert_allclose(w, 4 / 7 * unshrunk, rtol=1e-5)
