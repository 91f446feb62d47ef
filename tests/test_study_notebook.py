"""The study's Tables 1 and 3 and its photographers' shares, number for number, from the published CSVs.

CSVs in both published schemas are written here, with photos favourited in
both files (by one user in FlickrUser_definition.csv and by another in
FlickrUser_additional.csv); ``interest import flickruser`` (no download) and
``interest analyze`` run on them as a researcher runs them, and every number
of their ``study_*`` tables is checked against the study's notebook, written
here the way the notebook writes it: pandas on the definition CSV's rows
(``df_definition``), ``value_counts(normalize=True).round(4) * 100``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from interest.stages.analyze import analyze
from interest.stages.collect import import_flickruser
from interest.core.collection import read_table, write_table

# The study's 14 VILA styles and 8 emotions; "light on white" never shows in the subjective group, so the
# notebook leaves that cell NaN (and its Delta, which sorts last).
STYLES = ["complementary colors", "duo tones", "hdr", "image grain", "light on white", "long exposure", "macro",
          "motion blur", "negative image", "rule of thirds", "shallow dof", "silhouette", "soft focus", "vanishing point"]
EMOTIONS = ["excitement", "awe", "contentment", "amusement", "sadness", "disgust", "anger", "fear"]
OCCUPATIONS = ["Photographer", "wedding PHOTOGRAPHER", "student", None, "Freelance photographer and designer", "nurse"]
GROUP_NAMES = ["common", "interplay", "subjective"]


def _photos(n: int = 150, seed: int = 0) -> pd.DataFrame:
    """Photos with the published per-photo columns; the common group leans to hdr, excitement, photographers."""
    rng = np.random.default_rng(seed)
    group = np.arange(n) % 3
    # every style and emotion in every group (but "light on white" in the subjective one), in the weights given
    styles = [STYLES + ["hdr"] * 3, STYLES, [s for s in STYLES if s != "light on white"] + ["negative image"] * 3]
    emotions = [EMOTIONS + ["excitement"] * 4, EMOTIONS, EMOTIONS + ["sadness"] * 2]
    style, emotion = np.empty(n, dtype=object), np.empty(n, dtype=object)
    for g in range(3):
        at = np.flatnonzero(group == g)
        style[at] = rng.permutation(np.resize(np.array(styles[g], dtype=object), len(at)))
        emotion[at] = rng.permutation(np.resize(np.array(emotions[g], dtype=object), len(at)))
    style[(np.arange(n) % 31 == 5) & (style != "light on white")] = None  # no main feature: left out of the shares
    occupation_p = np.array([[3, 2, 1, 1, 1, 1], [1, 1, 2, 2, 1, 2], [1, 1, 3, 3, 0, 2]], dtype=float)
    return pd.DataFrame({
        "pid": [str(80_000 + i) for i in range(n)],
        "trend_group": group,
        "cluster_label": np.arange(n) % 12,
        "partition": [f"{i % 12}.0" for i in range(n)],
        "ci_score": np.round(0.5 - 0.2 * group + rng.uniform(0, 0.05, n), 4),
        "VILA_main_feature": list(style),
        "VILA_aesthetic_score": np.round(rng.uniform(0.3, 0.7, n) + 0.05 * (2 - group), 4),
        "CLIP_emotion_main_category": list(emotion),
        "occupation": [OCCUPATIONS[rng.choice(6, p=occupation_p[g] / occupation_p[g].sum())] for g in group],
        "ispro": rng.integers(0, 2, n),
        "views": rng.integers(10, 10_000, n),
    })


def _favourites(photos: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(definition rows, additional rows, additional-only photos): one row per user and favourited photo.

    The additional file's users favourite some definition photos too (the
    overlap of the real release), one user and photo are in both files, and
    the additional file has photos of its own.
    """
    rng = np.random.default_rng(seed + 1)
    # every photo is favourited in the definition file at least once, some by many users
    definition = sorted({(f"{k % 18}@N0{k % 3}", k) for k in range(len(photos))}
                        | {(f"{u}@N0{u % 3}", int(k)) for u in range(18) for k in rng.choice(len(photos), 8 + u % 5, replace=False)})
    additional = [(f"{u}@N0{u % 3}", int(k)) for u in range(10, 26) for k in rng.choice(len(photos), 9, replace=False)]
    additional = [f for f in additional if f not in set(definition)] + [definition[0]]  # one favourite in both files
    extra = pd.DataFrame({"pid": [str(90_000 + i) for i in range(12)], "ci_r_score": np.round(rng.uniform(0, 0.6, 12), 4),
                          "views": rng.integers(10, 10_000, 12), "ispro": 1, "occupation": "Photographer"})
    add_extra = [(f"{u}@N0{u % 3}", 90_000 + int(i)) for u in range(20, 26) for i in rng.choice(12, 4, replace=False)]

    def rows(pairs):
        return pd.DataFrame({"user": [u for u, _ in pairs], "pid": [photos["pid"].iloc[k] for _, k in pairs]})

    return rows(definition), pd.concat([rows(additional), pd.DataFrame({"user": [u for u, _ in add_extra],
                                                                        "pid": [str(p) for _, p in add_extra]})]), extra


