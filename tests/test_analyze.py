"""Analysis tables, statistics, drivers and taste: numbers checked against direct computations.

``make_collection`` (a hand-made collection) and ``model_world`` (a small
rendered world, characterised, labelled and trained once per session) are
also used by test_report.py and test_notebooks.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from interest.stages.analyze import analyze, run_analysis, stats
from interest.stages.analyze import tables as T
from interest.stages.analyze.compare import compare_published
from interest.core.collection import write_parquet_atomic, write_table
from interest.core.errors import InterestError

STYLES = ["hdr", "macro", "duo_tones"]
EMOTIONS = ["awe", "excitement", "sadness"]
PARTITIONS = {"0.1": (0, 0.9, 11), "2": (0, 0.8, 10), "3.4": (1, 0.5, 6), "5": (1, 0.4, 5), "6.7": (2, 0.1, 2), "8": (2, 0.05, 1)}


def make_collection(root: Path, *, n_photos: int = 90, images: bool = True, characteristics: bool = True, seed: int = 0) -> Path:
    """Write users, photos, favorites, labels, partitions and characteristics to ``root``.

    Six partitions, two per trend group; the common group leans to HDR, awe,
    brighter images and photographers, the subjective one to duo tones and
    sadness, so that the tables have real differences to find.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    ids = [f"{5_000_000 + i}" for i in range(n_photos)]
    names = list(PARTITIONS)
    partition = np.array([names[i % len(names)] for i in range(n_photos)])
    group = np.array([PARTITIONS[p][0] for p in partition])
    style_p = {0: [0.6, 0.3, 0.1], 1: [0.3, 0.4, 0.3], 2: [0.1, 0.3, 0.6]}
    emotion_p = {0: [0.5, 0.4, 0.1], 1: [0.3, 0.3, 0.4], 2: [0.1, 0.2, 0.7]}
    views = rng.integers(10, 1000, n_photos) * (3 - group)
    occupation = np.where(rng.random(n_photos) < 0.6 - 0.2 * group, "Professional photographer", None)
    occupation[::7] = "teacher"
    paths: list[str | None] = [None] * n_photos
    if images:
        (root / "images").mkdir(parents=True, exist_ok=True)
        for i, pid in enumerate(ids):
            Image.new("RGB", (48, 32), tuple(int(c) for c in rng.integers(0, 255, 3))).save(root / "images" / f"{pid}.jpg")
            paths[i] = f"images/{pid}.jpg"
    users = [f"{1000 + u}@N01" for u in range(12)]
    write_table(root, "users", pd.DataFrame({"user_id": users}))
    write_table(
        root,
        "photos",
        pd.DataFrame(
            {
                "photo_id": ids,
                "owner_id": [f"{9000 + i % 10}@N02" for i in range(n_photos)],
                "path": paths,
                "views": views,
                "faves": views // 10,
                "comments": views // 50,
                "upload_date": pd.Timestamp("2020-01-01", tz="UTC") + pd.to_timedelta(np.arange(n_photos), unit="D"),
                "owner_ispro": rng.random(n_photos) < 0.5,
                "owner_occupation": occupation,
                "status": "ok",
            }
        ),
    )
    faves = [(users[(i * 5 + k) % 12], pid) for i, pid in enumerate(ids) for k in range(3 - group[i])]
    write_table(root, "favorites", pd.DataFrame(faves, columns=["user_id", "photo_id"]).drop_duplicates())
    write_table(
        root,
        "labels",
        pd.DataFrame(
            {
                "photo_id": ids,
                "set": np.where(np.arange(n_photos) % 5 == 0, "test", "train"),
                "cluster_label": [int(p.split(".")[0]) for p in partition],
                "partition": partition,
                "ci_score": [PARTITIONS[p][1] for p in partition],
                "trend_group": group,
            }
        ),
    )
    write_parquet_atomic(
        root / "partitions.parquet",
        pd.DataFrame(
            {
                "partition": names,
                "n_photos": [int((partition == p).sum()) for p in names],
                "distinct_users": [PARTITIONS[p][2] for p in names],
                "ci_score": [PARTITIONS[p][1] for p in names],
                "trend_group": [PARTITIONS[p][0] for p in names],
                "x": np.arange(6.0),
                "y": [1.0, 0.0] * 3,
            }
        ),
    )
    if characteristics:
        write_table(
            root,
            "characteristics",
            pd.DataFrame(
                {
                    "photo_id": ids,
                    "brightness": rng.normal(0.6 - 0.1 * group, 0.05),
                    "aesthetic_score": rng.normal(0.55 - 0.05 * group, 0.05),
                    "main_style": [STYLES[rng.choice(3, p=style_p[g])] for g in group],
                    "main_emotion": [EMOTIONS[rng.choice(3, p=emotion_p[g])] for g in group],
                }
            ),
        )
    return root


