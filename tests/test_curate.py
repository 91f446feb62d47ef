"""Curation: a generated burst and a re-edit among distinct pictures, grouped, the best kept, ranked."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from apps_helpers import train_image_model
from PIL import Image, ImageEnhance

from interest.core.collection import l2_normalize
from interest.core.errors import InterestError
from interest.apps.curate import curate, group_near_duplicates


def _reencode(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """13 files: a 5-shot burst of one picture, a re-edit pair of another, 6 distinct pictures; plus a broken file."""
    from interest.imaging.images import load_image

    root = tmp_path_factory.mktemp("curate_world")
    model = train_image_model(root)
    sources = sorted((root / "images").glob("*.jpg"))
    folder = root / "phone"
    (folder / "day2").mkdir(parents=True)
    a, b = load_image(sources[0]), load_image(sources[1])
    w, h = a.size
    burst = [
        a,
        a.crop((4, 3, w, h)).resize((w, h), Image.BICUBIC),  # hand moved a little
        a.rotate(2, resample=Image.BICUBIC, fillcolor=(128, 128, 128)),  # tilted
        _reencode(a, 60),  # re-encoded
        ImageEnhance.Brightness(a).enhance(1.08),  # exposure changed
    ]
    for i, image in enumerate(burst):
        image.save(folder / f"burst_{i}.jpg", quality=92)
    b.save(folder / "day2" / "edit_0.jpg", quality=92)
    ImageEnhance.Contrast(_reencode(b, 70)).enhance(1.05).save(folder / "day2" / "edit_1.jpg", quality=92)
    for i, src in enumerate(sources[2:8]):
        load_image(src).save(folder / f"other_{i}.jpg", quality=92)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    return root, model, folder


def test_groups_burst_and_keeps_the_best(photos, tmp_path):
    root, model, folder = photos
    out, copies = tmp_path / "selection.csv", tmp_path / "best"
    table = curate(model, folder, out=out, copy_to=copies, progress=False)

    ok = table[table["error"].isna()]
    assert len(table) == 14 and len(ok) == 13
    groups = ok.groupby("group")["path"].apply(sorted).tolist()
    assert sorted(map(len, groups)) == [1, 1, 1, 1, 1, 1, 2, 5]
    assert [f"burst_{i}.jpg" for i in range(5)] in groups
    assert ["day2/edit_0.jpg", "day2/edit_1.jpg"] in groups

    # the kept shot of each group is its highest common score, as `interest score` computes it
    expected = model.score(sorted(folder.rglob("*.jpg")), errors="coerce", progress=False)
    expected["path"] = [Path(p).relative_to(folder).as_posix() for p in expected["path"]]
    scores = dict(zip(expected["path"], expected["ci_score"]))
    for _, members in ok.groupby("group"):
        best = members[members["best_in_group"]]
        assert len(best) == 1
        assert best["score"].iloc[0] == pytest.approx(max(scores[p] for p in members["path"]), abs=1e-6)
    np.testing.assert_allclose(ok["ci_score"], [scores[p] for p in ok["path"]], atol=1e-6)

    selected = table[table["selected"]]
    assert len(selected) == 8 and selected["rank"].tolist() == list(range(1, 9))
    assert selected["score"].is_monotonic_decreasing and selected["best_in_group"].all()
    assert not table.loc[table["path"] == "broken.jpg", "selected"].item()

    written = pd.read_csv(out)
    assert written["path"].tolist() == table["path"].tolist()
    # the unreadable file leaves trend_group an integer column (no "0.0" in the CSV), empty for that file only
    assert str(table["trend_group"].dtype) == "Int64" and table["trend_group"].isna().sum() == 1
    text = out.read_text().splitlines()
    at = text[0].split(",").index("trend_group")
    assert {line.split(",")[at] for line in text[1:]} <= {"0", "1", "2", ""}
    copied = sorted(p.name for p in copies.iterdir())
    assert copied[0].startswith("001_") and len(copied) == 8
    first = selected.iloc[0]["path"]
    assert (copies / copied[0]).read_bytes() == (folder / first).read_bytes()


def test_keep_top_percent_and_user(photos):
    _, model, folder = photos
    assert curate(model, folder, keep=3, progress=False)["selected"].sum() == 3
    assert curate(model, folder, top_percent=30, progress=False)["selected"].sum() == math.ceil(13 * 0.3)
    user = model.users[0]
    mine = curate(model, folder, user=user, progress=False)
    ok = mine[mine["error"].isna()]
    np.testing.assert_allclose(ok["score"], ok["user_score"])
    burst = ok[ok["path"].str.startswith("burst_")]
    assert burst.loc[burst["best_in_group"], "user_score"].item() == pytest.approx(burst["user_score"].max())
    with pytest.raises(InterestError, match="not both"):
        curate(model, folder, keep=2, top_percent=10, progress=False)
    with pytest.raises(InterestError, match="nobody"):
        curate(model, folder, user="nobody", progress=False)


def test_cli_curate(photos, tmp_path):
    from typer.testing import CliRunner

    from interest.cli import app

    root, _, folder = photos
    out = tmp_path / "sel.csv"
    result = CliRunner().invoke(app, ["curate", str(root / "model"), str(folder), "--keep", "2", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert pd.read_csv(out)["selected"].sum() == 2
    # the perceptual backbone runs on the CPU: asking for a GPU is refused, not silently ignored
    gpu = CliRunner().invoke(app, ["curate", str(root / "model"), str(folder), "--device", "cuda", "--no-progress"])
    assert isinstance(gpu.exception, InterestError) and "perceptual/v1" in str(gpu.exception)


def test_complete_linkage_does_not_chain():
    # twelve shots of a slow pan: neighbours are alike, the ends are not
    angles = np.linspace(0, 1.2, 12)
    pan = np.zeros((12, 8), np.float32)
    pan[:, 0], pan[:, 1] = np.cos(angles), np.sin(angles)
    labels = group_near_duplicates(pan, 0.95)
    for g in np.unique(labels):
        members = pan[labels == g]
        assert (members @ members.T).min() >= 0.95 - 1e-6
    assert len(np.unique(labels)) > 1 and labels[0] == 0


def test_components_split_gives_the_global_clustering():
    from scipy.cluster.hierarchy import fcluster, linkage

    rng = np.random.default_rng(0)
    centres = l2_normalize(rng.normal(size=(30, 16)).astype(np.float32))
    emb = l2_normalize(centres[rng.integers(0, 30, 300)] + rng.normal(scale=0.12, size=(300, 16)).astype(np.float32))
    labels = group_near_duplicates(emb, 0.9)
    dist = np.clip(1.0 - emb.astype(np.float64) @ emb.T.astype(np.float64), 0, 2)
    reference = fcluster(linkage(dist[np.triu_indices(300, 1)], method="complete"), t=0.1, criterion="distance")
    # same partition (ids may differ)
    assert len(set(zip(labels, reference))) == len(set(labels)) == len(set(reference))
