"""The synthetic Flickr world: contract, determinism, and the structure it promises."""

from __future__ import annotations

import hashlib
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from interest.core.collection import TABLES, list_backbones, read_embeddings, read_table
from interest.core.errors import InterestError
from interest.synthetic import generate_world
from interest.synthetic.world import CRAWL_DATE, user_activity

NSID = re.compile(r"^\d{8}@N0\d$")
TINY = dict(n_users=30, n_photos=120, n_topics=6, image_size=(48, 36), embed_dim=16, progress=False)


def _tables(root):
    return {name: read_table(root, name) for name in ("users", "photos", "favorites")}


def _truth(root, name):
    return pd.read_parquet(root / "ground_truth" / f"{name}.parquet")


# ---------------------------------------------------------------- determinism and contract


def test_same_seed_same_world_other_seed_other_world(tmp_path):
    a = generate_world(tmp_path / "a", seed=7, **TINY)
    generate_world(tmp_path / "b", seed=7, **TINY)
    generate_world(tmp_path / "c", seed=8, **TINY)
    ta, tb, tc = (_tables(tmp_path / d) for d in "abc")
    for name in ta:
        pd.testing.assert_frame_equal(ta[name], tb[name])
    for name in ("photos", "users", "topics"):
        pd.testing.assert_frame_equal(_truth(tmp_path / "a", name), _truth(tmp_path / "b", name))
    ids_a, emb_a = read_embeddings(tmp_path / "a")[1:]
    ids_b, emb_b = read_embeddings(tmp_path / "b")[1:]
    assert (ids_a == ids_b).all() and np.array_equal(emb_a, emb_b)
    for path in ta["photos"]["path"]:
        assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes()
    assert not ta["photos"]["photo_id"].equals(tc["photos"]["photo_id"])
    assert a["n_photos"] == 120 and a["n_favorites"] == len(ta["favorites"])
    assert set(a["seconds"]) >= {"world", "render", "tables", "embeddings", "total"}


def test_contract_columns_types_and_flickr_shapes(small_world):
    t = _tables(small_world)
    for name, df in t.items():
        for col, dtype in TABLES[name].columns.items():
            assert str(df[col].dtype) == dtype, (name, col)
    users, photos, favs = t["users"], t["photos"], t["favorites"]
    assert len(users) == 120 and len(photos) == 1500
    assert users["user_id"].str.match(NSID.pattern).all()
    assert photos["owner_id"].str.match(NSID.pattern).all()
    assert not set(users["user_id"]) & set(photos["owner_id"])  # no owner is also a user
    assert photos["photo_id"].str.fullmatch(r"\d{10,11}").all()
    assert photos["secret"].str.fullmatch(r"[0-9a-f]{10}").all()
    assert photos["server"].str.fullmatch(r"\d{4}").all()
    expected_url = (
        "https://live.staticflickr.com/" + photos["server"] + "/" + photos["photo_id"] + "_" + photos["secret"] + "_z.jpg"
    )
    assert (photos["url"] == expected_url).all()
    assert (photos["status"] == "ok").all()
    assert photos["path"].isna().all() and photos["sha256"].isna().all()  # not rendered
    start, end = pd.Timestamp("2012-01-01", tz="UTC"), pd.Timestamp("2022-01-01", tz="UTC")
    assert photos["upload_date"].between(start, end).all()
    assert (photos["date_taken"] <= photos["upload_date"].dt.tz_convert(None)).all()
    assert photos["owner_name"].notna().all() and photos["title"].notna().all()
    assert set(users["timezone_id"].dropna()) >= {"PST8PDT"}
    pst = users[users["timezone_id"] == "PST8PDT"]
    assert (pst["timezone_label"] == "Pacific Time (US & Canada); Tijuana").all()
    assert users["gender"].isna().any() and users["country"].isna().any()  # profiles are incomplete
    assert {"username", "realname"} <= set(users.columns)
    # Occupation and PRO status follow each other as on Flickr: photographers are more often PRO.
    photographer = photos["owner_occupation"].str.contains("photographer", case=False).fillna(False)
    assert photos.loc[photographer, "owner_ispro"].mean() > photos.loc[~photographer, "owner_ispro"].mean() + 0.2
    assert favs["photo_id"].isin(photos["photo_id"]).all() and favs["user_id"].isin(users["user_id"]).all()


