"""Labels: the CI score on hand-made collections where it can be computed by hand."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from interest.core.collection import read_manifest, write_embeddings, write_table
from interest.core.errors import InterestError
from interest.stages.labels import (
    assign_trend_groups,
    label_collection,
    label_settings,
    partition_commonality,
    partitions_path,
    quantile_cuts,
    read_labels,
)
from interest.stages.labels import ci as ci_module

BACKBONE = "test/bb8"
# Four tight topics; A-B and C-D are close pairs, so merging 4 clusters into 2 partitions gives {A,B}, {C,D}.
DIRECTIONS = {
    "A": [1.0, 0.0, 0.0, 0.0],
    "B": [1.0, 0.3, 0.0, 0.0],
    "C": [0.0, 0.0, 1.0, 0.0],
    "D": [0.0, 0.0, 1.0, 0.3],
}
SIZES = {"A": 10, "B": 10, "C": 20, "D": 20}
# user -> photos favourited, as (topic, index within topic)
FAVOURITES = {
    "u1": [("A", 0), ("A", 1)],
    "u2": [("A", 2), ("C", 0)],
    "u3": [("C", 1), ("D", 0)],
    "u4": [("D", 1)],
    "u5": [("B", 0)],
    "u6": [("B", 1), ("B", 2), ("B", 3)],
}


def make_collection(root, *, favourites=FAVOURITES, extra_photos=None, embed=True):
    """Topics A-D of SIZES photos with ids like 'A03'; embeddings near DIRECTIONS with tiny noise."""
    rng = np.random.default_rng(7)
    ids, vectors = [], []
    for topic, n in SIZES.items():
        for i in range(n):
            ids.append(f"{topic}{i:02d}")
            vectors.append(np.array(DIRECTIONS[topic] + [0.0] * 4) + rng.normal(0, 0.005, 8))
    photos = pd.DataFrame({"photo_id": ids, "status": "ok"})
    if extra_photos is not None:
        photos = pd.concat([photos, extra_photos], ignore_index=True)
    write_table(root, "photos", photos)
    fav = pd.DataFrame(
        [(u, f"{t}{i:02d}") for u, photos_of in favourites.items() for t, i in photos_of],
        columns=["user_id", "photo_id"],
    )
    write_table(root, "favorites", fav)
    if embed:
        write_embeddings(root, BACKBONE, ids, np.array(vectors))
    return root


def reference_ci(labels: pd.DataFrame, favourites: pd.DataFrame, on_set: str) -> dict[str, float]:
    """Distinct users per partition / users, by plain Python sets (the paper's definition)."""
    photo_set = dict(zip(labels["photo_id"], labels["set"]))
    photo_part = dict(zip(labels["photo_id"], labels["partition"]))
    users_in: dict[str, set] = {}
    all_users = set()
    for user, photo in zip(favourites["user_id"], favourites["photo_id"]):
        if photo_set.get(photo) != on_set:
            continue
        users_in.setdefault(photo_part[photo], set()).add(user)
        all_users.add(user)
    return {p: len(users_in.get(p, ())) / len(all_users) for p in labels["partition"].unique()}


def test_paper_ci_and_size_adjusted_by_hand(tmp_path):
    root = make_collection(tmp_path)
    labels = label_collection(root, method="paper", user_test_fraction=0.0, clusters=4, merge_ratio=0.5, test_fraction=0.0, progress=False)
    assert (labels["set"] == "train").all()
    topic = labels["photo_id"].str[0]
    # Each topic is one cluster; A+B and C+D are the two partitions.
    assert labels.groupby(topic)["cluster_label"].nunique().eq(1).all()
    assert labels.groupby(topic)["cluster_label"].first().nunique() == 4
    part = labels.groupby(topic)["partition"].first()
    assert part["A"] == part["B"] != part["C"] == part["D"]
    clusters_ab = sorted(labels.loc[topic.isin(["A", "B"]), "cluster_label"].unique())
    assert part["A"] == ".".join(str(c) for c in clusters_ab)

    # Distinct users: {A,B}: u1 u2 u5 u6 = 4, {C,D}: u2 u3 u4 = 3, of 6 users.
    ci = labels.groupby(topic)["ci_users"].first()
    assert ci["A"] == pytest.approx(4 / 6) and ci["C"] == pytest.approx(3 / 6)
    assert (labels["ci_score"] == labels["ci_users"]).all()

    # Size-adjusted: N=60; {A,B} has 20 photos, {C,D} 40. Favourites per user: 2,2,2,1,1,3.
    k = np.array([2, 2, 2, 1, 1, 3])
    expected_ab = np.sum(1 - (1 - 20 / 60) ** k)
    expected_cd = np.sum(1 - (1 - 40 / 60) ** k)
    adj = labels.groupby(topic)["ci_size_adjusted"].first()
    assert adj["A"] == pytest.approx((4 - expected_ab) / (6 - expected_ab))
    assert adj["C"] == pytest.approx((3 - expected_cd) / (6 - expected_cd))

    parts = pd.read_parquet(partitions_path(root)).set_index("partition")
    assert parts.loc[part["A"], "distinct_users"] == 4 and parts.loc[part["C"], "distinct_users"] == 3
    assert parts.loc[part["A"], "n_photos"] == 20 and parts.loc[part["C"], "n_photos"] == 40
    assert parts.loc[part["A"], "expected_users"] == pytest.approx(expected_ab)
    assert sorted(parts.loc[part["A"], "clusters"]) == clusters_ab
    assert {"x", "y", "trend_group", "ci_score"} <= set(parts.columns)
    assert labels["ci_heldout"].isna().all()


def test_size_adjusted_is_selectable_and_drives_groups(tmp_path):
    root = make_collection(tmp_path)
    labels = label_collection(
        root, method="paper", user_test_fraction=0.0, clusters=4, merge_ratio=0.5, test_fraction=0.0, commonality="size_adjusted", progress=False
    )
    assert (labels["ci_score"] == labels["ci_size_adjusted"]).all()
    # The big {C,D} partition's 3 users are about what chance gives it: its adjusted CI is below {A,B}'s.
    topic = labels["photo_id"].str[0]
    by_topic = labels.groupby(topic)["ci_score"].first()
    assert by_topic["C"] < by_topic["A"]
    assert label_settings(root)["commonality"] == "size_adjusted"


def test_held_out_photos_take_nearest_partition_and_test_favourites(tmp_path):
    favourites = {**FAVOURITES, "u7": [("C", i) for i in range(2, 12)], "u8": [("A", i) for i in range(3, 9)]}
    root = make_collection(tmp_path, favourites=favourites)
    labels = label_collection(root, method="paper", user_test_fraction=0.0, clusters=4, merge_ratio=0.5, test_fraction=0.25, seed=3, progress=False)
    assert (labels["set"] == "test").sum() == 15
    topic = labels["photo_id"].str[0]
    # Test photos share their topic's (train) cluster, partition and CI.
    for col in ("cluster_label", "partition", "ci_score"):
        assert labels.groupby(topic)[col].nunique().eq(1).all(), col
    fav = pd.DataFrame(
        [(u, f"{t}{i:02d}") for u, ps in favourites.items() for t, i in ps], columns=["user_id", "photo_id"]
    )
    train_ci = reference_ci(labels, fav, "train")
    test_ci = reference_ci(labels, fav, "test")
    for row in labels.itertuples():
        assert row.ci_users == pytest.approx(train_ci[row.partition])
        if row.set == "test":
            assert row.ci_heldout == pytest.approx(test_ci[row.partition])
        else:
            assert np.isnan(row.ci_heldout)
    assert labels.loc[labels["set"] == "test", "ci_heldout"].notna().all()


def test_partition_commonality_numbers():
    # 5 photos in 3 partitions (one empty); users 0,1,2 with 3, 1, 1 favourites.
    photo_part = np.array([0, 0, 1, 1, 1])
    c = partition_commonality(photo_part, 3, np.array([0, 0, 0, 1, 2]), np.array([0, 1, 2, 2, 3]))
    assert c.distinct_users.tolist() == [1, 3, 0]
    assert c.n_users == 3 and c.n_photos.tolist() == [2, 3, 0]
    expected0 = (1 - (3 / 5) ** 3) + 2 * (1 - 3 / 5)
    assert c.expected_users[0] == pytest.approx(expected0)
    assert c.expected_users[2] == pytest.approx(0.0)
    np.testing.assert_allclose(c.ci_users, [1 / 3, 1.0, 0.0])
    assert c.ci_size_adjusted[0] == pytest.approx((1 - expected0) / (3 - expected0))
    assert c.ci_size_adjusted[2] == 0.0
    empty = partition_commonality(photo_part, 3, np.array([], dtype=int), np.array([], dtype=int))
    assert empty.n_users == 0 and np.isnan(empty.ci_users).all()


def test_trend_groups_cut_points():
    ci = np.array([0.1, 0.2, 0.3, 0.5, 0.7, np.nan])
    assert assign_trend_groups(ci, (0.2, 0.5)).tolist() == [2, 1, 1, 0, 0, 2]
    lo, hi = quantile_cuts(np.arange(7.0))
    assert (lo, hi) == (2.0, 4.0)
    with pytest.raises(InterestError, match="lower <= upper"):
        assign_trend_groups(ci, (0.5, 0.2))


def test_group_cuts_given_and_recorded(tmp_path):
    root = make_collection(tmp_path)
    labels = label_collection(
        root, method="paper", user_test_fraction=0.0, clusters=4, merge_ratio=0.5, test_fraction=0.0, group_cuts=(0.55, 0.6), progress=False
    )
    topic = labels["photo_id"].str[0]
    # {A,B} CI 4/6 >= 0.6: common; {C,D} 3/6 < 0.55: subjective.
    assert labels.groupby(topic)["trend_group"].first().to_dict() == {"A": 0, "B": 0, "C": 2, "D": 2}
    settings = label_settings(root)
    assert settings["group_cuts"] == [0.55, 0.6] and settings["group_cuts_source"] == "given"
    assert read_manifest(root)["tables"]["labels"]["group_cuts"] == [0.55, 0.6]
    assert read_labels(root).attrs["interest.labels"]["clusters_used"] == 4


def test_default_cuts_are_train_terciles(small_world_copy):
    labels = label_collection(small_world_copy, method="paper", user_test_fraction=0.0, clusters=40, progress=False)
    lo, hi = label_settings(small_world_copy)["group_cuts"]
    train = labels[labels["set"] == "train"]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(train["ci_score"], [1 / 3, 2 / 3])))
    share = train["trend_group"].value_counts(normalize=True)
    assert set(share.index) == {0, 1, 2} and share.min() > 0.15


