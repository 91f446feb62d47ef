"""The models: ridge, stacked booster, trend groups, user heads, training and the public API."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pandas as pd
import pytest

from interest.core.collection import (
    embeddings_path,
    l2_normalize,
    read_embeddings,
    read_table,
    write_embeddings,
    write_parquet_atomic,
)
from interest.core.errors import InterestError
from interest.learn.boosting import StackedBooster
from interest.learn.decomposition import PCA
from interest.learn.linear import Ridge
from interest.learn.prototypes import Prototypes
from interest.stages.train import TrainConfig, train_model
from interest.core.numeric import spearman

FAST = TrainConfig(num_threads=1, lgb_num_boost_round=150, pca_components=16, head_components=32)


def labelled_copy(world, dest):
    """A labelled copy of a generated world (the session world itself stays unlabelled for others)."""
    from interest.stages.labels import label_collection

    shutil.copytree(world, dest)
    label_collection(dest, clusters=40, seed=0, progress=False)
    return dest


@pytest.fixture(scope="module")
def collection(small_world, tmp_path_factory):
    return labelled_copy(small_world, tmp_path_factory.mktemp("models") / "world")


@pytest.fixture(scope="module")
def model(collection):
    return train_model(collection, None, config=FAST, progress=False)


@pytest.fixture(scope="module")
def embeddings(collection):
    return read_embeddings(collection)


# ------------------------------------------------------------------ common model


def relative_unit(X):
    """What Ridge's relative alphas are relative to: the mean eigenvalue of the centred scatter matrix."""
    Xc = X - X.mean(axis=0)
    return float(np.trace(Xc.T.astype(np.float64) @ Xc) / X.shape[1])


def test_ridge_recovers_a_linear_target():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 24)).astype(np.float32)
    w = rng.normal(size=24)
    y = X @ w + 0.7 + rng.normal(scale=0.01, size=3000)
    ridge = Ridge(folds=5, seed=0).fit(X, y)
    np.testing.assert_allclose(ridge.coef_, w, atol=0.01)
    assert ridge.intercept_ == pytest.approx(0.7, abs=0.01)
    # the CV picks a small alpha for a noiseless linear target, and out-of-fold predictions are nearly exact
    assert ridge.alpha_ / relative_unit(X) <= 1e-3
    assert np.corrcoef(ridge.oof_prediction_, y)[0, 1] > 0.999
    assert np.abs(ridge.predict(X[:5]) - y[:5]).max() < 0.05


def test_ridge_is_deterministic_and_shrinks_noise():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 50)).astype(np.float32)
    y = rng.normal(size=400)  # pure noise: the best alpha is the largest, coefficients near 0
    a, b = Ridge(seed=3).fit(X, y), Ridge(seed=3).fit(X, y)
    assert np.array_equal(a.coef_, b.coef_) and np.array_equal(a.oof_prediction_, b.oof_prediction_)
    assert a.alpha_ / relative_unit(X) == pytest.approx(max(a.relative_alphas))
    assert np.abs(a.coef_).max() < 0.05


def test_stacked_booster_beats_ridge_on_a_nonlinear_target():
    rng = np.random.default_rng(2)
    centres = l2_normalize(rng.normal(size=(12, 48)))
    topic = rng.integers(0, 12, size=4000)
    X = l2_normalize(centres[topic] + rng.normal(scale=0.08, size=(4000, 48)))
    appeal = rng.random(12)
    y = appeal[topic] ** 2  # a step function of the topic: not linear in the embedding
    train, test = np.arange(3000), np.arange(3000, 4000)
    pca = PCA(16, seed=0).fit(X[train])
    ridge = Ridge(seed=0).fit(X[train], y[train])
    booster = StackedBooster(num_threads=1, seed=0).fit(pca.transform(X[train]), ridge.oof_prediction_, y[train])
    pred_ridge = ridge.predict(X[test])
    pred = booster.predict(pca.transform(X[test]), pred_ridge)
    mse_ridge, mse_boost = np.mean((pred_ridge - y[test]) ** 2), np.mean((pred - y[test]) ** 2)
    assert mse_boost < 0.7 * mse_ridge
    assert spearman(pred, y[test]) >= spearman(pred_ridge, y[test])
    assert booster.full_booster_ is None and booster.validation_["app"]["rounds"] > 10