def test_every_photo_is_a_favourite_with_consistent_dates_and_counts(small_world):
    t = _tables(small_world)
    photos, favs = t["photos"], t["favorites"]
    assert set(favs["photo_id"]) == set(photos["photo_id"])
    assert not favs.duplicated(["user_id", "photo_id"]).any()
    assert 1.3 <= len(favs) / len(photos) <= 2.0
    joined = favs.merge(photos[["photo_id", "upload_date", "faves"]], on="photo_id")
    assert (joined["fave_date"] > joined["upload_date"]).all()
    assert (joined["fave_date"] <= pd.Timestamp(CRAWL_DATE, tz="UTC")).all()
    # Flickr's favourite count includes the favourites in this collection.
    in_collection = favs.groupby("photo_id").size()
    assert (photos.set_index("photo_id")["faves"].loc[in_collection.index] >= in_collection).all()


def test_activity_is_heavy_tailed(small_world):
    per_user = read_table(small_world, "favorites").groupby("user_id").size()
    assert 0.1 <= (per_user <= 10).mean() <= 0.35
    assert per_user.max() >= 5 * per_user.median()
    # At paper scale: most users a few hundred, a few thousands, a fifth a handful.
    # (Planned draws; giving every unfavourited photo a favourite adds about 40% more.)
    paper = user_activity(2500, 500_000, np.random.default_rng(0))
    assert 100 <= np.median(paper) <= 400
    assert (paper >= 1000).sum() >= 20 and paper.max() >= 2500
    assert 0.15 <= (paper <= 10).mean() <= 0.25
    assert 1.0 <= paper.sum() / 500_000 <= 1.3


# ---------------------------------------------------------------- the structure the pipeline should find


def test_common_topics_reach_more_distinct_users_than_niche_ones(small_world):
    truth = _truth(small_world, "photos")[["photo_id", "topic"]]
    favs = read_table(small_world, "favorites").merge(truth, on="photo_id")
    topics = _truth(small_world, "topics").set_index("topic")
    distinct = favs.groupby("topic")["user_id"].nunique().reindex(topics.index, fill_value=0)
    common = topics["broad_appeal"] >= 1.0
    assert 2 <= common.sum() <= 6 and topics.loc[common, "name"].iloc[0] == "landscape"
    assert distinct[common].min() > distinct[~common].max()
    assert distinct[common].mean() > 2.5 * distinct[~common].mean()
    assert spearmanr(topics["broad_appeal"], distinct)[0] > 0.4


def test_metadata_follows_appeal_but_is_confounded_by_owner_popularity(small_world):
    photos = read_table(small_world, "photos").merge(_truth(small_world, "photos"), on="photo_id")
    appeal, popularity = photos["common_appeal"], photos["owner_popularity"]
    for col in ("views", "faves", "comments"):
        assert spearmanr(photos[col], appeal)[0] > 0.2, col
    faves_per_view = photos["faves"] / photos["views"]
    assert spearmanr(faves_per_view, appeal)[0] > 0.2
    # Views say more about the owner's audience than about the photo...
    assert spearmanr(photos["views"], popularity)[0] > spearmanr(photos["views"], appeal)[0] + 0.2
    # ...so photos of the same appeal differ by orders of magnitude in views.
    decile = pd.qcut(appeal, 10, labels=False)
    spread = photos.groupby(decile)["views"].agg(lambda v: v.quantile(0.9) / v.quantile(0.1))
    assert spread.median() > 10
    # Photographers take better photos and are more often PRO.
    photographer = photos["owner_occupation"].str.contains("photographer", case=False).fillna(False)
    assert photos.loc[photographer, "quality"].mean() > photos.loc[~photographer, "quality"].mean() + 0.15


