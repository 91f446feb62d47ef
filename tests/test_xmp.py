"""XMP sidecars: stars, keywords and scores written where photo managers read them, read back with ExifTool.

The model is a real bundle trained on a small rendered world; the sidecars a
person already has (darktable's with an edit history, a person's rating,
hostile and broken ones) are written here as fixture strings.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from apps_helpers import run_cli, train_image_model
from PIL import Image

from interest.apps.curate import curate
from interest.apps.xmp import PICK_ACCEPTED, PICK_REJECTED, rating_cuts, sidecar_path, stars, write_sidecars
from interest.core.vocabulary import TREND_GROUPS

pytest.importorskip("defusedxml")
EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(
    EXIFTOOL is None, reason="exiftool not installed (Debian: apt-get install libimage-exiftool-perl; make test does it)"
)

DARKTABLE = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:exif="http://ns.adobe.com/exif/1.0/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmlns:darktable="http://darktable.sf.net/"
    xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/"
    xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#"
   exif:GPSLatitude="48,51.3N"
   exif:GPSLongitude="2,17.4E"
   xmp:Rating="0"
   xmpMM:DerivedFrom="{name}"
   darktable:xmp_version="5"
   darktable:history_end="2">
   <dc:subject>
    <rdf:Bag>
     <rdf:li>holiday</rdf:li>
    </rdf:Bag>
   </dc:subject>
   <lr:hierarchicalSubject>
    <rdf:Bag>
     <rdf:li>places|Paris</rdf:li>
    </rdf:Bag>
   </lr:hierarchicalSubject>
   <darktable:history>
    <rdf:Seq>
     <rdf:li darktable:num="0" darktable:operation="exposure" darktable:enabled="1" darktable:modversion="6"
      darktable:params="0000000000000000cdcc4c3e0000803f" darktable:multi_name="" darktable:multi_priority="0"/>
     <rdf:li darktable:num="1" darktable:operation="colorbalancergb" darktable:enabled="1" darktable:modversion="5"
      darktable:params="gz08eJxjYGBgYAFiCQYYOOHEgAZY0QUYGhbYo4tBMANEAg==" darktable:multi_name="" darktable:multi_priority="0"/>
    </rdf:Seq>
   </darktable:history>
   <mwg-rs:Regions rdf:parseType="Resource">
    <mwg-rs:RegionList>
     <rdf:Bag>
      <rdf:li rdf:parseType="Resource">
       <mwg-rs:Name>Alice</mwg-rs:Name>
       <mwg-rs:Type>Face</mwg-rs:Type>
       <mwg-rs:Area stArea:x="0.5" stArea:y="0.4" stArea:w="0.2" stArea:h="0.3" stArea:unit="normalized"/>
      </rdf:li>
     </rdf:Bag>
    </mwg-rs:RegionList>
   </mwg-rs:Regions>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""

PERSONS_RATING = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/">
   <xmp:Rating>{rating}</xmp:Rating>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>
"""

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE x:xmpmeta [
 <!ENTITY a "lol">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
 <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
 <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
 <!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">
 <!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">
 <!ENTITY i "&h;&h;&h;&h;&h;&h;&h;&h;&h;&h;">
]>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>&i;</dc:title>
</rdf:Description></rdf:RDF></x:xmpmeta>
"""

XXE = """<?xml version="1.0"?>
<!DOCTYPE x:xmpmeta [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>&secret;</dc:title>
</rdf:Description></rdf:RDF></x:xmpmeta>
"""

MALFORMED = """<?xml version="1.0"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"><xmp:Rating>4</xmp:Rating>
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A trained bundle over the perceptual backbone (loaded from disk, as the CLI loads it) and rendered images."""
    import interest

    root = tmp_path_factory.mktemp("xmp_world")
    train_image_model(root)
    return interest.load(root / "model"), sorted((root / "images").glob("*.jpg"))


def _folder(tmp_path: Path, sources: list[Path], n: int = 6) -> Path:
    folder = tmp_path / "photos"
    (folder / "trip").mkdir(parents=True)
    for i, src in enumerate(sources[:n]):
        shutil.copyfile(src, folder / ("trip" if i % 2 else "") / f"IMG_{i:04d}.jpg")
    return folder


def _images(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*.jpg"))}


def _exiftool(*paths: Path) -> list[dict]:
    """ExifTool's reading of sidecars, by group (-G1), numbers as numbers (-n)."""
    run = subprocess.run([EXIFTOOL, "-j", "-G1", "-n", "-struct", *map(str, paths)], capture_output=True, text=True, check=True)
    return json.loads(run.stdout)


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_stars_come_from_the_bundle_and_are_monotone(world):
    model, _ = world
    cuts = rating_cuts(model)
    # the quintiles of the app model's score on the training photos, stored at training time
    assert cuts.shape == (4,) and (np.diff(cuts) > 0).all()
    assert model.metadata["thresholds"]["rating_cuts"] == pytest.approx(cuts.tolist())
    grid = np.linspace(cuts[0] - 1, cuts[-1] + 1, 401)
    given = stars(grid, cuts)
    assert (np.diff(given) >= 0).all() and set(given) == {1, 2, 3, 4, 5}
    assert stars([cuts[0] - 1e-9, cuts[0], cuts[3]], cuts).tolist() == [1, 2, 5]
    assert stars([np.nan], cuts).tolist() == [0]

    # a bundle without stored cuts (older, or the study's head): the logistic through its trend-group cuts
    del model.metadata["thresholds"]["rating_cuts"]
    try:
        derived = rating_cuts(model)
    finally:
        model.metadata["thresholds"]["rating_cuts"] = cuts.tolist()
    lower, upper = model.groups.cuts_
    share_below, share_above = model.groups.prior_[TREND_GROUPS.index("subjective")], model.groups.prior_[0]
    assert (np.diff(derived) > 0).all()
    # the lower cut sits at the training share of subjective photos, the upper at 1 - the share of common ones
    assert (derived[0] < lower < derived[1]) == (0.2 < share_below < 0.4)
    assert (derived[2] < upper < derived[3]) == (0.6 < 1 - share_above < 0.8)


@needs_exiftool
def test_score_xmp_writes_what_exiftool_reads_and_a_rerun_writes_nothing(world, tmp_path, monkeypatch, capsys):
    model, sources = world
    folder = _folder(tmp_path, sources)
    images = _images(folder)
    cache = tmp_path / "cache"
    code, _, err = run_cli(monkeypatch, capsys, "score", model.name, folder, "--xmp", "--embedding-cache", cache,
                        "--out", tmp_path / "scores.csv")
    assert code == 0, err
    assert f"xmp: {len(images)} written, 0 unchanged, 0 kept the person's rating, 0 skipped" in err

    expected = model.score(list(images), progress=False)
    cuts = rating_cuts(model)
    sidecars = [Path(str(p) + ".xmp") for p in images]
    read = _exiftool(*sidecars)
    for row, tags, ci in zip(expected.itertuples(), read, expected["ci_score"]):
        group = TREND_GROUPS[int(row.trend_group)]
        assert tags["XMP-xmp:Rating"] == stars([ci], cuts)[0]
        assert _as_list(tags["XMP-dc:Subject"]) == [f"interest|{group}"]
        assert _as_list(tags["XMP-lr:HierarchicalSubject"]) == [f"interest|{group}"]
        assert tags["XMP-interest:CiScore"] == pytest.approx(ci, rel=1e-5)
        assert tags["XMP-interest:TrendGroup"] == group
        assert tags["XMP-interest:PCommon"] == pytest.approx(row.p_common, rel=1e-5, abs=1e-9)
        assert tags["XMP-interest:Model"] == "model"
        assert len(str(tags["XMP-interest:ModelFingerprint"])) == 16
    assert _images(folder) == images  # the photos themselves are only read

    # a second run: nothing embedded (the cache gains no part), no sidecar rewritten (bytes and mtime)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sidecars}
    cached = sorted(p.name for p in cache.rglob("*.parquet"))
    code, _, err = run_cli(monkeypatch, capsys, "score", model.name, folder, "--xmp", "--embedding-cache", cache,
                        "--out", tmp_path / "scores.csv")
    assert code == 0, err
    assert f"xmp: 0 written, {len(images)} unchanged, 0 kept the person's rating, 0 skipped" in err
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sidecars} == before
    assert sorted(p.name for p in cache.rglob("*.parquet")) == cached and cached