def _url(pid: str) -> str:
    return f"https://live.staticflickr.com/65535/{pid}_ab12cd_z.jpg"


def _write_current(tmp_path: Path, seed: int = 0) -> tuple[Path, Path]:
    """FlickrUser_definition.csv and FlickrUser_additional.csv in the current published schema."""
    photos = _photos(seed=seed)
    definition, additional, extra = _favourites(photos, seed)
    d = definition.merge(photos, on="pid", how="left")
    definition_csv = pd.DataFrame({
        "user_id": d["user"], "user_gender": "female", "user_country": "Germany", "user_timezone_label": None,
        "user_timezone_id": None, "favimg_url": d["pid"].map(_url), "favimg_num_views": d["views"],
        "favimg_num_favorites": 3, "favimg_num_comments": 1, "favimg_upload_date": "2019-05-01 10:00:00",
        "favimg_owner_ispro": d["ispro"], "favimg_owner_occupation": d["occupation"],
        **{f"VILA_{s.replace(' ', '_')}": 0.5 for s in STYLES[:3]},
        "VILA_main_feature": d["VILA_main_feature"], "VILA_aesthetic_score": d["VILA_aesthetic_score"],
        **{f"CLIP_emotion_{e}": 0.125 for e in EMOTIONS[:3]},
        "CLIP_emotion_main_category": d["CLIP_emotion_main_category"],
        "cluster_label": d["cluster_label"], "partition": d["partition"], "trend_group": d["trend_group"], "ci_score": d["ci_score"],
    })
    a = additional.merge(pd.concat([photos, extra]), on="pid", how="left")
    additional_csv = pd.DataFrame({
        "user_id": a["user"], "user_gender": "male", "user_country": None, "user_timezone_label": None, "user_timezone_id": None,
        "favimg_url": a["pid"].map(_url), "favimg_num_views": a["views"], "favimg_num_favorites": 3, "favimg_num_comments": 0,
        "favimg_upload_date": "1262304000", "favimg_owner_ispro": a["ispro"], "favimg_owner_occupation": a["occupation"],
        "ci_r_score": a["ci_r_score"].fillna(0.3),
    })
    paths = tmp_path / "FlickrUser_definition.csv", tmp_path / "FlickrUser_additional.csv"
    definition_csv.to_csv(paths[0], index=False)
    additional_csv.to_csv(paths[1], index=False)
    return paths


# ---------------------------------------------------------------- the notebook, as it is written


