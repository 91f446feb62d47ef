"""The FlickrUser CSV importer, on small files in each published schema."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from interest.stages.collect import import_flickruser
from interest.stages.collect.importer import photo_id_from_url
from interest.core.collection import REFERENCE_FILE, read_manifest, read_table
from interest.core.errors import InterestError
from interest.synthetic.server import serve_world

DEFINITION = """user_id,user_gender,user_country,user_timezone_label,user_timezone_id,favimg_url,favimg_num_views,favimg_num_favorites,favimg_num_comments,favimg_upload_date,favimg_owner_ispro,favimg_owner_occupation,VILA_hdr,VILA_main_feature,VILA_aesthetic_score,CLIP_emotion_awe,CLIP_emotion_main_category,cluster_label,partition,trend_group,ci_score
11@N00,female,Germany,"Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna",Europe/Berlin,https://live.staticflickr.com/65535/51234567890_abcdef1234_z.jpg,1200,40,3,2019-05-01 10:00:00,1,Photographer,0.8,hdr,0.61,0.3,positive,12,135.0.181,0,0.52
11@N00,female,Germany,"Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna",Europe/Berlin,https://farm5.staticflickr.com/4321/1234567_0a1b2c3d4e.jpg,55,2,0,2010-01-02,0,,0.1,duo tones,0.40,0.1,negative,3,7.2,2,0.03
22@N01,male,,,,https://live.staticflickr.com/65535/51234567890_abcdef1234_z.jpg,1200,40,3,2019-05-01 10:00:00,1,Photographer,0.8,hdr,0.61,0.3,positive,12,135.0.181,0,0.52
22@N01,male,,,,not-a-flickr-url,1,1,1,2010-01-02,0,,0.1,duo tones,0.40,0.1,negative,3,7.2,2,0.03
"""
ADDITIONAL = """user_id,user_gender,user_country,user_timezone_label,user_timezone_id,favimg_url,favimg_num_views,favimg_num_favorites,favimg_num_comments,favimg_upload_date,favimg_owner_ispro,favimg_owner_occupation,ci_r_score
22@N01,male,,,,https://live.staticflickr.com/7000/9876543210_ffee001122_b.jpg,9,1,0,1262304000,False,Student,0.11
"""
OLD = """user,img_id,img_url,views,favorites,comments,upload_date,set,ci_score,cluster_label,partition,group
33@N02,555,https://live.staticflickr.com/1/555_aa_z.jpg,10,1,0,2015-03-03,train,0.4,1,1.0,common
33@N02,777,https://live.staticflickr.com/1/777_bb_z.jpg,20,2,1,2016-03-03,test,,,,
44@N03,555,https://live.staticflickr.com/1/555_aa_z.jpg,10,1,0,2015-03-03,train,0.4,1,1.0,common
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_photo_id_from_flickr_urls():
    assert photo_id_from_url("https://live.staticflickr.com/65535/51234567890_abcdef1234_z.jpg") == "51234567890"
    assert photo_id_from_url("https://farm5.staticflickr.com/4321/1234567_0a1b2c3d4e.jpg") == "1234567"
    assert photo_id_from_url("https://live.staticflickr.com/1/2_3_o.png?x=1") == "2"
    assert photo_id_from_url("https://example.com/photo.jpg") is None and photo_id_from_url(None) is None