def test_prototypes_carry_a_clusters_ci_to_new_photos():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(10, 8)) * 3
    cluster = rng.integers(0, 10, size=2000)
    X = (centres[cluster] + rng.normal(scale=0.5, size=(2000, 8))).astype(np.float32)
    ci_of = rng.random(10)
    protos = Prototypes(folds=5, seed=0).fit(X, cluster, ci_of[cluster])
    assert len(protos.ci_) == 10
    # out of fold, each photo still lands in its own (well separated) cluster
    assert np.mean(protos.oof_prediction_ == ci_of[cluster].astype(np.float32)) > 0.99
    fresh = rng.integers(0, 10, size=300)
    pred = protos.predict((centres[fresh] + rng.normal(scale=0.5, size=(300, 8))).astype(np.float32))
    np.testing.assert_allclose(pred, ci_of[fresh], rtol=1e-6)


def test_pca_is_seeded_and_orthonormal():
    X = np.random.default_rng(4).normal(size=(500, 20)).astype(np.float32)
    a, b = PCA(8, max_samples=300, seed=1).fit(X), PCA(8, max_samples=300, seed=1).fit(X)
    assert np.array_equal(a.components_, b.components_)
    np.testing.assert_allclose(a.components_ @ a.components_.T, np.eye(8), atol=1e-5)
    assert np.all(np.diff(a.explained_variance_) <= 0)


# trend groups and user heads: tests/test_heads.py


# ------------------------------------------------------------------ training and the model


def test_train_writes_metrics_and_scores_sensibly(model, collection, embeddings):
    meta = model.metadata
    assert meta["backbone"]["id"] == "synthetic/d64" and meta["backbone"]["dim"] == 64
    assert meta["data"]["fingerprint"].startswith("sha256:")
    assert meta["label_settings"]["group_cuts"] == meta["thresholds"]["group_cuts"]
    assert set(meta["features"]["metadata"]) <= set(meta["features"]["full"])
    assert meta["metrics"]["common"]["app"]["spearman"] > 0.5
    _, ids, emb = embeddings
    labels = read_table(collection, "labels").set_index("photo_id")
    test = labels.index[labels["set"] == "test"]
    rows = pd.Series(np.arange(len(ids)), index=ids)[test].to_numpy()
    scores = model.score_embeddings(emb[rows])
    assert list(scores.columns) == ["ci_score", "trend_group", "p_common", "p_interplay", "p_subjective"]
    # held-out photos: the prediction follows the CI their partition got from the definition set
    assert spearman(scores["ci_score"], labels.loc[test, "ci_score"]) > 0.6
    assert (scores["trend_group"] == labels.loc[test, "trend_group"].to_numpy()).mean() > 0.5
    np.testing.assert_allclose(scores[["p_common", "p_interplay", "p_subjective"]].sum(axis=1), 1.0, atol=1e-5)


def test_app_score_is_the_image_level_models_on_the_labels_scale(model, collection, embeddings, tmp_path):
    import json

    import interest
    from interest.learn.boosting import image_score

    _, ids, emb = embeddings
    meta = model.metadata["common_score"]
    assert meta["app"] == "image" and meta["scale"] > 0
    Z, stack = model._project(emb)
    scores = model.score_embeddings(emb)
    ci = scores["ci_score"].to_numpy()
    # exactly offset + scale * exp(linear predictor + cluster effect), not the booster
    np.testing.assert_array_equal(ci, image_score(stack, meta["offset"], meta["scale"]))
    boosted = model.booster.app_booster_.predict(model.booster.app_matrix(Z[:, : model._k], stack))
    assert np.abs(ci - boosted).max() > 1e-3
    # the least-squares line keeps the score on the label's scale: training photos' mean CI, to a few percent
    labels = read_table(collection, "labels").set_index("photo_id")
    train = labels.index[labels["set"] == "train"]
    rows = pd.Series(np.arange(len(ids)), index=ids)[train].to_numpy()
    assert abs(ci[rows].mean() - labels.loc[train, "ci_score"].mean()) < 0.05 * labels["ci_score"].std() + 1e-3
    # the trend group is still the band of this score
    lo, hi = model.groups.cuts_
    np.testing.assert_array_equal(scores["trend_group"].to_numpy(), np.where(ci >= hi, 0, np.where(ci >= lo, 1, 2)))
    # a bundle keeps it; a damaged scale is one line naming the key
    model.save(tmp_path / "m")
    np.testing.assert_array_equal(interest.load(tmp_path / "m").score_embeddings(emb)["ci_score"].to_numpy(), ci)
    doc = json.loads((tmp_path / "m" / "model.json").read_text())
    doc["common_score"]["scale"] = -1.0
    (tmp_path / "m" / "model.json").write_text(json.dumps(doc))
    with pytest.raises(InterestError, match="common_score.scale"):
        interest.load(tmp_path / "m")