def notebook(df_definition: pd.DataFrame, *, older: bool = False) -> dict[str, pd.DataFrame]:
    """The study notebook's cells for Tables 1 and 3 and the photographers' shares, on its own DataFrame.

    ``older``: the notebook's version for the older FlickrUser.csv (columns
    group, main_feature, quality_score, emotion_category, img_owner_occupation,
    capitalised emotions).
    """
    group, style, quality, emotion, occupation = (
        ("group", "main_feature", "quality_score", "emotion_category", "img_owner_occupation") if older else
        ("trend_group", "VILA_main_feature", "VILA_aesthetic_score", "CLIP_emotion_main_category", "favimg_owner_occupation")
    )
    df_common = df_definition[(df_definition[group] == 0)]
    df_interplay = df_definition[(df_definition[group] == 1)]
    df_subjective = df_definition[(df_definition[group] == 2)]

    # Perceptual Features (cf. Table 1)
    perceptual_features_common = df_common.value_counts(subset=[style], normalize=True).round(4) * 100
    aesthetic_score_common = df_common[quality].describe()[["25%", "50%", "75%"]].round(4) * 100
    perceptual_features_interplay = df_interplay.value_counts(subset=[style], normalize=True).round(4) * 100
    aesthetic_score_interplay = df_interplay[quality].describe()[["25%", "50%", "75%"]].round(4) * 100
    perceptual_features_subjective = df_subjective.value_counts(subset=[style], normalize=True).round(4) * 100
    aesthetic_score_subjective = df_subjective[quality].describe()[["25%", "50%", "75%"]].round(4) * 100

    df_perceptual_features = pd.concat([perceptual_features_common, perceptual_features_interplay, perceptual_features_subjective], axis=1)
    df_perceptual_features.columns = ["Common", "Interplay", "Subjective"]
    df_perceptual_features["Delta"] = df_perceptual_features["Common"] - df_perceptual_features["Subjective"]
    df_perceptual_features = df_perceptual_features.sort_values(by="Delta", ascending=False)

    df_aesthetic_score = pd.concat([aesthetic_score_common, aesthetic_score_interplay, aesthetic_score_subjective], axis=1)
    df_aesthetic_score.columns = ["Common", "Interplay", "Subjective"]
    df_aesthetic_score["Delta"] = df_aesthetic_score["Common"] - df_aesthetic_score["Subjective"]

    # Check if the owner of the image is a photographer
    is_photographer = []
    for i in df_definition.index:
        if "photographer" in str(df_definition.loc[i, occupation]).lower():
            is_photographer.append(1)
        else:
            is_photographer.append(0)
    df_photographer = df_definition.copy()
    df_photographer["is_photographer"] = is_photographer
    photographers = []
    for g in range(3):
        df_temp = df_photographer[df_photographer[group] == g]
        val = df_temp.value_counts(subset=["is_photographer"], normalize=True).round(4) * 100
        photographers.append(val[1])

    # Connotative Features (cf. Table 3)
    connotative_features_common = df_common.value_counts(subset=[emotion], normalize=True).round(4) * 100
    connotative_features_interplay = df_interplay.value_counts(subset=[emotion], normalize=True).round(4) * 100
    connotative_features_subjective = df_subjective.value_counts(subset=[emotion], normalize=True).round(4) * 100
    blocks = []  # the notebook's positive and negative cells, the same code twice: once here, in a loop
    for labels, total in ((["Excitement", "Awe", "Contentment", "Amusement"], "Sum Positive"),
                          (["Sadness", "Disgust", "Anger", "Fear"], "Sum Negative")):
        connotative_features = labels if older else [c.lower() for c in labels]
        df_block = pd.concat([connotative_features_common[connotative_features],
                              connotative_features_interplay[connotative_features],
                              connotative_features_subjective[connotative_features]], axis=1)
        df_block.columns = ["Common", "Interplay", "Subjective"]
        df_block.index = labels
        df_block["Delta"] = df_block["Common"] - df_block["Subjective"]
        df_block = df_block.sort_values(by="Delta", ascending=False)
        df_block.loc[total] = df_block.sum()
        blocks.append(df_block)

    df_perceptual_features.index = df_perceptual_features.index.get_level_values(0)  # 1-tuples, as printed
    return {
        "study_main_style": df_perceptual_features,
        "study_aesthetic_quartiles": df_aesthetic_score,
        "study_main_emotion": pd.concat(blocks),
        "study_photographers": pd.DataFrame([photographers], columns=["Common", "Interplay", "Subjective"]),
    }


def check_every_number(tables_dir: Path, expected: dict[str, pd.DataFrame], prefix: str = "") -> int:
    """Assert each of the notebook's numbers is in the CSV table ``interest analyze`` wrote; return how many."""
    checked = 0
    for name, want in expected.items():
        got = pd.read_csv(tables_dir / f"{name}.csv", index_col=0)
        columns = [f"{prefix}{c}" for c in ("common", "interplay", "subjective", "delta")][: want.shape[1]]
        if name == "study_aesthetic_quartiles":
            assert list(got.index) == ["25th percentile", "median", "75th percentile"]
            got.index = want.index
        if name == "study_photographers":
            got.index = want.index
        # the same rows in the same order of Delta (rows tied on Delta may follow another order: see docs)
        assert sorted(map(str, got.index)) == sorted(map(str, want.index)), name
        if prefix == "":
            np.testing.assert_array_equal(got[columns[-1]].to_numpy(), want.iloc[:, -1].to_numpy())
        got = got.loc[want.index, columns]
        # exactly the notebook's floats (round(4) * 100 and Deltas of the rounded numbers), NaN where it has NaN
        np.testing.assert_array_equal(got.to_numpy(), want.to_numpy(), err_msg=name)
        checked += int(want.notna().to_numpy().sum())
    return checked