def model_world(base: Path) -> tuple[Path, Path]:
    """A small rendered world, characterised, labelled and trained: (collection, model bundle).

    Built once under ``base`` and reused (the test modules that need it share
    the session's base temp folder).
    """
    root, bundle = base / "analysis_world", base / "analysis_model"
    if (bundle / "model.json").is_file():
        return root, bundle
    import warnings

    from interest.stages.characterize import characterize
    from interest.stages.labels import label_collection
    from interest.stages.train import TrainConfig, train_model
    from interest.synthetic.world import generate_world

    shutil.rmtree(root, ignore_errors=True)
    generate_world(root, n_users=60, n_photos=400, n_topics=8, render=True, embed_dim=32, seed=3, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no CLIP text tower here: emotions and styles are skipped
        characterize(root, progress=False)
        label_collection(root, clusters=40, seed=0, progress=False)
    train_model(root, bundle, config=TrainConfig(num_threads=1), progress=False)
    return root, bundle


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return make_collection(tmp_path_factory.mktemp("handmade"))


@pytest.fixture(scope="module")
def frame(collection):
    return T.photo_table(collection)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return model_world(tmp_path_factory.getbasetemp())


# ---------------------------------------------------------------- tables vs direct computation


def test_share_table_equals_direct_computation(frame):
    table = T.share_table(frame, "main_style", n_boot=200, seed=0)
    direct = pd.crosstab(frame["main_style"], frame["group"], normalize="columns") * 100
    for style in STYLES:
        for g in T.GROUPS:
            assert table.loc[style, g] == pytest.approx(direct.loc[style, g])
        assert table.loc[style, "delta"] == pytest.approx(direct.loc[style, "common"] - direct.loc[style, "subjective"])
    # sorted like the study: largest common - subjective first
    assert list(table["delta"]) == sorted(table["delta"], reverse=True)
    assert table.index[0] == "hdr" and table.index[-1] == "duo_tones"
    # the planted differences (60 % vs 10 % HDR, 10 % vs 60 % duo tones) are found real; Cohen's h by hand
    assert table.loc["hdr", "real"] and table.loc["duo_tones", "real"]
    p1, p2 = direct.loc["hdr", "common"] / 100, direct.loc["hdr", "subjective"] / 100
    assert table.loc["hdr", "cohens_h"] == pytest.approx(2 * np.arcsin(np.sqrt(p1)) - 2 * np.arcsin(np.sqrt(p2)))


def test_quantile_and_median_tables_equal_direct_computation(frame):
    quart = T.quantile_table(frame, "aesthetic_score", n_boot=200)
    cont = T.continuous_table(frame, ["views", "brightness"], n_boot=200)
    for g, name in enumerate(T.GROUPS):
        values = frame.loc[frame["trend_group"] == g, "aesthetic_score"]
        assert quart.loc["25th percentile", name] == pytest.approx(np.quantile(values, 0.25))
        assert quart.loc["median", name] == pytest.approx(np.median(values))
        assert quart.loc["75th percentile", name] == pytest.approx(np.quantile(values, 0.75))
        assert cont.loc["views", name] == pytest.approx(frame.loc[frame["trend_group"] == g, "views"].astype(float).median())
    assert cont.loc["views", "delta"] == pytest.approx(cont.loc["views", "common"] - cont.loc["views", "subjective"])
    # rank-biserial by its definition: P(common > subjective) - P(common < subjective)
    a = frame.loc[frame["trend_group"] == 0, "brightness"].to_numpy()
    b = frame.loc[frame["trend_group"] == 2, "brightness"].to_numpy()
    diff = a[:, None] - b[None, :]
    assert cont.loc["brightness", "rank_biserial"] == pytest.approx((diff > 0).mean() - (diff < 0).mean())


def test_owner_share_follows_the_study_definition(frame):
    table = T.binary_table(frame, {"owner is a photographer": "owner_is_photographer"}, n_boot=100)
    for g, name in enumerate(T.GROUPS):
        occupation = frame.loc[frame["trend_group"] == g, "owner_occupation"]
        # "photographer" in the occupation; an empty occupation counts as not a photographer
        expected = 100 * occupation.fillna("").str.contains("photographer", case=False).mean()
        assert table.loc["owner is a photographer", name] == pytest.approx(expected)


def test_main_style_is_derived_from_style_scores(tmp_path):
    root = make_collection(tmp_path, n_photos=30, images=False, characteristics=False)
    scores = np.random.default_rng(1).dirichlet(np.ones(3), size=30)
    ids = [f"{5_000_000 + i}" for i in range(30)]
    write_table(root, "characteristics", pd.DataFrame({"photo_id": ids, **{f"style_{s}": scores[:, i] for i, s in enumerate(STYLES)}}))
    frame = T.photo_table(root)
    assert list(frame.loc[ids, "main_style"]) == [STYLES[i] for i in scores.argmax(axis=1)]


# ---------------------------------------------------------------- statistics


def test_bootstrap_interval_contains_estimate_and_is_seeded(frame):
    # photo-level resampling here: two partitions per group leave the cluster bootstrap 3 outcomes only
    one = T.share_table(frame, "main_emotion", n_boot=300, seed=7, cluster=None)
    two = T.share_table(frame, "main_emotion", n_boot=300, seed=7, cluster=None)
    other = T.share_table(frame, "main_emotion", n_boot=300, seed=8, cluster=None)
    pd.testing.assert_frame_equal(one, two)
    assert not np.allclose(one["delta_lo"], other["delta_lo"])
    assert ((one["delta_lo"] <= one["delta"]) & (one["delta"] <= one["delta_hi"])).all()
    cont = T.continuous_table(frame, ["views", "brightness", "aesthetic_score"], n_boot=300, seed=7)
    assert ((cont["delta_lo"] <= cont["delta"]) & (cont["delta"] <= cont["delta_hi"])).all()


def test_bootstrap_spread_matches_theory_and_clusters_widen_it():
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    reps = stats.bootstrap_stat(x, n_boot=2000, rng=np.random.default_rng(1))
    assert reps.std() == pytest.approx(x.std() / np.sqrt(len(x)), rel=0.1)
    # 8 clusters of 50 photos that share a cluster effect: resampling clusters sees that variation
    clusters = np.repeat(np.arange(8), 50)
    y = rng.normal(size=8)[clusters] + 0.1 * rng.normal(size=400)
    photo_level = stats.bootstrap_stat(y, n_boot=1000, rng=np.random.default_rng(2)).std()
    cluster_level = stats.bootstrap_stat(y, clusters=clusters, n_boot=1000, rng=np.random.default_rng(2)).std()
    assert cluster_level > 3 * photo_level
    # one cluster: nothing to resample; quantile replicates are observed values
    assert np.ptp(stats.bootstrap_stat(y[:50], clusters=clusters[:50], n_boot=50, rng=np.random.default_rng(3))) == 0
    med = stats.bootstrap_stat(x, stat="quantile", q=0.5, n_boot=200, rng=np.random.default_rng(4))
    assert np.isin(med, x).all()


def test_tests_and_effect_sizes_by_hand():
    z, p = stats.two_proportion_test(30, 50, 10, 50)
    pooled = 40 / 100
    assert z == pytest.approx((0.6 - 0.2) / np.sqrt(pooled * (1 - pooled) * (2 / 50)))
    assert p < 0.001
    assert np.isnan(stats.two_proportion_test(5, 10, 0, 0)).all()
    r, p = stats.mann_whitney(np.arange(10.0) + 100, np.arange(10.0))
    assert r == 1.0 and p < 0.001
    assert stats.mann_whitney(np.ones(5), np.ones(5)) == (0.0, 1.0)
    assert stats.cohens_h(0.5, 0.5) == 0
    np.testing.assert_allclose(stats.holm(np.array([0.01, 0.04, np.nan, 0.03])), [0.03, 0.06, np.nan, 0.06])
    chi2, p, v = stats.chi_square(np.array([[10, 0], [0, 10]]))
    assert v == pytest.approx(1.0) and p < 0.001


# ---------------------------------------------------------------- analyze()


def test_analyze_writes_csvs_and_notes(collection, tmp_path):
    tables = analyze(collection, out=tmp_path / "tables", n_boot=100, progress=False)
    for name in ("groups", "main_style", "main_emotion", "aesthetic_quartiles", "owner", "metadata", "characteristics", "omnibus", "correlations", "notes"):
        assert name in tables
        assert (tmp_path / "tables" / f"{name}.csv").is_file()
    back = pd.read_csv(tmp_path / "tables" / "main_style.csv", index_col=0)
    np.testing.assert_allclose(back["delta"], tables["main_style"]["delta"])
    assert tables["groups"]["photos"].sum() == 90
    notes = " ".join(tables["notes"]["note"])
    assert "--model" in notes and "reference.parquet" in notes


def test_missing_inputs_are_one_line_errors_or_notes(tmp_path):
    with pytest.raises(InterestError, match="labels.parquet"):
        analyze(tmp_path, progress=False)
    root = make_collection(tmp_path / "bare", n_photos=30, images=False, characteristics=False)
    tables = analyze(root, n_boot=50, progress=False)
    assert "main_style" not in tables and "characteristics" not in tables
    assert any("characterize" in n for n in tables["notes"]["note"])
    with pytest.raises(InterestError, match=r"nope: not a model bundle \(no model.json\)"):
        analyze(root, model=tmp_path / "nope", progress=False)


def test_comparison_with_published_labels(frame):
    ref = frame[["ci_score", "trend_group", "partition"]].add_prefix("published_")
    metrics, confusion = compare_published(frame, ref)
    assert metrics.loc["CI score: Spearman", "value"] == pytest.approx(1.0)
    assert metrics.loc["trend group: Cohen's kappa", "value"] == pytest.approx(1.0)
    assert metrics.loc["partitions: adjusted Rand index", "value"] == pytest.approx(1.0)
    assert np.trace(confusion.to_numpy()) == len(frame)
    # the published groups reversed: agreement only for interplay
    flipped = ref.assign(published_trend_group=2 - ref["published_trend_group"])
    metrics, _ = compare_published(frame, flipped)
    assert metrics.loc["trend group: agreement %", "value"] == pytest.approx(100 / 3)


# ---------------------------------------------------------------- with a trained model


def test_drivers_reproduce_the_models_predictions(trained):
    import interest
    from interest.stages.analyze import drivers
    from interest.core.collection import read_embeddings

    root, bundle = trained
    model = interest.load(bundle)
    frame = T.photo_table(root)
    _, ids, emb = read_embeddings(root, model.backbone_id)
    explanation = drivers.explain(model, frame, ids, emb)
    # the matrix built by name is the one the model's full variant sees, and the contributions add up to its scores
    expected = model.score_embeddings(emb, metadata=frame.loc[ids].reset_index())["ci_score"]
    np.testing.assert_allclose(explanation.predict(), expected, atol=1e-5)
    np.testing.assert_allclose(explanation.bias + explanation.contributions.sum(axis=1), expected, atol=1e-5)
    assert explanation.contributions.shape == explanation.inputs.shape == (len(ids), len(explanation.features))
    assert "aesthetic_proxy" in explanation.features and explanation.features[0] == "pca_0"
    imp = drivers.importance(explanation)
    assert imp["mean_abs_contribution"].sum() <= np.abs(explanation.contributions).sum(axis=1).mean() + 1e-9
    assert imp["share_%"].sum() == pytest.approx(100)
    assert drivers.EMBEDDING in imp.index and not any(i.startswith("pca_") for i in imp.index)
    curves = drivers.partial_dependence(explanation, ["aesthetic_proxy"], rows=np.arange(100), grid=5)
    assert len(curves) == 5 and curves["value"].is_monotonic_increasing


def test_analyze_with_model_covers_drivers_and_taste(trained):
    import interest

    root, bundle = trained
    result = run_analysis(root, model=bundle, n_boot=50, progress=False)
    t = result.tables
    for name in ("importance", "partial_dependence", "taste_users", "taste_characteristics", "taste_spread"):
        assert name in t and len(t[name])
    model = interest.load(bundle)
    assert set(t["taste_users"].index) == set(model.users)
    # deviation SD per user recomputed from the public API
    user = t["taste_users"].index[0]
    dev = model.user_deviation(user, result.embeddings[1][np.isin(result.embeddings[0], result.taste_photos)])
    assert t["taste_users"].loc[user, "deviation_sd"] == pytest.approx(dev.std(), rel=1e-4)
    # a user's mean deviation per partition, by hand
    part = result.frame.loc[result.taste_photos, "partition"].to_numpy()
    assert result.frame["ci_predicted"].notna().all()
    col = list(t["taste_characteristics"].index).index(user)
    p0 = t["taste_users"].loc[user, "top_partition"]
    assert t["taste_users"].loc[user, "top_partition_deviation"] == pytest.approx(result.taste_deviations[part == p0, col].mean(), rel=1e-5)


def test_imported_collection_is_compared_and_uses_published_characteristics(tmp_path):
    root = make_collection(tmp_path, n_photos=60, images=False, characteristics=False)
    labels = pd.read_parquet(root / "labels.parquet")
    styles = np.array(STYLES)[np.arange(60) % 3]
    write_parquet_atomic(
        root / "reference.parquet",
        pd.DataFrame(
            {
                "photo_id": labels["photo_id"],
                "set": labels["set"],  # the importer keeps it too; must not clash with ours
                "published_ci_score": labels["ci_score"] * 0.5,
                "published_trend_group": labels["trend_group"],
                "published_partition": labels["partition"],
                "published_VILA_main_feature": styles,
            }
        ),
    )
    tables = analyze(root, n_boot=50, progress=False)
    assert tables["published"].loc["CI score: Spearman", "value"] == pytest.approx(1.0)
    assert tables["published"].loc["trend group: agreement %", "value"] == pytest.approx(100.0)
    # the study's style table from the published VILA main style, said so in the notes
    assert set(tables["main_style"].index) == set(STYLES)
    assert tables["main_style"]["common"].sum() == pytest.approx(100.0)
    assert any("published" in n and "main_style" in n for n in tables["notes"]["note"])


def test_quantile_by_bisection_equals_cumulative_sum():
    rng = np.random.default_rng(5)
    x = np.round(rng.normal(size=300), 1)  # ties on purpose
    clusters = rng.integers(0, 12, 300)
    codes = pd.factorize(clusters)[0]
    w = rng.multinomial(12, np.full(12, 1 / 12), size=200).astype(float)
    order = np.argsort(x, kind="stable")
    for q in (0.1, 0.25, 0.5, 0.9):
        direct = stats.weighted_quantile_sorted(x[order], codes[order], w, q)
        np.testing.assert_array_equal(stats._ClusterQuantile(x, codes, 12)(w, q), direct)
    # unit weights: the plain inverted-CDF quantile
    ones = np.ones((1, 12))
    assert stats._ClusterQuantile(x, codes, 12)(ones, 0.5)[0] == np.quantile(x, 0.5, method="inverted_cdf")
