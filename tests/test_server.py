"""The local Flickr-compatible server: Flickr's JSON, pagination, errors, images, faults."""

from __future__ import annotations

import hashlib
import math

import flickrapi
import pandas as pd
import pytest
import requests
from flickrapi.exceptions import FlickrError

from interest.core.collection import read_table
from interest.synthetic.server import FaultConfig, serve_world


@pytest.fixture(scope="module")
def world(rendered_world):
    return rendered_world


def _flickr(srv, key="test-key"):
    api = flickrapi.FlickrAPI(key, "", format="parsed-json", store_token=False)
    api.REST_URL = srv.rest_url
    return api


def test_methods_answer_like_flickr(world):
    users = read_table(world, "users")
    photos = read_table(world, "photos").set_index("photo_id")
    favorites = read_table(world, "favorites")
    complete = users.dropna(subset=["timezone_label", "timezone_id", "country"])["user_id"]
    uid = favorites[favorites["user_id"].isin(complete)]["user_id"].value_counts().index[0]
    n = int((favorites["user_id"] == uid).sum())
    with serve_world(world) as srv:
        api = _flickr(srv)
        person = api.people.getInfo(user_id=uid)["person"]
        row = users.set_index("user_id").loc[uid]
        assert person["nsid"] == uid and person["ispro"] in (0, 1)
        assert person["timezone"]["label"] == row["timezone_label"]
        assert person["timezone"]["timezone_id"] == row["timezone_id"]
        assert api.profile.getProfile(user_id=uid)["profile"]["country"] == row["country"]

        per_page = 5
        seen = []
        for page in range(1, math.ceil(n / per_page) + 2):
            rsp = api.favorites.getPublicList(user_id=uid, per_page=per_page, page=page, extras="views,date_upload,url_z")
            meta = rsp["photos"]
            assert (meta["page"], meta["pages"], meta["perpage"], meta["total"]) == (page, math.ceil(n / per_page), per_page, n)
            seen += meta["photo"]
        assert len(seen) == n and len({p["id"] for p in seen}) == n  # the page past the end is empty
        dates = [int(p["date_faved"]) for p in seen]
        assert dates == sorted(dates, reverse=True)  # newest first, as Flickr lists them
        first = seen[0]
        assert int(first["views"]) == photos.loc[first["id"], "views"]
        assert first["url_z"] == photos.loc[first["id"], "url"]

        # an owner is a Flickr user too: PRO status and occupation
        pid = first["id"]
        owner = photos.loc[pid, "owner_id"]
        assert api.people.getInfo(user_id=owner)["person"]["ispro"] == int(photos.loc[pid, "owner_ispro"])
        occupation = api.profile.getProfile(user_id=owner)["profile"]["occupation"]
        expected = photos.loc[pid, "owner_occupation"]
        assert occupation == ("" if pd.isna(expected) else expected)
        assert int(api.photos.getFavorites(photo_id=pid, per_page=1)["photo"]["total"]) == photos.loc[pid, "faves"]
        info = api.photos.getInfo(photo_id=pid)["photo"]
        assert int(info["comments"]["_content"]) == photos.loc[pid, "comments"]

        # the per_page cap is Flickr's 500
        assert api.favorites.getPublicList(user_id=uid, per_page=5000)["photos"]["perpage"] == 500
        assert srv.stats["flickr.favorites.getPublicList"] == math.ceil(n / per_page) + 2


def test_errors_are_stat_fail_with_flickr_codes(world):
    with serve_world(world) as srv:
        codes = {}
        for name, call in {
            1: lambda api: api.people.getInfo(user_id="0@N00"),
            112: lambda api: api.photos.doesNotExist(),
        }.items():
            with pytest.raises(FlickrError) as err:
                call(_flickr(srv))
            codes[name] = err.value.code
        with pytest.raises(FlickrError) as err:
            _flickr(srv, key="wrong").people.getInfo(user_id="0@N00")
        codes[100] = err.value.code
        assert codes == {1: 1, 112: 112, 100: 100}
        # raw HTTP: a failure is still HTTP 200 with a JSON body; the key may be a plain parameter
        rsp = requests.get(srv.rest_url, params={"method": "flickr.photos.getInfo", "photo_id": "1", "api_key": "test-key", "format": "json", "nojsoncallback": 1})
        assert rsp.status_code == 200 and rsp.json() == {"stat": "fail", "code": 1, "message": "Photo not found"}