def _cli(*args: object) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "interest", *map(str, args)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_every_number_of_the_notebook_from_the_cli(tmp_path):
    """import flickruser (no download), then analyze: every number of Tables 1 and 3 and the photographers' shares."""
    definition, additional = _write_current(tmp_path)
    out = tmp_path / "OUT"
    _cli("import", "flickruser", additional, definition, out, "--no-progress")  # the order of the files does not matter
    proc = _cli("analyze", out, "--out", tmp_path / "analysis", "--n-boot", "20", "--no-progress")

    df_definition = pd.read_csv(definition)
    expected = notebook(df_definition)
    # 14 styles and 3 quartiles x (3 groups + Delta), 8 emotions + 2 sums x 4, 3 shares of photographers,
    # less the subjective share of "light on white" and its Delta, which the notebook leaves NaN
    assert check_every_number(tmp_path / "analysis", expected) == 14 * 4 + 3 * 4 + 10 * 4 + 3 - 2
    style = pd.read_csv(tmp_path / "analysis" / "study_main_style.csv", index_col=0)
    assert style.index[-1] == "light on white" and np.isnan(style.loc["light on white", "delta"])
    emotion = pd.read_csv(tmp_path / "analysis" / "study_main_emotion.csv", index_col=0)
    assert list(emotion.index[[4, 9]]) == ["Sum Positive", "Sum Negative"]

    # the rows are the definition CSV's, not every favourite of its photos: the additional file's users count not
    counts = pd.read_csv(tmp_path / "analysis" / "study_rows.csv", index_col=0)
    assert counts.loc["favourites"].tolist() == df_definition["trend_group"].value_counts().sort_index().tolist()
    favorites = read_table(out, "favorites")
    on_definition_photos = favorites["photo_id"].isin(df_definition["favimg_url"].str.extract(r"/(\d+)_")[0])
    assert (on_definition_photos & (favorites["source"] == "additional")).sum() > 20  # the overlap is real
    assert "rows = the favourites from FlickrUser_definition.csv" in proc.stderr and "published ones" in proc.stderr
    # the per-photo tables run on the published labels too: every definition photo once
    groups = pd.read_csv(tmp_path / "analysis" / "groups.csv", index_col=0)
    assert groups["photos"].sum() == df_definition["favimg_url"].nunique()

    # the package's per-photo view stays beside the notebook's per-row one, and they differ
    owner = pd.read_csv(tmp_path / "analysis" / "owner.csv", index_col=0)
    per_photo = owner.loc["owner is a photographer", ["common", "interplay", "subjective"]].to_numpy()
    assert not np.allclose(per_photo, expected["study_photographers"].to_numpy()[0], atol=0.01)
    assert {"delta_lo", "delta_hi", "p_holm"} <= set(owner.columns)

    # the report's tables are the same numbers, and its study section shows them as printed
    report = tmp_path / "report.html"
    _cli("report", out, "--out", report, "--n-boot", "20", "--no-progress")
    check_every_number(tmp_path / "report_tables", expected)
    text = report.read_text()
    hdr = expected["study_main_style"].loc["hdr", "Common"]
    assert f"<td>{hdr:.2f}</td>" in text and "Sum Positive" in text and "Per photo, with intervals" in text