@needs_exiftool
def test_a_darktable_sidecar_is_merged_and_its_history_kept(world, tmp_path):
    model, sources = world
    folder = _folder(tmp_path, sources, n=2)
    image = folder / "IMG_0000.jpg"
    sidecar = folder / "IMG_0000.jpg.xmp"
    sidecar.write_text(DARKTABLE.format(name=image.name), encoding="utf-8")
    original = _exiftool(sidecar)[0]

    scores = model.score([image], progress=False)
    report = write_sidecars(model, scores, progress=False)
    assert report.written == [sidecar]
    tags = _exiftool(sidecar)[0]
    group = TREND_GROUPS[int(scores["trend_group"][0])]
    # everything the package does not own reads as before: history, GPS, face region, the person's keywords
    for key, value in original.items():
        if key.startswith(("XMP-darktable:", "XMP-exif:", "XMP-mwg-rs:", "XMP-xmpMM:", "Composite:")):
            assert tags[key] == value, key
    assert [step["Operation"] for step in tags["XMP-darktable:History"]] == ["exposure", "colorbalancergb"]
    assert "Alice" in json.dumps({k: v for k, v in tags.items() if k.startswith("XMP-mwg-rs:")})
    assert tags["XMP-dc:Subject"] == ["holiday", f"interest|{group}"]
    assert tags["XMP-lr:HierarchicalSubject"] == ["places|Paris", f"interest|{group}"]
    assert tags["XMP-xmp:Rating"] == stars(scores["ci_score"], rating_cuts(model))[0]  # 0 stars: unrated, ours to set

    # again, with another trend group's keyword standing in from an older model: replaced, not duplicated
    text = sidecar.read_text(encoding="utf-8").replace(f"interest|{group}", "interest|stale")
    sidecar.write_text(text, encoding="utf-8")
    assert write_sidecars(model, scores, progress=False).written == [sidecar]
    assert _exiftool(sidecar)[0]["XMP-dc:Subject"] == ["holiday", f"interest|{group}"]
    data, mtime = sidecar.read_bytes(), sidecar.stat().st_mtime_ns
    report = write_sidecars(model, scores, progress=False)
    assert report.unchanged == [sidecar] and not report.written
    assert sidecar.read_bytes() == data and sidecar.stat().st_mtime_ns == mtime