def test_common_score_booster_keeps_the_stack(collection, embeddings):
    from dataclasses import replace

    old = train_model(collection, None, config=replace(FAST, common_score="booster"), progress=False)
    assert old.booster.app_linear_ is None and old.metadata["common_score"] == {"app": "booster"}
    _, _, emb = embeddings
    Z, stack = old._project(emb[:50])
    expected = old.booster.app_booster_.predict(old.booster.app_matrix(Z[:, : old._k], stack)).astype(np.float32)
    np.testing.assert_allclose(old.score_embeddings(emb[:50])["ci_score"].to_numpy(), expected, atol=1e-6)
    with pytest.raises(InterestError, match="common_score"):
        TrainConfig(common_score="trees")


def test_faves_prior_only_from_real_counts(collection, model, tmp_path):
    from dataclasses import replace

    # the world's photos carry views and faves (every crawled one at least one fave): the prior is blended in
    a, c, _ = model.metadata["metrics"]["ridge"]["faves_blend"]
    assert a > 0 and np.isfinite(c)
    off = train_model(collection, None, config=replace(FAST, faves_prior=False), progress=False)
    assert off.metadata["metrics"]["ridge"]["faves_blend"] is None
    # placeholder counts (an importer's zeros) or missing columns: no prior, and training still works
    zeros = tmp_path / "zeros"
    shutil.copytree(collection, zeros)
    photos = pd.read_parquet(zeros / "photos.parquet")
    photos.assign(faves=0).to_parquet(zeros / "photos.parquet")
    assert train_model(zeros, None, config=FAST, progress=False).metadata["metrics"]["ridge"]["faves_blend"] is None
    photos.drop(columns=["views"]).to_parquet(zeros / "photos.parquet")
    assert train_model(zeros, None, config=FAST, progress=False).metadata["metrics"]["ridge"]["faves_blend"] is None


def test_train_is_deterministic(collection, model, embeddings):
    again = train_model(collection, None, config=FAST, progress=False)
    emb = embeddings[2][:200]
    user = model.users[0]
    pd.testing.assert_frame_equal(model.score_embeddings(emb, user=user), again.score_embeddings(emb, user=user))


def test_user_scores_and_unknown_user(model, embeddings):
    emb = embeddings[2][:50]
    user = model.users[0]
    scores = model.score_embeddings(emb, user=user)
    np.testing.assert_allclose(scores["user_score"] - scores["ci_score"], scores["deviation"], atol=1e-6)
    np.testing.assert_allclose(model.user_deviation(user, emb), scores["deviation"], rtol=1e-5, atol=1e-6)
    both = model.user_deviations([user, model.users[1]], emb)
    np.testing.assert_allclose(both[:, 0], scores["deviation"], rtol=1e-5, atol=1e-6)
    with pytest.raises(InterestError, match="user nobody has no head.*interest personalize"):
        model.score_embeddings(emb, user="nobody")
    with pytest.raises(InterestError, match="nobody"):
        model.user_deviation("nobody", emb)