def test_our_groups_beside_the_published_ones(tmp_path):
    """With this package's labels, ours_* columns: the notebook's computation over the same rows, by our groups."""
    definition, additional = _write_current(tmp_path, seed=3)
    out = tmp_path / "OUT"
    import_flickruser([definition, additional], out, progress=False)
    df_definition = pd.read_csv(definition)
    df_definition["pid"] = df_definition["favimg_url"].str.extract(r"/(\d+)_")[0]
    ours = df_definition.drop_duplicates("pid").set_index("pid")["trend_group"].map({0: 0, 1: 2, 2: 1})  # another grouping
    write_table(out, "labels", pd.DataFrame({
        "photo_id": ours.index, "set": "train", "cluster_label": 0, "partition": [f"p{g}" for g in ours],
        "ci_score": 1.0 - ours.to_numpy() / 2, "trend_group": ours.to_numpy(),
    }))
    analyze(out, out=tmp_path / "analysis", n_boot=0, progress=False)
    # favorites.parquet is in (user, photo) order, the CSV in its own: the notebook's result does not depend on it
    assert check_every_number(tmp_path / "analysis", notebook(df_definition)) == 14 * 4 + 3 * 4 + 10 * 4 + 3 - 2
    by_ours = df_definition.assign(trend_group=df_definition["pid"].map(ours))
    check_every_number(tmp_path / "analysis", notebook(by_ours), prefix="ours_")
    published = pd.read_csv(tmp_path / "analysis" / "published.csv", index_col=0)
    theirs = df_definition.drop_duplicates("pid").set_index("pid")["trend_group"]
    assert published.loc["trend group: agreement %", "value"] == pytest.approx(100 * (ours == theirs.reindex(ours.index)).mean())


def test_older_single_file(tmp_path):
    """The older FlickrUser.csv: df_train = its set == 'train' rows, its own column names, capitalised emotions."""
    photos = _photos(seed=5)
    definition, additional, _ = _favourites(photos, seed=5)
    rows = pd.concat([definition.assign(set="train"), additional[additional["pid"].isin(photos["pid"])].assign(set="test")])
    d = rows.merge(photos, on="pid", how="left")
    test_rows = d["set"] == "test"
    old = pd.DataFrame({
        "user": d["user"], "img_id": d["pid"], "img_url": d["pid"].map(_url), "views": d["views"], "favorites": 2, "comments": 0,
        "upload_date": "2015-03-03", "img_owner_ispro": d["ispro"], "img_owner_occupation": d["occupation"],
        "main_feature": d["VILA_main_feature"], "quality_score": d["VILA_aesthetic_score"],
        "emotion_category": d["CLIP_emotion_main_category"].str.capitalize(), "set": d["set"],
        # a test row carries no published labels (its photo's come from the train rows)
        "ci_score": d["ci_score"].mask(test_rows), "cluster_label": d["cluster_label"].mask(test_rows),
        "partition": d["partition"].mask(test_rows), "group": d["trend_group"].mask(test_rows),
    })
    old.to_csv(tmp_path / "FlickrUser.csv", index=False)
    import_flickruser([tmp_path / "FlickrUser.csv"], tmp_path / "OUT", progress=False)
    assert set(read_table(tmp_path / "OUT", "photos")["set"]) == {"train"}  # every photo here is a train photo
    assert set(read_table(tmp_path / "OUT", "favorites")["source"]) == {"definition", "additional"}
    analyze(tmp_path / "OUT", out=tmp_path / "analysis", n_boot=0, progress=False)
    df = pd.read_csv(tmp_path / "FlickrUser.csv")
    df_train = df[df["set"] == "train"]
    assert check_every_number(tmp_path / "analysis", notebook(df_train, older=True)) == 14 * 4 + 3 * 4 + 10 * 4 + 3 - 2


def test_group_names_and_a_collection_imported_before_sources(tmp_path):
    """Group names ("common", ...) read as 0/1/2; favorites without a source column: every favourite, with a note."""
    definition, additional = _write_current(tmp_path, seed=7)
    named = pd.read_csv(definition)
    df_definition = named.copy()
    named["trend_group"] = np.array(GROUP_NAMES)[named["trend_group"]]
    named.to_csv(definition, index=False)
    out = tmp_path / "OUT"
    import_flickruser([definition], out, progress=False)
    analyze(out, out=tmp_path / "analysis", n_boot=0, progress=False)
    check_every_number(tmp_path / "analysis", notebook(df_definition))

    import_flickruser([definition, additional], out, progress=False)
    favorites = read_table(out, "favorites")
    write_table(out, "favorites", favorites.drop(columns="source"))  # as an older importer wrote it
    assert favorites["source"].notna().all() and read_table(out, "favorites")["source"].isna().all()
    tables = analyze(out, n_boot=0, progress=False)
    assert tables["study_rows"].loc["favourites"].sum() == favorites["photo_id"].isin(df_definition["favimg_url"].str.extract(r"/(\d+)_")[0]).sum()
    assert any("no source column" in n for n in tables["notes"]["note"])
