"""The collector against the local Flickr server: real HTTP, real Parquet, real images."""

from __future__ import annotations

import hashlib
import logging
import math

import pandas as pd
import pytest

from interest.stages.collect import CollectConfig, collect, format_plan, plan_crawl
from interest.stages.collect.config import make_client
from interest.core.collection import read_manifest, read_table
from interest.core.errors import InterestError
from interest.synthetic.server import FaultConfig, serve_world

KEY = "K3y-3f9a1c77e2"
SECRET = "S3cr3t-b41d09"


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
    monkeypatch.setenv("FLICKR_API_KEY", KEY)
    monkeypatch.setenv("FLICKR_API_SECRET", SECRET)


@pytest.fixture(scope="module")
def world(rendered_world):
    return rendered_world


@pytest.fixture(scope="module")
def seeds(world):
    return sorted(read_table(world, "users")["user_id"])


def crawl(world, out, *, faults=None, resume=False, retry_failed=False, **settings):
    """One crawl of ``world`` into ``out`` through a fresh server; (summary, server stats)."""
    with serve_world(world, faults=faults, api_key=KEY) as srv:
        settings = {"rate": 0, "backoff": 0.001, "timeout": 2.0, **settings}
        config = CollectConfig(rest_url=srv.rest_url, image_host=srv.image_host, **settings)
        summary = collect(out, config, progress=False, resume=resume, retry_failed=retry_failed)
        return summary, dict(srv.stats)


def tables(root):
    return {name: read_table(root, name) for name in ("users", "photos", "favorites")}


def assert_same_tables(a, b):
    ta, tb = tables(a), tables(b)
    for name in ta:
        pd.testing.assert_frame_equal(ta[name], tb[name], check_like=False, obj=name)


@pytest.fixture(scope="module")
def clean(world, seeds, tmp_path_factory):
    """A fault-free crawl of every user of the world, with per-photo enrichment."""
    out = tmp_path_factory.mktemp("clean") / "out"
    mp = pytest.MonkeyPatch()
    mp.setenv("FLICKR_API_KEY", KEY)
    summary, stats = crawl(world, out, users=seeds, enrich="photos")
    mp.undo()
    return out, summary, stats


def test_crawl_reproduces_the_world(world, clean):
    out, summary, stats = clean
    got, want = tables(out), tables(world)
    # every favourite, with its date to the second (Flickr's resolution)
    f = got["favorites"].merge(want["favorites"], on=["user_id", "photo_id"], how="outer", indicator=True)
    assert (f["_merge"] == "both").all()
    assert (f["fave_date_x"] == f["fave_date_y"].dt.floor("s")).all()
    # the photos' metadata, owner fields included
    p = got["photos"].merge(want["photos"], on="photo_id", suffixes=("", "_w")).set_index("photo_id")
    assert len(p) == want["favorites"]["photo_id"].nunique()
    for col in ("owner_id", "url", "views", "faves", "comments", "owner_ispro", "owner_occupation"):
        assert p[col].equals(p[f"{col}_w"].astype(p[col].dtype)), col
    assert (p["upload_date"] == p["upload_date_w"].dt.floor("s")).all()
    # images: verified, hashed, the very bytes of the world's files
    assert (p["status"] == "ok").all()
    for pid, row in p.head(20).iterrows():
        assert row["path"] == f"images/{pid}.jpg"
        assert row["sha256"] == hashlib.sha256((world / row["path_w"]).read_bytes()).hexdigest()
        assert (out / row["path"]).read_bytes() == (world / row["path_w"]).read_bytes()
    assert sorted(x.name for x in (out / "images").iterdir()) == sorted(f"{pid}.jpg" for pid in p.index)
    # users' profile fields
    u = got["users"].merge(want["users"], on="user_id", suffixes=("", "_w")).set_index("user_id")
    for col in ("gender", "timezone_label", "timezone_id", "country"):
        assert u[col].equals(u[f"{col}_w"]), col
    # call costs: one list call per user here (< 500 favourites each), 2 per owner, 2 per photo; each once
    owners = want["photos"].set_index("photo_id").loc[p.index, "owner_id"].nunique()
    assert stats["flickr.favorites.getPublicList"] == len(u)
    assert stats["flickr.people.getInfo"] == stats["flickr.profile.getProfile"] == len(u) + owners
    assert stats["flickr.photos.getInfo"] == stats["flickr.photos.getFavorites"] == len(p)
    assert stats["image"] == len(p)
    assert summary["failures"] == {} and summary["favorites"] == len(f) and summary["images"] == len(p)
    assert read_manifest(out)["collect"]["calls_total"] == sum(v for k, v in stats.items() if k.startswith("flickr."))