def test_current_schema(tmp_path):
    files = [_write(tmp_path, "FlickrUser_definition.csv", DEFINITION), _write(tmp_path, "FlickrUser_additional.csv", ADDITIONAL)]
    summary = import_flickruser(files, tmp_path / "out", progress=False)
    assert summary["rows_skipped"] == 1 and summary["sets"] == {"train": 2, "test": 1}
    users = read_table(tmp_path / "out", "users").set_index("user_id")
    assert list(users.index) == ["11@N00", "22@N01"]
    assert users.loc["11@N00", "timezone_id"] == "Europe/Berlin" and pd.isna(users.loc["22@N01", "country"])
    photos = read_table(tmp_path / "out", "photos").set_index("photo_id")
    assert list(photos.index) == ["1234567", "51234567890", "9876543210"]
    p = photos.loc["51234567890"]
    assert (p["views"], p["faves"], p["comments"], p["owner_ispro"], p["owner_occupation"]) == (1200, 40, 3, True, "Photographer")
    assert p["upload_date"] == pd.Timestamp("2019-05-01 10:00:00", tz="UTC")
    assert photos.loc["9876543210", "upload_date"] == pd.Timestamp("2010-01-01", tz="UTC")  # unix seconds
    assert photos.loc["9876543210", "owner_ispro"] == False  # noqa: E712 (a nullable boolean)
    assert pd.isna(photos.loc["1234567", "owner_occupation"]) and photos["owner_id"].isna().all()
    assert list(photos["set"]) == ["train", "train", "test"] and (photos["status"] == "not_downloaded").all()
    favorites = read_table(tmp_path / "out", "favorites")
    assert len(favorites) == 4 and favorites["fave_date"].isna().all()
    ref = pd.read_parquet(tmp_path / "out" / REFERENCE_FILE).set_index("photo_id")
    assert ref.loc["51234567890", "published_ci_score"] == pytest.approx(0.52)
    assert ref.loc["51234567890", "published_partition"] == "135.0.181"
    assert ref.loc["51234567890", "published_VILA_main_feature"] == "hdr"
    assert ref.loc["1234567", "published_CLIP_emotion_awe"] == pytest.approx(0.1)
    assert ref.loc["9876543210", "published_ci_r_score"] == pytest.approx(0.11) and ref.loc["9876543210", "set"] == "test"
    assert read_manifest(tmp_path / "out")["import"]["favorites"] == 4
    # which file each favourite came from
    source = favorites.set_index(["user_id", "photo_id"])["source"]
    assert source.to_dict() == {("11@N00", "1234567"): "definition", ("11@N00", "51234567890"): "definition",
                                ("22@N01", "51234567890"): "definition", ("22@N01", "9876543210"): "additional"}


def test_photo_in_both_files_is_a_definition_photo_in_any_order(tmp_path):
    """A photo favourited by one user in the definition file and by another in the additional file."""
    also = "33@N05,male,,,,https://live.staticflickr.com/65535/51234567890_abcdef1234_z.jpg,1200,40,3,2019-05-01 10:00:00,1,Photographer,0.47\n"
    both = "11@N00,female,,,,https://farm5.staticflickr.com/4321/1234567_0a1b2c3d4e.jpg,55,2,0,2010-01-02,0,,0.05\n"
    files = [_write(tmp_path, "FlickrUser_additional.csv", ADDITIONAL + also + both), _write(tmp_path, "FlickrUser_definition.csv", DEFINITION)]
    summary = import_flickruser(files, tmp_path / "out", progress=False)  # the additional file first
    assert summary["sets"] == {"train": 2, "test": 1} and summary["favorites"] == 5
    source = read_table(tmp_path / "out", "favorites").set_index(["user_id", "photo_id"])["source"]
    assert source[("33@N05", "51234567890")] == "additional" and source[("22@N01", "51234567890")] == "definition"
    assert source[("11@N00", "1234567")] == "definition"  # in both files: the definition's
    ref = pd.read_parquet(tmp_path / "out" / REFERENCE_FILE).set_index("photo_id")
    # the definition's published scores, and the additional file's prediction for the same photo
    assert ref.loc["51234567890", "set"] == "train" and ref.loc["51234567890", "published_trend_group"] == 0
    assert ref.loc["51234567890", "published_ci_score"] == pytest.approx(0.52)
    assert ref.loc["51234567890", "published_ci_r_score"] == pytest.approx(0.47)
    assert read_table(tmp_path / "out", "photos").set_index("photo_id").loc["51234567890", "set"] == "train"