@needs_exiftool
def test_a_persons_rating_is_kept_unless_overwritten(world, tmp_path):
    model, sources = world
    folder = _folder(tmp_path, sources, n=2)
    images = sorted(folder.rglob("*.jpg"))
    scores = model.score(images, progress=False)
    ours = stars(scores["ci_score"], rating_cuts(model))
    persons = [1 if r == 5 else 5 for r in ours]  # a rating other than the package's
    for image, rating in zip(images, persons):
        Path(str(image) + ".xmp").write_text(PERSONS_RATING.format(rating=rating), encoding="utf-8")
    sidecars = [Path(str(p) + ".xmp") for p in images]

    report = write_sidecars(model, scores, progress=False)
    assert report.kept_rating == sidecars and report.written == sidecars
    assert [t["XMP-xmp:Rating"] for t in _exiftool(*sidecars)] == persons
    assert all("XMP-interest:Rating" not in t for t in _exiftool(*sidecars))

    report = write_sidecars(model, scores, overwrite_rating=True, progress=False)
    assert not report.kept_rating
    assert [t["XMP-xmp:Rating"] for t in _exiftool(*sidecars)] == ours.tolist()

    # the person re-rates one photo with another tool (ExifTool): from then on that rating is theirs
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", f"-XMP-xmp:Rating={persons[0]}", str(sidecars[0])], check=True)
    report = write_sidecars(model, scores, progress=False)
    assert report.kept_rating == [sidecars[0]] and report.unchanged == [sidecars[1]]
    assert [t["XMP-xmp:Rating"] for t in _exiftool(*sidecars)] == [persons[0], ours[1]]