def test_faults_do_not_change_the_tables(world, seeds, clean, tmp_path):
    # every kind of fault, with tries enough that none is given up: a body cut short counts against
    # body_tries (3 by default), and on a loaded machine a deadline cut mid-body is one more such try
    faults = FaultConfig.uniform(0.15, seed=7, slow_seconds=0.01, timeout_seconds=3.0)
    summary, stats = crawl(world, tmp_path / "out", faults=faults, users=seeds, enrich="photos", retries=12, image_retries=12, body_tries=12, timeout=1.0)
    injected = {k: v for k, v in stats.items() if k.startswith("fault:")}
    assert set(injected) == {f"fault:{k}" for k in ("http_429", "http_500", "unavailable", "slow", "timeout", "malformed", "truncated")}
    assert sum(injected.values()) > 50
    assert summary["failures"] == {}
    assert sum(summary["retries"].values()) >= sum(injected.values()) - injected["fault:slow"]
    assert_same_tables(clean[0], tmp_path / "out")


def test_pages_caps_and_filters(world, seeds, tmp_path):
    summary, stats = crawl(
        world, tmp_path / "out", users=seeds, per_page=4, max_favorites_per_user=10, min_favorites=12, enrich="none", download=False
    )
    want = read_table(world, "favorites")
    want["ts"] = want["fave_date"].dt.floor("s")
    totals = want.groupby("user_id").size()
    # the newest 10 of each user with at least 12 favourites (ties broken by photo id, as the server lists them)
    newest = want.sort_values(["user_id", "ts", "photo_id"], ascending=[True, False, True]).groupby("user_id").head(10)
    newest = newest[newest["user_id"].map(totals) >= 12]
    got = read_table(tmp_path / "out", "favorites")
    assert set(zip(got["user_id"], got["photo_id"])) == set(zip(newest["user_id"], newest["photo_id"]))
    assert sorted(read_table(tmp_path / "out", "users")["user_id"]) == sorted(totals[totals >= 12].index)
    # every user's list is read (its total decides the filter), at most 3 pages of 4 for the cap of 10
    assert stats["flickr.favorites.getPublicList"] == sum(min(math.ceil(n / 4), 3) for n in totals)
    assert "flickr.people.getInfo" in stats and "flickr.photos.getInfo" not in stats
    photos = read_table(tmp_path / "out", "photos")
    assert (photos["status"] == "not_downloaded").all() and photos["path"].isna().all()
    assert not (tmp_path / "out" / "images").exists()


def test_snowball_adds_the_most_frequent_owners(world, seeds, tmp_path):
    start = seeds[:5]
    summary, _ = crawl(world, tmp_path / "out", users=start, snowball=1, max_users=9, enrich="none", download=False)
    fav = read_table(world, "favorites")
    photos = read_table(world, "photos").set_index("photo_id")
    owners = photos.loc[fav[fav["user_id"].isin(start)]["photo_id"], "owner_id"].value_counts()
    ranked = sorted(owners.items(), key=lambda kv: (-kv[1], kv[0]))
    users = read_table(tmp_path / "out", "users").set_index("user_id")
    assert sorted(users.index) == sorted(start + [o for o, _ in ranked[:4]])
    assert (users.loc[start, "depth"] == 0).all() and (users.drop(index=start)["depth"] == 1).all()
    assert summary["crawl_users"] == 9


@pytest.mark.parametrize("fault, reason", [("malformed", "bad_json"), ("unavailable", "unavailable"), ("http_500", "http_500")])
def test_persistent_api_faults_are_recorded_not_fatal(world, seeds, tmp_path, fault, reason):
    summary, stats = crawl(world, tmp_path / "out", faults=FaultConfig(**{fault: 1.0}), users=seeds[:3], retries=2)
    assert summary["users"] == summary["favorites"] == 0
    assert summary["failures"] == {"people.getInfo:" + reason: 3, "profile.getProfile:" + reason: 3, "favorites.getPublicList:" + reason: 3}
    assert stats["flickr.people.getInfo"] == 6  # two tries each, then given up
    assert len(read_table(tmp_path / "out", "users")) == 0
    # transient failures: --retry-failed against the healed server brings every call back
    again, _ = crawl(world, tmp_path / "out", users=seeds[:3], retries=2, resume=True, retry_failed=True)
    assert again["failures"] == {} and again["users"] == 3 and again["retry_failed"] == {"retried": 9, "came_back": 9}