def test_images_are_served_at_static_paths(world):
    photos = read_table(world, "photos")
    row = photos.iloc[0]
    with serve_world(world) as srv:
        url = row["url"].replace("https://live.staticflickr.com", srv.image_host)
        body = requests.get(url).content
        assert hashlib.sha256(body).hexdigest() == hashlib.sha256((world / row["path"]).read_bytes()).hexdigest()
        wrong = url.replace(row["secret"], "0000000000")
        assert requests.get(wrong).status_code == 404
        assert srv.stats["image"] == 2


def test_faults_follow_the_configured_rates(world):
    faults = FaultConfig(http_429=0.2, unavailable=0.2, malformed=0.2, retry_after=7, seed=3)
    with serve_world(world, faults=faults) as srv:
        outcomes = []
        for _ in range(300):
            rsp = requests.post(srv.rest_url, data={"method": "flickr.people.getInfo", "user_id": "0@N00", "api_key": "test-key", "format": "json"})
            if rsp.status_code == 429:
                assert rsp.headers["Retry-After"] == "7"
                outcomes.append("429")
                continue
            try:
                outcomes.append(str(rsp.json()["code"]))
            except ValueError:
                outcomes.append("malformed")
        share = {k: outcomes.count(k) / len(outcomes) for k in ("429", "105", "malformed", "1")}
        assert all(abs(share[k] - 0.2) < 0.08 for k in ("429", "105", "malformed"))
        assert abs(share["1"] - 0.4) < 0.1
        assert srv.stats["fault:http_429"] == outcomes.count("429")
    # seeded: the same faults in the same order
    with serve_world(world, faults=FaultConfig(http_429=0.2, unavailable=0.2, malformed=0.2, retry_after=7, seed=3)) as srv:
        again = []
        for _ in range(30):
            rsp = requests.post(srv.rest_url, data={"method": "flickr.people.getInfo", "user_id": "0@N00", "api_key": "test-key", "format": "json"})
            again.append("429" if rsp.status_code == 429 else ("malformed" if not rsp.text.endswith("}") else str(rsp.json()["code"])))
        assert again == outcomes[:30]


def test_truncated_images_keep_a_consistent_length(world):
    row = read_table(world, "photos").iloc[0]
    full = (world / row["path"]).read_bytes()
    with serve_world(world, faults=FaultConfig(truncated=1.0)) as srv:
        rsp = requests.get(row["url"].replace("https://live.staticflickr.com", srv.image_host))
        assert rsp.status_code == 200 and len(rsp.content) == len(full) // 2 == int(rsp.headers["Content-Length"])


def test_per_photo_damage_is_the_same_on_every_request(world):
    photos = read_table(world, "photos").set_index("photo_id")
    damage = FaultConfig(truncated_photos=0.2, moved_photos=0.2, placeholder_photos=0.2, placeholder_redirect_photos=0.2,
                         outage_photos=0.2, seed=9)
    with serve_world(world, faults=damage) as srv:
        kinds = {kind: srv.damaged(kind) for kind in ("truncated_photos", "moved_photos", "placeholder_photos",
                                                      "placeholder_redirect_photos", "outage_photos")}
        assert sum(map(len, kinds.values())) == len(photos) and all(len(v) > 20 for v in kinds.values())
        placeholder = None
        for kind, ids in kinds.items():
            pid = sorted(ids)[0]
            url = photos.loc[pid, "url"].replace("https://live.staticflickr.com", srv.image_host)
            for _ in range(2):  # the same answer twice
                rsp = requests.get(url, allow_redirects=False)
                full = (world / photos.loc[pid, "path"]).read_bytes()
                if kind == "truncated_photos":
                    assert rsp.status_code == 200 and rsp.content == full[: len(full) // 2]
                elif kind == "moved_photos":
                    assert rsp.status_code == 301 and requests.get(rsp.headers["Location"]).content == full
                elif kind == "placeholder_photos":
                    assert rsp.status_code == 200 and hashlib.sha256(rsp.content).hexdigest() == srv.placeholder_sha256
                    placeholder = rsp.content
                elif kind == "placeholder_redirect_photos":
                    assert rsp.status_code == 302 and rsp.headers["Location"].endswith("/images/photo_unavailable_z.png")
                    assert requests.get(rsp.headers["Location"]).content == placeholder
                else:
                    assert rsp.status_code == 503
        srv.faults.outage_photos = 0.0  # healed: the outage's photos are served again, the others keep their damage
        pid = sorted(kinds["outage_photos"])[0]
        assert requests.get(photos.loc[pid, "url"].replace("https://live.staticflickr.com", srv.image_host)).status_code == 200
        assert srv.damaged("moved_photos") == kinds["moved_photos"]