def test_hostile_and_malformed_sidecars_are_left_untouched(world, tmp_path, monkeypatch, capsys):
    model, sources = world
    folder = _folder(tmp_path, sources, n=4)
    images = sorted(folder.rglob("*.jpg"))
    bad = {images[0]: BILLION_LAUGHS, images[1]: XXE, images[2]: MALFORMED}
    for image, text in bad.items():
        Path(str(image) + ".xmp").write_text(text, encoding="utf-8")
    before = {p: p.read_bytes() for p in folder.rglob("*.xmp")}
    photos = _images(folder)

    code, _, err = run_cli(monkeypatch, capsys, "score", model.name, folder, "--xmp", "--embedding-cache",
                        tmp_path / "cache", "--out", tmp_path / "s.csv")
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert len(lines) == 3
    for image, reason in zip(images[:3], ("refused", "refused", "malformed XML")):
        line = next(line for line in lines if f"{image}.xmp" in line)
        assert reason in line, line
    assert "xmp: 1 written, 0 unchanged, 0 kept the person's rating, 3 skipped" in err
    assert {p: p.read_bytes() for p in before} == before  # the three stay as they were
    assert Path(str(images[3]) + ".xmp").is_file()
    assert _images(folder) == photos


@needs_exiftool
def test_both_naming_conventions(world, tmp_path):
    model, sources = world
    folder = _folder(tmp_path, sources, n=3)
    a, b, c = sorted(folder.glob("*.jpg")) + sorted((folder / "trip").glob("*.jpg"))
    Path(str(b.with_suffix(".xmp"))).write_text(PERSONS_RATING.format(rating=0), encoding="utf-8")
    Image.open(a).save(a.with_suffix(".png"))  # IMG_0000.jpg and IMG_0000.png would share IMG_0000.xmp

    assert sidecar_path(a, "ext") == folder / "IMG_0000.jpg.xmp"
    assert sidecar_path(b, "ext") == b.with_suffix(".xmp")  # the existing IMG.xmp is the one used
    assert sidecar_path(c, "stem") == c.with_suffix(".xmp")

    scores = model.score([a, b, c], progress=False)
    report = write_sidecars(model, scores, naming="stem", progress=False)
    assert sorted(report.written) == sorted([a.with_suffix(".xmp"), b.with_suffix(".xmp"), c.with_suffix(".xmp")])
    assert not any(folder.rglob("*.jpg.xmp"))
    ratings = [t["XMP-xmp:Rating"] for t in _exiftool(a.with_suffix(".xmp"), b.with_suffix(".xmp"), c.with_suffix(".xmp"))]
    assert ratings == stars(scores["ci_score"], rating_cuts(model)).tolist()

    both = model.score([a, a.with_suffix(".png")], progress=False)
    report = write_sidecars(model, both, naming="stem", progress=False)
    assert [reason for _, reason in report.skipped] == ["shared by two images; use the ext naming (IMG.jpg.xmp)"] * 2
    # ext naming does not take the existing IMG_0000.xmp when another file (the png) has that stem too
    report = write_sidecars(model, both, naming="ext", progress=False)
    assert sorted(report.written) == [folder / "IMG_0000.jpg.xmp", folder / "IMG_0000.png.xmp"]