def test_deviation_is_the_heads_memberships_times_the_users_row_in_any_batch(model, embeddings):
    """Scoring's fast path (float32 exponentials, the division after the product) is r(x) . w_u to float32
    rounding, and a photo's deviation does not depend on the batch it is scored in."""
    emb = embeddings[2]
    heads = model.heads
    users = [u for u in model.users if np.abs(heads.weights_[heads._index[u]]).max() > 0][:3]
    F = model.head_inputs(emb)
    exact = heads.memberships(F) @ heads.weights_[[heads._index[u] for u in users]].T.astype(np.float64)
    fast = model.user_deviations(users, emb)
    scale = np.abs(exact).max()
    assert scale > 0 and np.abs(fast - exact).max() <= 1e-6 * scale
    one_by_one = np.concatenate([model.user_deviation(users[0], emb[i : i + 1]) for i in range(0, 200)])
    np.testing.assert_array_equal(one_by_one, fast[:200, 0])
    np.testing.assert_array_equal(model.user_deviation(users[0], emb[7:37]), fast[7:37, 0])


def test_heads_on_the_prototypes_read_the_prototypes_search(model, collection, embeddings, monkeypatch):
    """By default the heads' anchors are the prototypes: scoring with a head takes its memberships from the
    prototype search's scores (no search of its own) and gives the same bits as the heads' own path; with
    head_on_prototypes off the heads get k-means anchors and scoring searches them itself, to the same result."""
    import dataclasses

    from interest.learn import anchors

    emb = embeddings[2]
    assert np.array_equal(model.heads.anchors_, model.prototypes.centroids_)
    searches = []  # the heads' own searches of their anchors (the prototype search is the prototypes' own)
    own_search = anchors.nearest_centroid_score
    monkeypatch.setattr(anchors, "nearest_centroid_score", lambda *a: searches.append(len(a[0])) or own_search(*a))
    users = [u for u in model.users if np.abs(model.heads.weights_[model.heads._index[u]]).max() > 0][:2]
    assert users
    for user in users:
        dev = model.score_embeddings(emb, user=user)["deviation"].to_numpy()
        assert not searches  # the head read the prototype search's scores
        assert np.abs(dev).max() > 0
        np.testing.assert_array_equal(dev, model.user_deviation(user, emb))
        assert searches  # user_deviation searched the anchors itself
        searches.clear()

    kmeans = train_model(collection, None, config=dataclasses.replace(FAST, head_on_prototypes=False), progress=False)
    assert kmeans.heads.anchors_.shape != model.prototypes.centroids_.shape or not np.array_equal(
        kmeans.heads.anchors_, kmeans.prototypes.centroids_)
    searches.clear()
    user = next(u for u in kmeans.users if np.abs(kmeans.heads.weights_[kmeans.heads._index[u]]).max() > 0)
    dev = kmeans.score_embeddings(emb, user=user)["deviation"].to_numpy()
    assert searches
    np.testing.assert_array_equal(dev, kmeans.user_deviation(user, emb))
    np.testing.assert_array_equal(kmeans.score_embeddings(emb)["ci_score"], model.score_embeddings(emb)["ci_score"])


def test_a_photo_scores_the_same_bits_alone_and_in_any_batch(model, embeddings):
    """Every column of a call with a head (common score, trend group, probabilities, deviation) is the same
    float32 value whether a photo is scored alone, in a small batch, across the row blocks of the products
    (1,024 rows) or in one call of all photos: the products accumulate in float64, the row sums row by row."""
    emb = embeddings[2]
    assert len(emb) > 1024  # the whole call spans more than one row block
    heads = model.heads
    user = next(u for u in model.users if np.abs(heads.weights_[heads._index[u]]).max() > 0)
    whole = model.score_embeddings(emb, user=user)
    assert whole["deviation"].abs().max() > 0
    alone = pd.concat([model.score_embeddings(emb[i], user=user) for i in range(0, len(emb), 37)])
    pd.testing.assert_frame_equal(alone.reset_index(drop=True), whole.iloc[::37].reset_index(drop=True), check_exact=True)
    for start, size in ((0, 7), (3, 1000), (1, 1025)):
        parts = pd.concat([model.score_embeddings(emb[s : s + size], user=user) for s in range(start, len(emb), size)])
        pd.testing.assert_frame_equal(parts.reset_index(drop=True), whole.iloc[start:].reset_index(drop=True),
                                      check_exact=True)


