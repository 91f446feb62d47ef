"""The on-disk contract: checked reads, atomic writes, embeddings in any list layout, configs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from interest.core.collection import (
    atomic_path,
    embeddings_file_backbone,
    embeddings_path,
    list_backbones,
    read_embeddings,
    read_embeddings_file,
    read_manifest,
    read_table,
    resolve_backbone,
    unusable_photos,
    write_embeddings,
    write_table,
)
from interest.core.config import load_config
from interest.core.errors import InterestError
from interest.models.metadata import metadata_features


def test_write_table_coerces_contract_types_and_keeps_extra_columns(tmp_path):
    photos = pd.DataFrame({"photo_id": [1, 2], "views": [10, None], "upload_date": ["2020-01-02", None], "extra": ["x", "y"]})
    write_table(tmp_path, "photos", photos, source="test")
    back = read_table(tmp_path, "photos")
    assert back["photo_id"].tolist() == ["1", "2"]
    assert str(back["views"].dtype) == "Int64" and back["views"].isna().tolist() == [False, True]
    assert str(back["upload_date"].dtype) == "datetime64[ns, UTC]"
    assert back["owner_ispro"].isna().all()  # contract column added as null
    assert back["extra"].tolist() == ["x", "y"]
    assert read_manifest(tmp_path)["tables"]["photos"]["rows"] == 2


def test_duplicate_key_is_refused_and_old_table_survives(tmp_path):
    write_table(tmp_path, "favorites", pd.DataFrame({"user_id": ["u"], "photo_id": ["p"]}))
    before = (tmp_path / "favorites.parquet").read_bytes()
    with pytest.raises(InterestError, match="duplicate key"):
        write_table(tmp_path, "favorites", pd.DataFrame({"user_id": ["u", "u"], "photo_id": ["p", "p"]}))
    assert (tmp_path / "favorites.parquet").read_bytes() == before


def test_atomic_path_leaves_target_untouched_on_failure(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def test_missing_table_and_column_name_file_and_column(tmp_path):
    with pytest.raises(InterestError, match="users.parquet"):
        read_table(tmp_path, "users")
    pd.DataFrame({"user_id": ["a"]}).to_parquet(tmp_path / "favorites.parquet")
    with pytest.raises(InterestError, match="favorites.parquet.*'photo_id'"):
        read_table(tmp_path, "favorites")


def test_embeddings_round_trip_and_normalisation(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(5, 8)) * 3
    write_embeddings(tmp_path, "test/encoder", [f"p{i}" for i in range(5)], emb)
    backbone, ids, back = read_embeddings(tmp_path)
    assert backbone == "test/encoder" and list(ids) == [f"p{i}" for i in range(5)]
    np.testing.assert_allclose(np.linalg.norm(back, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(back, emb / np.linalg.norm(emb, axis=1, keepdims=True), atol=1e-6)
    assert pq.read_schema(embeddings_path(tmp_path, "test/encoder")).field("embedding").type == pa.list_(pa.float32(), 8)


def test_variable_size_list_embeddings_from_another_program(tmp_path):
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"photo_id": ["a", "b"], "embedding": [[3.0, 4.0], [1.0, 0.0]]}), path)
    ids, emb = read_embeddings_file(path)
    np.testing.assert_allclose(emb, [[0.6, 0.8], [1.0, 0.0]], atol=1e-6)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([[1.0, 2.0], [1.0]], "different lengths"),
        ([[1.0, float("nan")], [1.0, 2.0]], "photo_id a has a NaN"),
        ([None, [1.0, 2.0]], "photo_id a has no embedding"),
    ],
)
def test_bad_embeddings_name_the_photo(tmp_path, rows, message):
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"photo_id": ["a", "b"], "embedding": rows}), path)
    with pytest.raises(InterestError, match=message):
        read_embeddings_file(path)


def test_backbone_resolution(tmp_path):
    with pytest.raises(InterestError, match="interest embed"):
        resolve_backbone(tmp_path)
    write_embeddings(tmp_path, "a/one", ["p"], np.ones((1, 2)))
    assert resolve_backbone(tmp_path) == "a/one"
    write_embeddings(tmp_path, "b/two", ["p"], np.ones((1, 2)))
    assert list_backbones(tmp_path) == ["a/one", "b/two"]
    with pytest.raises(InterestError, match="--backbone"):
        resolve_backbone(tmp_path)
    with pytest.raises(InterestError, match="c/three"):
        resolve_backbone(tmp_path, "c/three")
    # the table's place names its backbone; a file elsewhere names none
    assert embeddings_file_backbone(embeddings_path(tmp_path, "b/two")) == "b/two"
    assert embeddings_file_backbone(tmp_path / "b" / "embeddings.parquet") is None
    assert embeddings_file_backbone(tmp_path / "features" / "b" / "other.parquet") is None


def test_unusable_photos_counts_every_status_but_ok(tmp_path):
    write_table(tmp_path, "photos", pd.DataFrame({"photo_id": ["a", "b", "c", "d"],
                                                  "status": ["ok", "bad_image", None, "missing"]}))
    assert unusable_photos(tmp_path) == 2  # no status yet counts as usable


@dataclass
class _Cfg:
    rate: int = 3500
    ratio: float = 0.5
    name: str = "x"
    sizes: list = field(default_factory=lambda: [1, 2])


def test_config_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("rate: 10\nname: y\n")
    cfg = load_config(_Cfg, path, rate=None, ratio=0.25)
    assert (cfg.rate, cfg.ratio, cfg.name) == (10, 0.25, "y")


@pytest.mark.parametrize("text, message", [("rat: 1\n", "unknown key 'rat'"), ("rate: fast\n", "key 'rate'"), ("- 1\n", "mapping")])
def test_bad_config_names_the_key(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(InterestError, match=message):
        load_config(_Cfg, path)


def test_metadata_features_values():
    photos = pd.DataFrame(
        {
            "photo_id": ["a", "b"],
            "views": pd.array([99, None], dtype="Int64"),
            "faves": pd.array([9, 1], dtype="Int64"),
            "comments": pd.array([0, 3], dtype="Int64"),
            "upload_date": pd.to_datetime(["2020-01-01", "2020-01-11"], utc=True),
            "owner_ispro": pd.array([True, None], dtype="boolean"),
            "owner_occupation": pd.array(["Wedding photographer", "teacher"], dtype="string"),
        }
    )
    f = metadata_features(photos)
    assert f.loc["a", "log_views"] == pytest.approx(np.log(100))
    assert np.isnan(f.loc["b", "log_views"]) and np.isnan(f.loc["b", "faves_per_view"])
    assert f.loc["a", "faves_per_view"] == pytest.approx(9 / 99)
    assert f["photo_age_days"].tolist() == [10.0, 0.0]
    assert f.loc["a", "owner_ispro"] == 1.0 and np.isnan(f.loc["b", "owner_ispro"])
    assert f["owner_is_photographer"].tolist() == [1.0, 0.0]