def test_older_single_file(tmp_path):
    summary = import_flickruser([_write(tmp_path, "FlickrUser.csv", OLD)], tmp_path / "out", progress=False)
    assert summary == {**summary, "users": 2, "photos": 2, "favorites": 3, "rows_skipped": 0}
    photos = read_table(tmp_path / "out", "photos").set_index("photo_id")
    assert photos.loc["777", "set"] == "test" and photos.loc["555", "faves"] == 1
    ref = pd.read_parquet(tmp_path / "out" / REFERENCE_FILE).set_index("photo_id")
    assert ref.loc["555", "published_trend_group"] == "common" and pd.isna(ref.loc["777", "published_ci_score"])
    # its train rows are the definition set's favourites, its test rows the additional set's
    source = read_table(tmp_path / "out", "favorites").set_index(["user_id", "photo_id"])["source"]
    assert source.to_dict() == {("33@N02", "555"): "definition", ("33@N02", "777"): "additional", ("44@N03", "555"): "definition"}


def test_missing_column_names_file_and_column(tmp_path):
    bad = _write(tmp_path, "FlickrUser_definition.csv", DEFINITION.replace("favimg_url", "image"))
    with pytest.raises(InterestError, match=r"FlickrUser_definition\.csv: missing column 'favimg_url'"):
        import_flickruser([bad], tmp_path / "out", progress=False)
    with pytest.raises(InterestError, match="not found"):
        import_flickruser([tmp_path / "nope.csv"], tmp_path / "out", progress=False)


def test_download_uses_the_collector_downloader(rendered_world, tmp_path):
    photos = read_table(rendered_world, "photos").head(5)
    rows = "\n".join(f"9@N00,,,,,{u},1,1,1,2020-01-01,0," for u in photos["url"])
    head = "user_id,user_gender,user_country,user_timezone_label,user_timezone_id,favimg_url,favimg_num_views,favimg_num_favorites,favimg_num_comments,favimg_upload_date,favimg_owner_ispro,favimg_owner_occupation\n"
    csv = _write(tmp_path, "FlickrUser_additional.csv", head + rows + "\n")
    with serve_world(rendered_world) as srv:
        summary = import_flickruser([csv], tmp_path / "out", download=True, image_host=srv.image_host, threads=2, progress=False)
        assert srv.stats["image"] == 5
    assert summary["images"] == {"ok": 5}
    got = read_table(tmp_path / "out", "photos").set_index("photo_id")
    for pid, path in zip(photos["photo_id"], photos["path"]):
        assert got.loc[pid, "sha256"] == hashlib.sha256((rendered_world / path).read_bytes()).hexdigest()
        assert (tmp_path / "out" / got.loc[pid, "path"]).is_file()


def test_download_retry_failed_after_an_outage(rendered_world, tmp_path):
    from interest.synthetic.server import FaultConfig

    photos = read_table(rendered_world, "photos").head(40)
    rows = "\n".join(f"9@N00,,,,,{u},1,1,1,2020-01-01,0," for u in photos["url"])
    head = "user_id,user_gender,user_country,user_timezone_label,user_timezone_id,favimg_url,favimg_num_views,favimg_num_favorites,favimg_num_comments,favimg_upload_date,favimg_owner_ispro,favimg_owner_occupation\n"
    csv = _write(tmp_path, "FlickrUser_additional.csv", head + rows + "\n")
    with serve_world(rendered_world, faults=FaultConfig(outage_photos=0.3, seed=2)) as srv:
        down = srv.damaged("outage_photos") & set(photos["photo_id"])
        first = import_flickruser([csv], tmp_path / "out", download=True, image_host=srv.image_host, threads=2,
                                  retries=1, progress=False)
        assert len(down) >= 5 and first["images"] == {"ok": 40 - len(down), "failed": len(down)}
        srv.faults.outage_photos = 0.0
        before = srv.stats["image"]
        again = import_flickruser([csv], tmp_path / "out", download=True, image_host=srv.image_host, threads=2,
                                  retries=1, progress=False, retry_failed=True)
        assert srv.stats["image"] - before == len(down)  # only the failed ones are asked again
    assert again["images"] == {"ok": 40} and again["retry_failed"] == {"retried": len(down), "came_back": len(down)}
    got = read_table(tmp_path / "out", "photos").set_index("photo_id")
    assert got.loc[sorted(down), "status_reason"].isna().all() and (got["status"] == "ok").all()