def test_full_model_uses_metadata(model, collection, embeddings):
    _, ids, emb = embeddings
    photos = read_table(collection, "photos")
    meta = photos.set_index("photo_id").loc[ids[:100]].reset_index()
    app = model.score_embeddings(emb[:100])
    full = model.score_embeddings(emb[:100], metadata=meta)
    assert not np.allclose(app["ci_score"], full["ci_score"])  # a different model was used
    # NaN metadata is fine (LightGBM routes it), it is not an error
    blank = meta.assign(views=np.nan, faves=None, upload_date=pd.NaT)
    assert model.score_embeddings(emb[:100], metadata=blank)["ci_score"].notna().all()
    # via score(): metadata aligned by photo_id, whatever its row order
    frame = pd.DataFrame({"photo_id": ids[:100], "embedding": list(emb[:100])})
    by_id = model.score(frame, metadata=meta.iloc[::-1])
    np.testing.assert_allclose(by_id["ci_score"], full["ci_score"], rtol=1e-6)
    with pytest.raises(InterestError, match=f"no row for photo_id {ids[0]}"):
        model.score(frame, metadata=meta.iloc[1:])
    with pytest.raises(InterestError, match="one row per photo"):
        model.score_embeddings(emb[:100], metadata=meta.iloc[:5])


def test_score_inputs_parquet_dataframe_array(model, embeddings, tmp_path):
    _, ids, emb = embeddings
    path = tmp_path / "emb.parquet"
    from interest.core.collection import embeddings_to_arrow

    write_parquet_atomic(path, embeddings_to_arrow(ids[:30], emb[:30] * 3.0))  # scale: rows are re-normalised
    from_file = model.score(path)
    assert list(from_file.columns[:2]) == ["photo_id", "ci_score"]
    assert list(from_file["photo_id"]) == list(ids[:30])
    from_array = model.score(emb[:30])
    assert list(from_array["index"]) == list(range(30))
    np.testing.assert_allclose(from_file["ci_score"], from_array["ci_score"], rtol=1e-5)
    frame = pd.DataFrame({"photo_id": ids[:30], "embedding": [list(e) for e in emb[:30]]})
    np.testing.assert_allclose(model.score(frame)["ci_score"], from_array["ci_score"], rtol=1e-5)
    wide = tmp_path / "wide.parquet"
    write_parquet_atomic(wide, embeddings_to_arrow(ids[:3], np.ones((3, 512), dtype=np.float32)))
    with pytest.raises(InterestError, match=r"wide.parquet: 512-d embeddings.*expects 64-d"):
        model.score([path, wide])
    with pytest.raises(InterestError, match="mix Parquet embeddings and images"):
        model.score([path, tmp_path / "a.jpg"])
    # a collection's table names its backbone: the same 64-d rows under another backbone are refused
    other = embeddings_path(tmp_path / "coll", "synthetic/other")
    other.parent.mkdir(parents=True)
    write_parquet_atomic(other, embeddings_to_arrow(ids[:3], emb[:3]))
    with pytest.raises(InterestError, match=r"backbone 'synthetic/other' cannot be scored by .*embed the photos with that"):
        model.score(other)
    own = embeddings_path(tmp_path / "coll", model.backbone_id)
    own.parent.mkdir(parents=True)
    write_parquet_atomic(own, embeddings_to_arrow(ids[:30], emb[:30]))
    np.testing.assert_allclose(model.score(own)["ci_score"], from_array["ci_score"], rtol=1e-5)
    with pytest.raises(InterestError, match="cannot score a int"):
        model.score(42)
    with pytest.raises(InterestError, match="nothing to score"):
        model.score([])


def test_backbone_mismatch_and_wrong_dimension(model, embeddings):
    emb = embeddings[2][:5]
    with pytest.raises(InterestError, match="backbone 'openclip/ViT-B-32/laion2b_s34b_b79k'.*synthetic/d64"):
        model.score_embeddings(emb, backbone_id="openclip/ViT-B-32/laion2b_s34b_b79k")
    assert len(model.score_embeddings(emb, backbone_id="synthetic/d64")) == 5
    with pytest.raises(InterestError, match=r"expects \(n, 64\)"):
        model.score_embeddings(np.ones((5, 512), dtype=np.float32))
    with pytest.raises(InterestError, match="NaN"):
        model.score_embeddings(np.full((2, 64), np.nan))