@needs_exiftool
def test_curate_picks_the_best_shot_and_rejects_the_others_when_asked(world, tmp_path, monkeypatch, capsys):
    from PIL import ImageEnhance

    model, sources = world
    folder = tmp_path / "burst"
    folder.mkdir()
    a = Image.open(sources[0]).convert("RGB")
    for i, factor in enumerate((1.0, 1.05, 0.95)):
        ImageEnhance.Brightness(a).enhance(factor).save(folder / f"burst_{i}.jpg", quality=92)
    for i, src in enumerate(sources[1:4]):
        shutil.copyfile(src, folder / f"other_{i}.jpg")
    photos = _images(folder)

    table = curate(model, folder, progress=False)
    burst = table[table["path"].str.startswith("burst_")]
    assert burst["group"].nunique() == 1 and burst["best_in_group"].sum() == 1
    best = burst.loc[burst["best_in_group"], "path"].item()
    others = sorted(set(burst["path"]) - {best})

    code, _, err = run_cli(monkeypatch, capsys, "curate", model.name, folder, "--xmp", "--embedding-cache",
                        tmp_path / "cache", "--out", tmp_path / "c.csv")
    assert code == 0, err
    assert f"xmp: {len(table)} written, 0 unchanged, 0 kept the person's rating, 0 skipped" in err
    tags = {Path(t["SourceFile"]).name[: -len(".xmp")]: t for t in _exiftool(*sorted(folder.glob("*.xmp")))}
    assert tags[best]["XMP-digiKam:PickLabel"] == PICK_ACCEPTED
    for name in others:  # left alone: no pick label, the stars of their score
        assert "XMP-digiKam:PickLabel" not in tags[name]
        assert tags[name]["XMP-xmp:Rating"] >= 1
    assert all(tags[f"other_{i}.jpg"]["XMP-digiKam:PickLabel"] == PICK_ACCEPTED for i in range(3))

    code, _, err = run_cli(monkeypatch, capsys, "curate", model.name, folder, "--xmp", "--reject-others",
                        "--embedding-cache", tmp_path / "cache", "--out", tmp_path / "c.csv")
    assert code == 0, err
    assert f"xmp: {len(others)} written, {len(table) - len(others)} unchanged" in err
    tags = {Path(t["SourceFile"]).name[: -len(".xmp")]: t for t in _exiftool(*sorted(folder.glob("*.xmp")))}
    for name in others:
        assert tags[name]["XMP-xmp:Rating"] == -1 and tags[name]["XMP-digiKam:PickLabel"] == PICK_REJECTED
    assert tags[best]["XMP-xmp:Rating"] >= 1
    assert _images(folder) == photos

    code, _, err = run_cli(monkeypatch, capsys, "curate", model.name, folder, "--reject-others")
    assert code == 2 and "give --xmp too" in err
    code, _, err = run_cli(monkeypatch, capsys, "score", model.name, folder, "--overwrite-rating")
    assert code == 2 and err.strip() == "error: --overwrite-rating changes what goes into XMP sidecars; give --xmp too"


def test_sidecar_hashes_are_stable_across_folders(world, tmp_path):
    """The same photo gets the same sidecar in any folder: the stars come from the bundle, not from the folder."""
    model, sources = world
    alone, crowd = tmp_path / "alone", tmp_path / "crowd"
    alone.mkdir()
    shutil.copyfile(sources[0], alone / "x.jpg")
    crowd.mkdir()
    for i, src in enumerate(sources[:12]):
        shutil.copyfile(src, crowd / ("x.jpg" if i == 0 else f"y{i}.jpg"))
    for folder in (alone, crowd):
        write_sidecars(model, model.score([folder], progress=False), progress=False)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(alone / "x.jpg.xmp") == digest(crowd / "x.jpg.xmp")


@needs_exiftool
def test_with_a_user_the_stars_come_from_their_score(world, tmp_path):
    model, sources = world
    folder = _folder(tmp_path, sources, n=4)
    images = sorted(folder.rglob("*.jpg"))
    user = model.users[0]
    scores = model.score(images, user=user, progress=False)
    assert not np.allclose(scores["user_score"], scores["ci_score"])  # the head moves the scores
    write_sidecars(model, scores, user=user, progress=False)
    read = _exiftool(*[Path(str(p) + ".xmp") for p in images])
    assert [t["XMP-xmp:Rating"] for t in read] == stars(scores["user_score"], rating_cuts(model)).tolist()
    assert [t["XMP-interest:User"] for t in read] == [user] * len(images)
    np.testing.assert_allclose([t["XMP-interest:UserScore"] for t in read], scores["user_score"], rtol=1e-5)

    with pytest.raises(Exception, match="no user_score"):
        write_sidecars(model, model.score(images, progress=False), user=user, progress=False)