def test_active_users_have_a_personal_taste_a_head_can_learn(small_world):
    """Split-half: a head from a user's topic frequencies beats common-only ranking by > 0.05 AUC at 20+."""
    truth = _truth(small_world, "photos")
    favs = read_table(small_world, "favorites").merge(truth[["photo_id", "topic"]], on="photo_id")
    n_topics = truth["topic"].max() + 1
    rng = np.random.default_rng(0)
    favs["train"] = rng.random(len(favs)) < 0.5
    train = favs[favs["train"]]
    n_users = favs["user_id"].nunique()
    common = train.groupby("topic")["user_id"].nunique().reindex(range(n_topics), fill_value=0).to_numpy() / n_users
    share = np.bincount(truth["topic"], minlength=n_topics) / len(truth)
    photo_topic = truth["topic"].to_numpy()
    gaps = []
    for _, g in favs.groupby("user_id"):
        if len(g) < 20:
            continue
        tr, te = g[g["train"]], g[~g["train"]]
        negatives = np.flatnonzero(~truth["photo_id"].isin(g["photo_id"]).to_numpy())
        positives = np.flatnonzero(truth["photo_id"].isin(te["photo_id"]).to_numpy())
        idx = np.concatenate([positives, negatives])
        y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
        freq = (np.bincount(tr["topic"], minlength=n_topics) + 0.5) / (len(tr) + 0.5 * n_topics)
        lift = np.log(freq / share) * len(tr) / (len(tr) + 10)
        head = np.log(common + 1e-3) + lift
        gaps.append(roc_auc_score(y, head[photo_topic[idx]]) - roc_auc_score(y, common[photo_topic[idx]]))
    assert len(gaps) >= 20
    assert np.mean(gaps) > 0.05
    users = _truth(small_world, "users")
    few, many = users[users["activity"] <= 10], users[users["activity"] >= 20]
    assert few["taste_strength"].mean() < 0.5 * many["taste_strength"].mean()


# ---------------------------------------------------------------- pixels and embeddings