def test_personalize_from_liked_embeddings(model, collection, embeddings):
    _, ids, emb = embeddings
    truth = pd.read_parquet(collection / "ground_truth" / "photos.parquet")
    topic = truth.set_index("photo_id").loc[ids, "topic"].to_numpy()
    liked_topic = pd.Series(topic).value_counts().index[-1]  # a niche (rarely photographed) topic
    liked = emb[topic == liked_topic][:25]
    before = set(model.users)
    model.personalize("newcomer", liked=liked)
    assert "newcomer" in model.users and set(model.users) - before == {"newcomer"}
    dev = model.user_deviation("newcomer", emb)
    other = topic != liked_topic
    assert (dev[topic == liked_topic][:, None] > dev[other][None, :]).mean() > 0.9
    scores = model.score_embeddings(emb, user="newcomer")
    assert scores["user_score"][topic == liked_topic].mean() > scores["ci_score"][topic == liked_topic].mean()
    # deterministic, and replacing the head gives the same head for the same photos
    first = model._heads.weights_[model.users.index("newcomer")].copy()
    model.personalize("newcomer", liked=liked)
    assert np.array_equal(model._heads.weights_[model.users.index("newcomer")], first)
    assert model.users.count("newcomer") == 1
    # disliked photos push their topic down
    model.personalize("newcomer", liked=liked, disliked=emb[topic == topic[other][0]][:25])
    assert model.user_deviation("newcomer", emb[topic == topic[other][0]]).mean() < dev[topic == topic[other][0]].mean()
    with pytest.raises(InterestError, match="no liked photos"):
        model.personalize("someone", liked=[])
    with pytest.raises(InterestError, match="no liked photos"):
        model.personalize("someone", liked=np.empty((0, 64), dtype=np.float32))


def test_concurrent_scoring_while_personalizing(model, embeddings):
    emb = embeddings[2][:500]
    user = model.users[2]
    expected = model.score_embeddings(emb, user=user)
    expected_plain = model.score_embeddings(emb)
    failures: list[str] = []

    def worker(i: int) -> None:
        for _ in range(10):
            got = model.score_embeddings(emb, user=user) if i % 2 else model.score_embeddings(emb)
            want = expected if i % 2 else expected_plain
            if not got.equals(want):
                failures.append(f"thread {i} got different scores")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for j in range(40):  # meanwhile: heads for new users are added and replaced
        model.personalize(f"busy{j % 5}", liked=emb[j : j + 10])
    for t in threads:
        t.join()
    assert not failures
    assert {f"busy{j}" for j in range(5)} <= set(model.users)
    assert len(model.users) == len(set(model.users))


def test_train_bad_input(collection, tmp_path, embeddings):
    bare = tmp_path / "bare"
    shutil.copytree(collection, bare)
    (bare / "labels.parquet").unlink()
    with pytest.raises(InterestError, match="labels.parquet.*interest label"):
        train_model(bare, None, config=FAST, progress=False)
    # embeddings of another backbone than the labels were made on
    other = tmp_path / "other"
    shutil.copytree(collection, other)
    _, ids, emb = embeddings
    shutil.rmtree(other / "features")
    write_embeddings(other, "synthetic/other", ids, emb[:, ::-1])
    with pytest.raises(InterestError, match="labelled on backbone 'synthetic/d64', not 'synthetic/other'"):
        train_model(other, None, config=FAST, progress=False)
    with pytest.raises(InterestError, match="head_pseudo_counts"):
        TrainConfig(head_pseudo_counts=[0])


def test_config_file_round_trip(tmp_path):
    from interest.core.config import load_config

    path = tmp_path / "train.yaml"
    path.write_text("seed: 3\nhead_pseudo_counts: [5, 50]\nridge_alpha: 0.5\n")
    config = load_config(TrainConfig, path)
    assert config.seed == 3 and config.head_pseudo_counts == [5, 50] and config.ridge_alpha == 0.5
    path.write_text("sede: 3\n")
    with pytest.raises(InterestError, match="unknown key 'sede'"):
        load_config(TrainConfig, path)