def test_the_embedding_cache_embeds_only_new_or_changed_files(world, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from interest.pipeline import file_cache

    monkeypatch.setattr(file_cache, "MAX_PARTS", 1)  # a second part already merges the parts into one table
    model, sources = world
    folder = _folder(tmp_path, sources, n=5)
    cache = tmp_path / "cache"

    def rows_cached() -> int:
        return sum(pq.read_metadata(p).num_rows for p in cache.rglob("*.parquet"))

    fresh = model.score([folder], progress=False)
    first = model.score([folder], progress=False, cache=cache)
    assert rows_cached() == 5
    second = model.score([folder], progress=False, cache=cache)
    assert rows_cached() == 5  # nothing embedded again
    for table in (first, second):
        np.testing.assert_allclose(table["ci_score"], fresh["ci_score"], rtol=1e-6)
        assert table["path"].tolist() == fresh["path"].tolist()

    changed = sorted(folder.rglob("*.jpg"))[0]
    Image.open(changed).rotate(90).save(changed)  # new bytes: embedded again, the others read from the cache
    shutil.move(str(sorted(folder.rglob("*.jpg"))[1]), folder / "renamed.jpg")  # same bytes: a hit
    third = model.score([folder], progress=False, cache=cache)
    assert rows_cached() == 6
    assert [p.name for p in cache.rglob("*.parquet")] == ["embeddings.parquet"]
    expected = model.score([folder], progress=False)
    np.testing.assert_allclose(third["ci_score"], expected["ci_score"], rtol=1e-6)


def test_a_bundle_without_cuts_or_with_bad_ones_is_refused_in_one_line(world):
    from interest.core.errors import InterestError

    model, _ = world
    thresholds, settings = model.metadata["thresholds"], model.metadata["label_settings"]
    try:
        model.metadata["thresholds"] = {**thresholds, "rating_cuts": [0.3, 0.1, 0.2, 0.4]}
        with pytest.raises(InterestError, match="four ascending numbers"):
            rating_cuts(model)
        model.metadata["thresholds"] = {}
        model.metadata["label_settings"] = {}
        with pytest.raises(InterestError, match="cannot be mapped to stars"):
            rating_cuts(model)
    finally:
        model.metadata["thresholds"], model.metadata["label_settings"] = thresholds, settings


@needs_exiftool
def test_a_persons_pick_label_is_kept_and_the_packages_own_is_taken_back(world, tmp_path):
    model, sources = world
    folder = _folder(tmp_path, sources, n=3)
    table = curate(model, folder, progress=False)
    assert table["selected"].all()  # three distinct pictures: each the best of its own group
    first, second = (folder / p for p in table["path"][:2])
    Path(str(first) + ".xmp").write_text(PERSONS_RATING.format(rating=0).replace(
        "<xmp:Rating>0</xmp:Rating>", '<xmp:Rating>0</xmp:Rating>\n   <digiKam:PickLabel xmlns:digiKam="http://www.digikam.org/ns/1.0/">2</digiKam:PickLabel>'
    ), encoding="utf-8")

    report = write_sidecars(model, table, folder, progress=False)
    assert report.kept_rating == [Path(str(first) + ".xmp")]
    picks = [t.get("XMP-digiKam:PickLabel") for t in _exiftool(Path(str(first) + ".xmp"), Path(str(second) + ".xmp"))]
    assert picks == [2, PICK_ACCEPTED]  # the person's "pending" stays; the package's pick on the other

    # the second photo is no longer selected (e.g. --keep 1): the package takes its own pick label back
    table.loc[table["path"] == second.relative_to(folder).as_posix(), "selected"] = False
    write_sidecars(model, table, folder, progress=False)
    assert "XMP-digiKam:PickLabel" not in _exiftool(Path(str(second) + ".xmp"))[0]
    write_sidecars(model, table, folder, overwrite_rating=True, progress=False)
    assert _exiftool(Path(str(first) + ".xmp"))[0]["XMP-digiKam:PickLabel"] == PICK_ACCEPTED
