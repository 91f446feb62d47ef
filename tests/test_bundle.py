"""The model bundle: round trip, no pickle, refusal of damaged bundles, scoring images through a backbone."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading

import numpy as np
import pandas as pd
import pytest

import interest
from interest.core.collection import read_embeddings, read_table, write_embeddings
from interest.core.errors import InterestError
from interest.stages.train import TrainConfig, train_model

FAST = TrainConfig(num_threads=1, lgb_num_boost_round=100, pca_components=16, head_components=32)


@pytest.fixture(scope="module")
def collection(small_world, tmp_path_factory):
    from interest.stages.labels import label_collection

    dest = tmp_path_factory.mktemp("bundle") / "world"
    shutil.copytree(small_world, dest)
    label_collection(dest, clusters=40, seed=0, progress=False)
    return dest


@pytest.fixture(scope="module")
def bundle(collection, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "model"
    train_model(collection, out, config=FAST, progress=False)
    return out


@pytest.fixture()
def copy(bundle, tmp_path):
    dest = tmp_path / "model"
    shutil.copytree(bundle, dest)
    return dest


def test_round_trip_gives_identical_scores(collection, tmp_path):
    model = train_model(collection, tmp_path / "m", config=FAST, progress=False)
    loaded = interest.load(tmp_path / "m")
    _, ids, emb = read_embeddings(collection)
    user = model.users[3]
    photos = read_table(collection, "photos").set_index("photo_id").loc[ids[:300]].reset_index()
    for kwargs in ({}, {"user": user}, {"metadata": photos, "user": user}):
        pd.testing.assert_frame_equal(model.score_embeddings(emb[:300], **kwargs),
                                      loaded.score_embeddings(emb[:300], **kwargs))
    assert loaded.users == model.users and loaded.backbone_id == "synthetic/d64"
    assert loaded.label_settings["group_cuts"] == model.label_settings["group_cuts"]
    assert loaded.metadata["data"]["fingerprint"] == model.metadata["data"]["fingerprint"]
    assert isinstance(loaded, interest.InterestModel)


def test_a_round_trip_restores_the_trained_parameters(collection, tmp_path):
    from dataclasses import replace

    from interest.learn.boosting import StackedBooster
    from interest.learn.decomposition import PCA
    from interest.learn.prototypes import Prototypes

    model = train_model(collection, tmp_path / "m", config=replace(FAST, seed=7, ridge_folds=3), progress=False)
    loaded = interest.load(tmp_path / "m")
    for part in ("pca", "ridge", "prototypes", "booster", "groups", "heads"):
        trained, back = getattr(model, part), getattr(loaded, part)
        assert type(back) is type(trained) and back.get_params() == trained.get_params(), part
        (_, trained_arrays), (_, back_arrays) = trained.to_state(), back.to_state()
        assert trained_arrays.keys() == back_arrays.keys() >= set(trained.STATE), part
        for name in trained_arrays:
            np.testing.assert_array_equal(back_arrays[name], trained_arrays[name], err_msg=f"{part}.{name}")
        for name, booster in trained.lightgbm_state().items():
            back_booster = back.lightgbm_state()[name]
            assert (back_booster is None) == (booster is None), f"{part}.{name}"
            if booster is not None:  # the loader re-writes the checked trees as canonical text: same trees, same predictions
                X = np.random.default_rng(0).normal(size=(200, booster.num_feature()))
                assert back_booster.num_trees() == booster.num_trees()
                np.testing.assert_array_equal(back_booster.predict(X), booster.predict(X))
    assert loaded.booster.app_form()[0] == model.booster.app_form()[0] and loaded.booster.app_linear_ == model.booster.app_linear_
    assert loaded.booster.full_features_ == model.booster.full_features_ and loaded.heads.users_.tolist() == model.users
    # what was trained, not the defaults a bare estimator has
    assert loaded.pca.get_params()["seed"] == 7 != PCA().seed
    assert loaded.ridge.get_params()["folds"] == 3 and loaded.prototypes.get_params() == {"folds": 3, "seed": 7}
    assert Prototypes().get_params() == {"folds": 5, "seed": 0}
    assert loaded.booster.get_params()["num_boost_round"] == 100 != StackedBooster().num_boost_round
    # saving leaves the estimators as they were; the model takes the written model.json itself
    before = {part: getattr(model, part).to_state()[0] for part in ("pca", "ridge", "prototypes")}
    model.save(tmp_path / "again")
    assert {part: getattr(model, part).to_state()[0] for part in before} == before
    assert model.name == str(tmp_path / "again") and model.metadata["estimators"]["ridge"]["params"]["folds"] == 3


def test_a_bundle_from_before_the_parameters_loads_with_defaults(copy, collection):
    _, _, emb = read_embeddings(collection)
    new = interest.load(copy)
    meta = json.loads((copy / "model.json").read_text())
    del meta["estimators"]
    # before the booster kept its app score's (offset, scale), model.json's common_score was their only home
    with np.load(copy / "common.npz", allow_pickle=False) as npz:
        _set_npz(copy, meta, "common.npz", {k: npz[k] for k in npz.files if not k.startswith("booster_")})
    old = interest.load(copy)
    assert old.pca.get_params()["n_components"] == old.pca.components_.shape[0]  # from its arrays
    assert type(old.ridge).__name__ == "Ridge" and old.booster.num_threads == meta["training"]["num_threads"]
    assert old.groups.far_width == new.groups.far_width and old.heads.clip == new.heads.clip  # from their arrays
    assert old.booster.app_linear_ == new.booster.app_linear_
    assert (old.booster.app_linear_ is None) == (meta["common_score"]["app"] == "booster")
    for kwargs in ({}, {"user": new.users[0]}):
        pd.testing.assert_frame_equal(old.score_embeddings(emb[:200], **kwargs), new.score_embeddings(emb[:200], **kwargs))


def test_the_app_score_kept_by_the_booster_is_checked(copy):
    meta = json.loads((copy / "model.json").read_text())
    with np.load(copy / "common.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    _set_npz(copy, meta, "common.npz", {**arrays, "booster_app_linear": np.array([0.1, -2.0])})
    with pytest.raises(InterestError, match=r"common.npz: arrays that do not fit together \(app_linear must be .* positive scale\)"):
        interest.load(copy)


@pytest.mark.parametrize(
    "estimators, match",
    [
        ({"ridge": {"class": "os.system"}}, r"'estimators.ridge.class' is os.system, not one of Ridge, ZeroTruncatedPoisson"),
        ({"pca": {"params": {"n_components": "8"}}}, r"'estimators.pca.params.n_components'"),
        ({"booster": {"params": {"num_threads": 10**9}}}, r"'estimators.booster.params.num_threads' is 1000000000, outside"),
        ({"prototypes": {"params": {"__class__": 1}}}, r"unknown parameter '__class__'"),
        ([1, 2], r"'estimators'"),
    ],
)
def test_estimator_descriptions_are_checked(copy, estimators, match):
    _edit_json(copy, estimators=estimators)
    with pytest.raises(InterestError, match=match):
        interest.load(copy)


def test_bundle_has_no_pickle(bundle):
    files = sorted(p.name for p in bundle.iterdir())
    assert "model.json" in files and not [f for f in files if f.endswith((".pkl", ".pickle", ".joblib"))]
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["schema_version"] == 1 and set(meta["parts"]) == set(files) - {"model.json"}
    for name in files:
        data = (bundle / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == meta.get("parts", {}).get(name, hashlib.sha256(data).hexdigest())
        assert b"\x80\x04\x95" not in data and b"\x80\x05\x95" not in data  # no pickle stream headers
        if name.endswith(".npz"):
            with np.load(bundle / name, allow_pickle=False) as npz:
                for key in npz.files:
                    assert npz[key].dtype != object
    with np.load(bundle / "user_heads.npz", allow_pickle=False) as npz:
        assert npz["users"].dtype.kind == "U"


def test_same_seed_same_parts(collection, bundle, tmp_path):
    train_model(collection, tmp_path / "again", config=FAST, progress=False)
    a = json.loads((bundle / "model.json").read_text())["parts"]
    b = json.loads((tmp_path / "again" / "model.json").read_text())["parts"]
    assert a == b


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda p: shutil.rmtree(p), r"model[/\\]?: not a model bundle \(no model.json\); train one"),
        (lambda p: (p / "model.json").unlink(), r"model[/\\]?: not a model bundle \(no model.json\); train one"),
        (lambda p: (p / "model.json").write_text("{not json"), r"model.json: not valid JSON"),
        (lambda p: _edit_json(p, schema_version=2), r"model.json: written by a newer interest.*upgrade"),
        (lambda p: (p / "groups.npz").unlink(), r"groups.npz: part missing"),
        (lambda p: _append(p / "common_app.lgb.txt", b"\n"), r"common_app.lgb.txt: sha256 differs"),
        (lambda p: _edit_json(p, parts={}), r"model.json: part 'common.npz' is not listed"),
    ],
)
def test_damaged_bundles_are_refused(copy, damage, match):
    damage(copy)
    with pytest.raises(InterestError, match=match) as info:
        interest.load(copy)
    assert "\n" not in str(info.value)


def test_a_tampered_npz_with_a_matching_hash_is_still_checked(copy):
    # someone rewrites a part *and* its checksum, with a pickled object array inside
    buf = __import__("io").BytesIO()
    np.savez(buf, users=np.array([{"x": 1}], dtype=object))
    (copy / "user_heads.npz").write_bytes(buf.getvalue())
    _edit_json(copy, parts={**json.loads((copy / "model.json").read_text())["parts"],
                            "user_heads.npz": hashlib.sha256(buf.getvalue()).hexdigest()})
    with pytest.raises(InterestError, match=r"user_heads.npz: array 'users' has dtype object.*no pickles"):
        interest.load(copy)


def test_personalize_save_load_over_the_same_path(copy, collection):
    model = interest.load(copy)
    _, ids, emb = read_embeddings(collection)
    model.personalize("fresh", liked=emb[:20])
    expected = model.score_embeddings(emb[:100], user="fresh")
    model.save(copy)
    again = interest.load(copy)
    pd.testing.assert_frame_equal(again.score_embeddings(emb[:100], user="fresh"), expected)
    assert again.metadata["personalized"]["fresh"] == {"liked": 20, "disliked": 0}
    # no temp dirs left; only the writers' lock file, which must outlive every version of the bundle
    assert [p.name for p in copy.parent.iterdir() if p.name.startswith(".")] == [".model.lock"]


def test_editing_saves_the_edit_and_an_exception_leaves_the_bundle_as_it_was(copy, collection):
    from interest.bundle.io import editing

    _, _, emb = read_embeddings(collection)
    before = (copy / "user_heads.npz").read_bytes()
    with pytest.raises(RuntimeError, match="changed my mind"):
        with editing(copy, lambda: interest.load(copy)) as model:
            model.personalize("undecided", liked=emb[:10])
            raise RuntimeError("changed my mind")
    assert (copy / "user_heads.npz").read_bytes() == before and "undecided" not in interest.load(copy).users
    saved = []
    with editing(copy, lambda: interest.load(copy), saved=lambda: saved.append(True)) as model:
        model.personalize("decided", liked=emb[:10])
        expected = model.score_embeddings(emb[:50], user="decided")
    assert saved == [True]
    pd.testing.assert_frame_equal(interest.load(copy).score_embeddings(emb[:50], user="decided"), expected)


def test_read_bundle_gives_fitted_parts_and_the_model_over_embeddings_refuses_images(bundle, collection):
    from interest.bundle.format import ESTIMATORS
    from interest.bundle.io import read_bundle
    from interest.models.model import InterestModel

    read = read_bundle(bundle)
    assert read.kind == "full" and set(read.parts) == set(ESTIMATORS)
    assert read.metadata["parts"] == json.loads((bundle / "model.json").read_text())["parts"]
    plain = InterestModel.from_bundle(read)  # over embeddings only: no backbone
    _, _, emb = read_embeddings(collection)
    pd.testing.assert_frame_equal(plain.score(emb[:40])[["ci_score"]], interest.load(bundle).score(emb[:40])[["ci_score"]])
    with pytest.raises(InterestError, match="load it with interest.load to score images"):
        plain.score([bundle / "photo.jpg"])


def test_save_never_overwrites_something_else(bundle, tmp_path):
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_bytes(b"...")
    model = interest.load(bundle)
    with pytest.raises(InterestError, match="is not a model bundle"):
        model.save(precious)
    assert (precious / "holiday.jpg").read_bytes() == b"..."


def test_import_interest_stays_light():
    import subprocess
    import sys

    code = "import sys, interest; print('torch' in sys.modules, 'lightgbm' in sys.modules, interest.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["False", "False"] and out[2][0].isdigit()


# ------------------------------------------------------------------ images through a backbone


@pytest.fixture(scope="module")
def image_model(rendered_world, tmp_path_factory):
    """A model trained on a rendered world embedded with the weight-free perceptual backbone."""
    backbones = pytest.importorskip("interest.imaging.backbones")
    from interest.imaging.images import load_image
    from interest.stages.labels import label_collection

    root = tmp_path_factory.mktemp("images") / "world"
    shutil.copytree(rendered_world, root)
    photos = read_table(root, "photos")
    photos = photos[photos["path"].notna()]
    backbone = backbones.load_backbone("perceptual/v1")
    emb = backbone.embed([load_image(root / p) for p in photos["path"]])
    write_embeddings(root, backbone.id, photos["photo_id"].to_numpy(), emb, preprocessing=backbone.preprocessing)
    label_collection(root, clusters=20, seed=0, progress=False)
    model = train_model(root, tmp_path_factory.mktemp("images") / "model", config=FAST, progress=False)
    return model, root, photos, emb


def test_score_image_files_folders_and_bad_images(image_model, tmp_path):
    model, root, photos, emb = image_model
    paths = [root / p for p in photos["path"].iloc[:6]]
    by_file = model.score(paths, progress=False)
    assert list(by_file.columns[:2]) == ["path", "ci_score"] and list(by_file["path"]) == [str(p) for p in paths]
    np.testing.assert_allclose(by_file["ci_score"], model.score_embeddings(emb[:6])["ci_score"], rtol=1e-4, atol=1e-5)
    folder = tmp_path / "album"
    (folder / "sub").mkdir(parents=True)
    for i, p in enumerate(paths[:3]):
        shutil.copy(p, (folder / "sub" if i else folder) / f"{i}.jpg")
    (folder / "notes.txt").write_text("not an image")
    by_folder = model.score(folder, progress=False)
    assert [pd.io.common.Path(p).name for p in by_folder["path"]] == ["0.jpg", "1.jpg", "2.jpg"]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(InterestError, match="broken.jpg"):
        model.score([paths[0], broken], progress=False)
    coerced = model.score([paths[0], broken, paths[1]], errors="coerce", progress=False)
    assert coerced["ci_score"].isna().tolist() == [False, True, False]
    assert coerced["error"].isna().tolist() == [True, False, True]
    assert coerced["trend_group"].dtype == "Int64"
    np.testing.assert_allclose(coerced["ci_score"].iloc[[0, 2]], by_file["ci_score"].iloc[:2], rtol=1e-5)
    from PIL import Image

    pil = model.score([Image.open(p) for p in paths[:2]], progress=False)
    assert list(pil["index"]) == [0, 1]


def test_backbone_is_loaded_once_across_threads(image_model):
    model, root, photos, _ = image_model
    paths = [root / p for p in photos["path"].iloc[:4]]
    model.backbone_holder.backbone = None
    import interest.imaging.backbones as backbones

    calls = []
    original = backbones.load_backbone

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    backbones.load_backbone = counting
    try:
        results = []
        threads = [threading.Thread(target=lambda: results.append(model.score(paths, progress=False))) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        backbones.load_backbone = original
    assert len(calls) == 1 and len(results) == 6
    for r in results[1:]:
        pd.testing.assert_frame_equal(r, results[0])


def test_backbone_preprocessing_must_match_the_training_one(image_model):
    model, root, photos, _ = image_model
    assert model.metadata["backbone"]["preprocessing"]  # recorded from the collection's manifest
    other = interest.load(model.name)
    other.metadata["backbone"] = {**other.metadata["backbone"], "preprocessing": {"resize": 999}}
    with pytest.raises(InterestError, match=r"preprocesses images unlike .*\(.*resize: 'shorter side to size .* here, 999 in training"):
        other.score([root / photos["path"].iloc[0]], progress=False)


def test_int8_on_a_model_of_fp32_embeddings_says_so_in_one_line(image_model):
    model, root, photos, _ = image_model
    int8 = interest.load(model.name, precision="int8")
    with pytest.raises(InterestError) as caught:
        int8.score([root / photos["path"].iloc[0]], progress=False)
    message = str(caught.value)
    assert "\n" not in message and "fp32 embeddings of 'perceptual/v1'" in message
    assert "'perceptual/v1@int8'" in message and "precision='fp32'" in message


def test_personalize_from_image_files(image_model):
    model, root, photos, _ = image_model
    paths = [root / p for p in photos["path"].iloc[:5]]
    model.personalize("painter", liked=paths)
    assert "painter" in model.users
    assert "user_score" in model.score(paths, user="painter", progress=False)


def test_reloaded_bundle_shares_the_loaded_backbone(image_model, tmp_path):
    model, root, photos, _ = image_model
    paths = [root / p for p in photos["path"].iloc[:3]]
    before = model.score(paths, progress=False)
    model.save(tmp_path / "saved")
    fresh = model.reloaded(tmp_path / "saved")
    assert fresh.backbone_holder.backbone is model.backbone_holder.backbone is not None  # loaded once per process
    pd.testing.assert_frame_equal(fresh.score(paths, progress=False), before)


def _set_npz(path, meta, name, arrays):
    """Rewrite npz part ``name`` and model.json (``meta``) with its checksum, as a bundle of that layout would hold."""
    buf = __import__("io").BytesIO()
    np.savez(buf, **arrays)
    (path / name).write_bytes(buf.getvalue())
    meta["parts"][name] = hashlib.sha256(buf.getvalue()).hexdigest()
    (path / "model.json").write_text(json.dumps(meta))


def _edit_json(path, **changes):
    meta = json.loads((path / "model.json").read_text())
    meta.update(changes)
    (path / "model.json").write_text(json.dumps(meta))


def _append(path, data: bytes):
    with open(path, "ab") as f:
        f.write(data)