def test_truncated_images_are_recorded_as_bad(world, seeds, tmp_path):
    summary, stats = crawl(world, tmp_path / "out", faults=FaultConfig(truncated=1.0), users=seeds[:3], body_tries=2, enrich="none")
    photos = read_table(tmp_path / "out", "photos")
    assert len(photos) > 0 and (photos["status"] == "bad_image").all() and photos["path"].isna().all()
    assert (photos["status_reason"] == "truncated").all()
    assert summary["failures"] == {"image:truncated": len(photos)}
    assert stats["image"] == 2 * len(photos)
    images = tmp_path / "out" / "images"
    assert not images.exists() or list(images.iterdir()) == []  # nothing half-written


def test_missing_users_are_recorded_and_skipped(world, seeds, tmp_path):
    summary, _ = crawl(world, tmp_path / "out", users=[seeds[0], "1@N00"], enrich="none", download=False)
    assert list(read_table(tmp_path / "out", "users")["user_id"]) == [seeds[0]]
    assert summary["failures"] == {"people.getInfo:not_found": 1, "profile.getProfile:not_found": 1, "favorites.getPublicList:not_found": 1}


def test_invalid_key_stops_at_once(world, seeds, tmp_path, monkeypatch):
    monkeypatch.setenv("FLICKR_API_KEY", "not-the-key-123")
    with serve_world(world, api_key=KEY) as srv:
        config = CollectConfig(rest_url=srv.rest_url, image_host=srv.image_host, rate=0, users=seeds, threads=4)
        with pytest.raises(InterestError, match="code 100") as err:
            collect(tmp_path / "out", config, progress=False)
        assert srv.api_calls() <= 2 * 4 + 1  # the calls already in flight, nothing after
    assert "not-the-key-123" not in str(err.value) and "\n" not in str(err.value)


def test_credentials_never_reach_outputs_or_logs(world, seeds, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    faults = FaultConfig.uniform(0.2, seed=2, timeout_seconds=1.0)
    summary, _ = crawl(world, tmp_path / "out", faults=faults, users=seeds[:8] + ["1@N00"], retries=2, timeout=0.3)
    assert summary["failures"]  # failures and their messages are recorded too
    out, err = capfd.readouterr()
    texts = [caplog.text, out, err]
    texts += [p.read_bytes().decode("latin-1") for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(texts) > 10 and any("favorites.getPublicList" in t for t in texts)
    for text in texts:
        assert KEY not in text and SECRET not in text


def test_resume_guards(world, seeds, tmp_path):
    crawl(world, tmp_path / "out", users=seeds[:2], enrich="none", download=False)
    with pytest.raises(InterestError, match="--resume"):
        crawl(world, tmp_path / "out", users=seeds[:2], enrich="none", download=False)
    with pytest.raises(InterestError, match="max_favorites_per_user"):
        crawl(world, tmp_path / "out", users=seeds[:2], enrich="none", download=False, max_favorites_per_user=3, resume=True)
    # resuming a finished crawl calls nothing and rewrites the same tables
    before = tables(tmp_path / "out")
    summary, stats = crawl(world, tmp_path / "out", users=seeds[:2], enrich="none", download=False, resume=True)
    assert not any(k.startswith("flickr.") for k in stats)
    for name, df in tables(tmp_path / "out").items():
        pd.testing.assert_frame_equal(df, before[name])


def test_bad_settings_name_the_key(tmp_path):
    with pytest.raises(InterestError, match="enrich"):
        collect(tmp_path, CollectConfig(users=["1@N00"], enrich="all"), progress=False)
    with pytest.raises(InterestError, match="--users"):
        collect(tmp_path, CollectConfig(), progress=False)


def test_missing_key_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("FLICKR_API_KEY")
    with pytest.raises(InterestError, match="FLICKR_API_KEY"):
        collect(tmp_path, CollectConfig(users=["1@N00"]), progress=False)


def test_dry_run_plans_without_per_photo_calls(world, seeds):
    fav = read_table(world, "favorites")
    n = fav.groupby("user_id").size()
    with serve_world(world, api_key=KEY) as srv:
        # the probe calls share the rate limit: a fast rate keeps the test short
        config = CollectConfig(rest_url=srv.rest_url, users=seeds[:10] + ["1@N00"], enrich="photos", rate=360_000)
        plan = plan_crawl(config, make_client(config, threads=1))
        assert dict(srv.stats) == {"flickr.favorites.getPublicList": 11}
    favs = int(n[seeds[:10]].sum())
    assert plan["favorites"] == favs and plan["seeds_not_found"] == ["1@N00"]
    assert plan["calls"] == {"users": 20, "lists": 10, "owners (at most)": 2 * favs, "photos (at most)": 2 * favs}
    assert plan["total_calls"] == 30 + 4 * favs
    assert plan["hours"] == round((30 + 4 * favs) / 360_000, 2)
    assert f"{30 + 4 * favs}" in format_plan(plan)