def test_shipped_config_matches_defaults():
    from pathlib import Path

    from interest.core.config import load_config

    shipped = Path(__file__).resolve().parents[1] / "configs" / "train.yaml"
    assert load_config(TrainConfig, shipped) == TrainConfig()


# ---------------------------------------------------------------- the image-level common model


def test_zero_truncated_poisson_recovers_the_slope_a_crawl_hides():
    from interest.learn.linear import ZeroTruncatedPoisson

    rng = np.random.default_rng(0)
    X = rng.standard_normal((6000, 8)).astype(np.float32) / np.sqrt(8)
    w = np.array([2.0, -1.5, 1.0, 0, 0, 0.5, 0, 0])
    lam = np.exp(X @ w - 0.5)
    counts = rng.poisson(lam)
    kept = counts >= 1  # a crawl only sees photos with a favourite
    model = ZeroTruncatedPoisson(seed=0).fit(X[kept], counts[kept])
    # the slope survives the truncation: within 15% of the truth, direction nearly exact
    assert np.corrcoef(model.coef_, w)[0, 1] > 0.98
    assert np.linalg.norm(model.coef_) == pytest.approx(np.linalg.norm(w), rel=0.15)
    # a ridge on log counts of the same photos is flattened by the many ones
    flat = Ridge(seed=0).fit(X[kept], np.log(counts[kept]))
    assert np.linalg.norm(flat.coef_) < 0.6 * np.linalg.norm(model.coef_)
    # out-of-fold predictions rank unseen rows nearly as well as the truth does
    assert spearman(model.oof_prediction_, X[kept] @ w) > 0.95
    assert model.predict(X[:5]).dtype == np.float32 and len(model.cv_deviance_) == 5


def test_zero_truncated_poisson_blends_a_prior_as_far_as_the_counts_agree():
    from interest.learn.linear import ZeroTruncatedPoisson

    rng = np.random.default_rng(1)
    d = 48
    X = rng.standard_normal((3000, d)).astype(np.float32) / np.sqrt(d)
    w = rng.standard_normal(d)
    counts = rng.poisson(np.exp(X @ w - 1.5))  # sparse, as a crawl's: most kept photos have one favourite
    kept = counts >= 1
    X, counts = X[kept], counts[kept]

    def prior_from(target):
        ridge = Ridge(seed=0).fit(X, target)
        return ridge.oof_prediction_.astype(np.float64), *ridge.linear_form()

    # a second, noisy measurement of the same appeal (what faves per view are to the collection's counts)
    informative = prior_from(X @ w + rng.normal(0, 1.0, len(X)))
    unrelated = prior_from(rng.standard_normal(len(X)))
    plain = ZeroTruncatedPoisson(seed=0).fit(X, counts)
    helped = ZeroTruncatedPoisson(seed=0).fit(X, counts, prior=informative)
    ignored = ZeroTruncatedPoisson(seed=0).fit(X, counts, prior=unrelated)

    a, c, b = helped.blend_
    # each prior's share of the blended predictor's spread (measured 1.21 and 0.022)
    share = lambda m, prior: abs(m.blend_[1]) * prior[0].std() / (m.blend_[0] * plain.oof_prediction_.std())  # noqa: E731
    assert c > 0 and share(helped, informative) > 0.3 and share(ignored, unrelated) < 0.05
    # the blend is folded into one linear predictor: a * own + c * prior + b
    expected = a * plain.predict(X).astype(np.float64) + c * (X @ informative[1] + informative[2]) + b
    np.testing.assert_allclose(helped.predict(X), expected, rtol=1e-4, atol=1e-4)
    # and the direction it learns is nearer the truth than the counts alone give
    cos = lambda v: float(v @ w / np.linalg.norm(v) / np.linalg.norm(w))  # noqa: E731
    # measured: cosine with the truth 0.941 alone, 0.976 blended, 0.945 with the unrelated prior
    assert 1 - cos(helped.coef_) < 0.7 * (1 - cos(plain.coef_))
    assert abs(cos(ignored.coef_) - cos(plain.coef_)) < 0.01
    assert hasattr(plain, "blend_") is False