def test_deterministic_for_a_seed(tmp_path):
    favourites = {**FAVOURITES, "u7": [("C", i) for i in range(2, 12)]}
    a = make_collection(tmp_path / "a", favourites=favourites)
    b = make_collection(tmp_path / "b", favourites=favourites)
    la = label_collection(a, method="paper", user_test_fraction=0.0, clusters=4, seed=5, progress=False)
    lb = label_collection(b, method="paper", user_test_fraction=0.0, clusters=4, seed=5, progress=False)
    pd.testing.assert_frame_equal(la, lb)
    pd.testing.assert_frame_equal(pd.read_parquet(a / "labels.parquet"), pd.read_parquet(b / "labels.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(partitions_path(a)), pd.read_parquet(partitions_path(b)))
    other = label_collection(b, method="paper", user_test_fraction=0.0, clusters=4, seed=6, progress=False)
    assert not other["set"].equals(la["set"])


def test_minibatch_path_on_large_collections(tmp_path, monkeypatch):
    # Above FULL_KMEANS_MAX mini-batch k-means runs; train photos must still sit in their nearest cluster.
    monkeypatch.setattr(ci_module, "FULL_KMEANS_MAX", 10)
    root = make_collection(tmp_path)
    labels = label_collection(root, method="paper", user_test_fraction=0.0, clusters=4, merge_ratio=0.5, test_fraction=0.2, progress=False)
    topic = labels["photo_id"].str[0]
    assert labels.groupby(topic)["cluster_label"].nunique().eq(1).all()
    assert labels.groupby(topic)["cluster_label"].first().nunique() == 4


def test_clusters_reduced_with_warning(tmp_path):
    root = make_collection(tmp_path)
    with pytest.warns(UserWarning, match="using 6"):
        labels = label_collection(root, method="paper", user_test_fraction=0.0, clusters=50, test_fraction=0.0, progress=False)
    assert labels["cluster_label"].nunique() == 6
    assert label_settings(root)["clusters_used"] == 6


def test_skips_photos_not_ok(tmp_path):
    # A photo marked missing has no embedding and a favourite: skipped, not an error.
    extra = pd.DataFrame({"photo_id": ["X00", "Y00"], "status": ["missing", None]})
    root = make_collection(tmp_path, extra_photos=extra, favourites={**FAVOURITES, "u9": [("X", 0)]})
    with pytest.raises(InterestError, match=r"photo_id Y00 has no embedding; run `interest embed"):
        label_collection(root, method="paper", user_test_fraction=0.0, clusters=4, progress=False)
    write_table(root, "photos", pd.read_parquet(root / "photos.parquet").query("photo_id != 'Y00'"))
    labels = label_collection(root, method="paper", user_test_fraction=0.0, clusters=4, merge_ratio=0.5, test_fraction=0.0, progress=False)
    assert "X00" not in set(labels["photo_id"]) and len(labels) == 60
    # u9's only favourite was skipped: 6 users remain.
    assert label_settings(root)["users_train"] == 6


def test_bad_inputs(tmp_path):
    root = make_collection(tmp_path / "c")
    (root / "favorites.parquet").unlink()
    with pytest.raises(InterestError, match="favorites.parquet: missing table"):
        label_collection(root, method="paper", user_test_fraction=0.0, progress=False)

    root = make_collection(tmp_path / "d", favourites={**FAVOURITES, "u9": [("Z", 9)]})
    with pytest.raises(InterestError, match="photo_id Z09 is favourited but not in photos.parquet"):
        label_collection(root, method="paper", user_test_fraction=0.0, progress=False)

    root = make_collection(tmp_path / "e", favourites={})
    with pytest.raises(InterestError, match="favorites.parquet: no favourites"):
        label_collection(root, method="paper", user_test_fraction=0.0, progress=False)

    root = tmp_path / "f"
    write_table(root, "photos", pd.DataFrame({"photo_id": pd.Series([], dtype=str)}))
    write_table(root, "favorites", pd.DataFrame({"user_id": ["u1"], "photo_id": ["A00"]}))
    write_embeddings(root, BACKBONE, ["A00"], np.ones((1, 8)))
    with pytest.raises(InterestError, match="photos.parquet: no photos"):
        label_collection(root, method="paper", user_test_fraction=0.0, progress=False)

    root = make_collection(tmp_path / "g", embed=False)
    with pytest.raises(InterestError, match="no embeddings in this collection; run `interest embed"):
        label_collection(root, method="paper", user_test_fraction=0.0, progress=False)

    root = make_collection(tmp_path / "h")
    for kwargs, message in (
        ({"commonality": "popular"}, "choose one of users, size_adjusted"),
        ({"clusters": 1}, "clusters=1"),
        ({"merge_ratio": 0.0}, "merge_ratio=0.0"),
        ({"test_fraction": 1.0}, "test_fraction=1.0"),
        ({"group_cuts": (0.3,)}, "group cuts"),
    ):
        with pytest.raises(InterestError, match=message):
            label_collection(root, method="paper", user_test_fraction=0.0, progress=False, **kwargs)
    # Too few photos for even two clusters.
    with pytest.raises(InterestError, match="only 6 definition photos"):
        label_collection(root, method="paper", user_test_fraction=0.0, test_fraction=0.9, progress=False)
    assert not (root / "labels.parquet").exists()


def test_small_world_against_ground_truth(small_world_copy):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1200 definition photos are enough for 100 clusters: no warning
        labels = label_collection(small_world_copy, method="paper", user_test_fraction=0.0, clusters=100, seed=0, progress=False)
    settings = json.loads(json.dumps(label_settings(small_world_copy)))
    assert settings["n_test"] == 300 and settings["partitions"] == 60
    truth = pd.read_parquet(small_world_copy / "ground_truth" / "photos.parquet")
    df = labels.merge(truth, on="photo_id")
    means = df[df["set"] == "train"].groupby("partition")["common_appeal"].mean()
    appeal = df["partition"].map(means)
    # Partitions of broadly appealing photos reach more users, by both measures.
    assert df["ci_users"].corr(appeal, method="spearman") > 0.4
    assert df["ci_size_adjusted"].corr(appeal, method="spearman") > 0.4
    test = df[df["set"] == "test"]
    assert test["ci_heldout"].corr(test["ci_score"], method="spearman") > 0.4


@pytest.fixture
def small_world_copy(small_world, tmp_path):
    """A private copy of the shared small world, so labelling it does not race other tests."""
    return shutil.copytree(small_world, tmp_path / "world")


# ---------------------------------------------------------------- the default (image-level) label on the world family


@pytest.fixture(scope="module")
def family_pair(tmp_path_factory):
    """Two small members of the world family: today's world and the confounded crawl."""
    from interest.synthetic.family import make_family_world

    roots = []
    for name in ("flat-s0", "confounded-s1"):
        root = tmp_path_factory.mktemp(name)
        make_family_world(name, root, n_users=200, n_photos=1500, heldout_photos=0)
        roots.append(root)
    return roots


def _truth_spearman(root, labels):
    truth = pd.read_parquet(root / "ground_truth" / "photos.parquet").set_index("photo_id")["true_commonality"]
    return spearmanr(labels["ci_score"], truth.reindex(labels["photo_id"]).to_numpy())[0]


def test_default_label_beats_the_paper_recipe_against_truth(family_pair):
    import warnings

    for root in family_pair:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            paper = _truth_spearman(root, label_collection(root, method="paper", progress=False))
            default = _truth_spearman(root, label_collection(root, progress=False))
        # measured: flat-s0 paper 0.55, image 0.88; confounded-s1 paper 0.74, image 0.87
        assert default > paper + 0.08 and default > 0.8, (root.name, default, paper)


def test_held_out_users_are_recorded_and_never_counted(family_pair):
    from interest.stages.labels import read_user_split

    root = family_pair[0]
    labels = label_collection(root, clusters=50, seed=2, user_test_fraction=0.25, progress=False)
    split = read_user_split(root)
    favorites = pd.read_parquet(root / "favorites.parquet")
    assert set(split["user_id"]) == set(favorites["user_id"])
    assert split["set"].eq("test").mean() == pytest.approx(0.25, abs=0.01)
    train_users = set(split.loc[split["set"] == "train", "user_id"])
    counted = favorites[favorites["user_id"].isin(train_users)].groupby("photo_id")["user_id"].nunique()
    got = labels.set_index("photo_id")["distinct_users"]
    assert (got == counted.reindex(got.index).fillna(0).astype(int)).all()
    assert label_settings(root)["method"] == "image" and label_settings(root)["n_users_test"] == 50
    # every photo has a positive CI; groups follow the photo's own CI and the cuts
    lo, hi = label_settings(root)["group_cuts"]
    expected = np.where(labels["ci_score"] >= hi, 0, np.where(labels["ci_score"] >= lo, 1, 2))
    assert (labels["ci_score"] > 0).all() and (labels["trend_group"].to_numpy() == expected).all()


def test_unknown_method_is_a_one_line_error(family_pair):
    with pytest.raises(InterestError, match="method='clusters'"):
        label_collection(family_pair[0], method="clusters", progress=False)