def test_rendered_images_carry_appeal_and_match_their_hashes(rendered_world):
    photos = read_table(rendered_world, "photos").merge(_truth(rendered_world, "photos"), on="photo_id")
    assert (photos["path"] == "images/" + photos["photo_id"] + ".jpg").all()
    saturation, contrast = [], []
    for path, digest in zip(photos["path"], photos["sha256"]):
        data = (rendered_world / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest
        img = Image.open(rendered_world / path)
        assert img.format == "JPEG" and img.size == (192, 144)
        saturation.append(np.asarray(img.convert("HSV"))[..., 1].mean())
        contrast.append(np.asarray(img.convert("L"), dtype=float).std())
    assert spearmanr(saturation, photos["common_appeal"])[0] > 0.6
    assert spearmanr(contrast, photos["common_appeal"])[0] > 0.4
    # No two photos look the same, even of one topic.
    assert len(set(photos["sha256"])) == len(photos)
    assert not list(rendered_world.glob("images/.*.tmp"))


def test_rendered_topics_differ_in_hue(rendered_world):
    """Photos of one topic share a dominant hue: hue histograms separate topics."""
    truth = _truth(rendered_world, "photos")
    hists = []
    for pid in truth["photo_id"]:
        hsv = np.asarray(Image.open(rendered_world / "images" / f"{pid}.jpg").convert("HSV"), dtype=float)
        h, _ = np.histogram(hsv[..., 0], bins=12, range=(0, 256), weights=hsv[..., 1])
        hists.append(h / h.sum())
    hists = np.array(hists)
    topic = truth["topic"].to_numpy()
    centroids = np.array([hists[topic == t].mean(axis=0) for t in range(topic.max() + 1)])
    nearest = np.argmin(((hists[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)
    assert (nearest == topic).mean() > 0.7


def test_embeddings_are_unit_norm_and_carry_topic_and_appeal(small_world):
    assert list_backbones(small_world) == ["synthetic/d64"]
    backbone, ids, emb = read_embeddings(small_world)
    assert emb.shape == (1500, 64) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    truth = _truth(small_world, "photos").set_index("photo_id").loc[ids]
    topic = truth["topic"].to_numpy()
    sim = emb @ emb.T
    same = topic[:, None] == topic[None, :]
    assert sim[same].mean() > sim[~same].mean() + 0.5
    # Appeal is linear in the embedding (held-out Spearman of a least-squares fit).
    x = np.c_[emb, np.ones(len(emb))]
    coef = np.linalg.lstsq(x[:1000], truth["common_appeal"].to_numpy()[:1000], rcond=None)[0]
    assert spearmanr(x[1000:] @ coef, truth["common_appeal"].to_numpy()[1000:])[0] > 0.8


def test_ground_truth_is_complete_and_not_needed_by_the_collection(small_world, tmp_path):
    gt = small_world / "ground_truth"
    assert {"photo_id", "topic", "topic_name", "common_appeal", "quality"} <= set(_truth(small_world, "photos").columns)
    assert {"user_id", "activity", "taste_strength", "top_topics"} <= set(_truth(small_world, "users").columns)
    topics = _truth(small_world, "topics")
    visual = {"hue1", "hue2", "orientation", "frequency", "pattern_kind"}
    assert {"topic", "name", "broad_appeal"} | visual <= set(topics.columns)
    assert topics["n_photos"].sum() == 1500 and (topics["n_photos"] > 0).all()
    world = pd.read_json(gt / "world.json", typ="series")
    assert world["parameters"]["seed"] == 0 and world["parameters"]["n_topics"] == 16
    users = _truth(small_world, "users")
    per_user = read_table(small_world, "favorites").groupby("user_id").size()
    assert (users.set_index("user_id")["activity"] == per_user.reindex(users["user_id"])).all()
    assert users["top_topics"].str.match(r"^[a-z -]+\d*:1\.00").all()
    # A copy without ground truth is still a whole collection.
    copy = tmp_path / "copy"
    shutil.copytree(small_world, copy, ignore=shutil.ignore_patterns("ground_truth"))
    assert {n: len(df) for n, df in _tables(copy).items()} == {n: len(df) for n, df in _tables(small_world).items()}
    assert read_embeddings(copy)[2].shape == (1500, 64)


# ---------------------------------------------------------------- bad arguments and reruns


@pytest.mark.parametrize(
    "kwargs, culprit",
    [
        (dict(n_photos=5, n_topics=8), "n_photos=5"),
        (dict(n_users=0), "n_users=0"),
        (dict(image_size=(0, 10)), "image_size"),
        (dict(embed_dim=1), "embed_dim=1"),
        (dict(seed=-1), "seed=-1"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, kwargs, culprit):
    with pytest.raises(InterestError, match=re.escape(culprit)) as info:
        generate_world(tmp_path / "w", **{**TINY, **kwargs})
    assert "\n" not in str(info.value)
    assert not (tmp_path / "w").exists()


def test_refuses_non_empty_directories_unless_overwriting_a_world(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InterestError, match="not empty"):
        generate_world(other, **TINY)
    with pytest.raises(InterestError, match="not a synthetic world"):
        generate_world(other, overwrite=True, **TINY)
    assert (other / "notes.txt").read_text() == "mine"

    world = tmp_path / "world"
    first = generate_world(world, seed=1, **{**TINY, "embed_dim": None})
    second = generate_world(world, seed=2, overwrite=True, **{**TINY, "embed_dim": None, "render": False})
    assert first["n_photos"] == second["n_photos"]
    assert not (world / "images").exists()  # the earlier world's files are gone
    assert pd.read_json(world / "ground_truth" / "world.json", typ="series")["parameters"]["seed"] == 2


# ---------------------------------------------------------------- the world family


@pytest.fixture(scope="module")
def confounded_world(tmp_path_factory):
    from interest.synthetic.family import make_family_world

    root = tmp_path_factory.mktemp("confounded")
    make_family_world("confounded-s0", root, n_users=200, n_photos=1500)
    return root


def test_family_has_structures_times_seeds_and_the_default_world():
    from interest.synthetic.family import FAMILY, STRUCTURES, WORLDS

    assert len(FAMILY) >= 6 and len(STRUCTURES) >= 3 and len({WORLDS[n].seed for n in FAMILY}) >= 2
    assert STRUCTURES["flat"].is_default()
    assert sum(WORLDS[n].structure == "flat" for n in FAMILY) >= 2


def test_crawl_keeps_only_favourited_photos_most_with_one_or_two_favourites(confounded_world):
    t = _tables(confounded_world)
    per_photo = t["favorites"].groupby("photo_id").size().reindex(t["photos"]["photo_id"]).fillna(0)
    assert (per_photo >= 1).all()
    assert (per_photo <= 2).mean() > 0.6
    # the pool was three times the target: the crawl keeps fewer photos than it
    assert 800 < len(t["photos"]) < 1500


def test_subtopics_of_one_topic_differ_widely_in_appeal(confounded_world):
    units = _truth(confounded_world, "units")
    spread = units.groupby("topic")["broad_appeal"].agg(lambda a: a.max() - a.min())
    assert (units.groupby("topic").size() == 4).all()
    assert spread.median() > 1.0  # a broad topic holds both common and niche content
    truth = _truth(confounded_world, "photos")
    assert truth.groupby("unit")["true_commonality"].mean().groupby(units["topic"]).agg(np.ptp).median() > 0


def test_community_members_share_niches(confounded_world):
    users = _truth(confounded_world, "users")
    members = users[users["community"] >= 0]
    assert 0.3 < len(members) / len(users) < 0.7
    taste = np.stack(members["taste"].to_numpy())
    loved = taste > 0.9
    same = members["community"].to_numpy()[:, None] == members["community"].to_numpy()[None, :]
    overlap = (loved.astype(int) @ loved.T.astype(int)) > 0
    off_diag = ~np.eye(len(members), dtype=bool)
    assert overlap[same & off_diag].mean() > 0.9 > 3 * overlap[~same].mean()


def test_favourites_follow_owner_popularity_beyond_appeal(confounded_world):
    t = _tables(confounded_world)
    truth = _truth(confounded_world, "photos").set_index("photo_id")
    count = t["favorites"].groupby("photo_id").size().reindex(truth.index).to_numpy(dtype=float)
    # residual of the count after the true commonality still follows the owner
    resid = pd.Series(count).rank().to_numpy() - pd.Series(truth["true_commonality"].to_numpy()).rank().to_numpy()
    assert spearmanr(resid, truth["owner_popularity"])[0] > 0.1


def test_true_commonality_matches_resampled_favourites():
    from interest.synthetic import world as W

    rng = np.random.default_rng(0)
    topics = W.make_topics(8, rng)
    owners = W.make_owners(W._nsids(50, rng), rng)
    photos = W.make_photos(800, topics, owners, rng)
    users = W.make_users(W._nsids(60, rng), 800, topics, rng)
    population = {
        "taste": np.stack(users["taste"].to_numpy()),
        "beta": W.BETA_MAX * users["taste_strength"].to_numpy(),
        "activity": users["planned_activity"].to_numpy().astype(float),
    }
    expected = W.true_commonality(photos, population, W.user_thresholds(photos, population, 0.0))
    counts = np.zeros(len(photos))
    for r in range(20):
        _, fav_photo, _ = W.sample_favorites(photos, users, np.random.default_rng(10 + r), progress=False, top_up=False)
        counts += np.bincount(fav_photo, minlength=len(photos)) / 20
    assert np.corrcoef(counts, expected)[0, 1] > 0.97
    assert abs(counts.sum() - expected.sum()) / counts.sum() < 0.05


def test_heldout_photos_have_embeddings_and_truth_and_never_enter_the_collection(confounded_world):
    from interest.synthetic.family import heldout_photos, oracle_scores

    photos, emb = heldout_photos(confounded_world)
    assert emb.shape == (1000, 64) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    collection = set(read_table(confounded_world, "photos")["photo_id"])
    assert not collection & set(photos["photo_id"])
    assert (photos["true_commonality"] > 0).all()
    assert spearmanr(photos["true_commonality"], photos["common_appeal"])[0] > 0.5
    users = _truth(confounded_world, "users")["user_id"].to_numpy()[:5]
    assert oracle_scores(confounded_world, users, photos).shape == (5, 1000)


def test_default_world_gets_truth_without_changing_its_draws(small_world, tmp_path):
    truth = _truth(small_world, "photos")
    assert (truth["unit"] == truth["topic"]).all() and (truth["true_commonality"] > 0).all()
    heldout = pd.read_parquet(small_world / "ground_truth" / "heldout" / "photos.parquet")
    assert len(heldout) == 1000
    # the same world without held-out photos is draw for draw the same collection
    generate_world(tmp_path / "w", n_users=120, n_photos=1500, n_topics=16, render=False, embed_dim=64, seed=0,
                   progress=False, heldout_photos=0)
    for name, table in _tables(tmp_path / "w").items():
        pd.testing.assert_frame_equal(table, _tables(small_world)[name])
    assert np.array_equal(read_embeddings(tmp_path / "w")[2], read_embeddings(small_world)[2])
