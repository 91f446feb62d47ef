"""One call that runs every analysis a collection (and optionally a model) allows.

Each part needs its own inputs: the study's style and emotion tables need
CLIP characteristics, the drivers need a model trained with metadata, the
taste analysis needs user heads and the collection's embeddings, the
comparison needs the published labels of an imported collection. A part
whose input is missing is skipped with a note saying what would enable it;
nothing else is affected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from interest.stages.analyze import compare, drivers, taste
from interest.stages.analyze import tables as T
from interest.core.collection import (
    has_table,
    read_embeddings,
    read_manifest,
    read_parquet_checked,
    write_csv_atomic,
)
from interest.core.errors import InterestError, not_a_model_bundle

PARTITIONS_FILE = "partitions.parquet"
# Photos sampled for the model-based parts; enough for stable means, bounded at paper scale.
MODEL_SAMPLE = 5000
PD_SAMPLE = 1000
PD_FEATURES = 6
# Raw metadata whose medians the study's readers expect to see per group.
METADATA_COLUMNS = ["views", "faves", "comments"]


@dataclass
class Analysis:
    """Everything computed about one collection: the tables, plus what the figures need."""

    root: Path
    frame: pd.DataFrame
    partitions: pd.DataFrame | None
    label_settings: dict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[tuple[str, str]] = field(default_factory=list)
    model: object | None = None
    # photo ids and (photos x users) deviations of the taste sample, for the user photo grids
    taste_photos: np.ndarray | None = None
    taste_deviations: np.ndarray | None = None
    # the labelled photos' ids and embeddings in the model's backbone (read once)
    embeddings: tuple[np.ndarray, np.ndarray] | None = None
    # the published labels and characteristics of an imported FlickrUser collection
    reference: pd.DataFrame | None = None
    # True when the collection has no labels of its own and ``frame`` holds the published ones
    published_only: bool = False

    def note(self, section: str, text: str) -> None:
        """Record why a part of the analysis was skipped or how to read it."""
        self.notes.append((section, text))


def analyze(
    root: str | os.PathLike,
    *,
    model: object | str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    progress: bool = True,
) -> dict[str, pd.DataFrame]:
    """Run the analysis of collection ``root``; return its tables and write them as CSV to ``out``.

    ``model`` is a model bundle directory or an :class:`~interest.InterestModel`;
    without it, the drivers are model-free correlations and there is no
    personal-taste analysis. Intervals are bootstrap intervals with
    ``n_boot`` replicates from ``seed``: the same inputs and seed give the
    same tables. The ``notes`` table lists skipped parts and why.
    """
    result = run_analysis(root, model=model, seed=seed, n_boot=n_boot, progress=progress)
    tables = {**result.tables, "notes": notes_table(result)}
    if out is not None:
        write_tables(tables, out)
    return tables


def run_analysis(
    root: str | os.PathLike,
    *,
    model: object | str | os.PathLike | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    progress: bool = True,
) -> Analysis:
    """Like :func:`analyze`, but returns the :class:`Analysis` the report and notebooks draw from."""
    from interest.core.progress import progress_bar

    root = Path(root)
    if not root.is_dir():
        raise InterestError(f"{root}: not a directory; give a collection directory")
    reference = compare.read_reference(root)
    published_only = not has_table(root, "labels") and reference is not None and compare.published_groups(reference).notna().any()
    if published_only:
        # an imported FlickrUser collection before `interest label`: analyse the study's own labels
        frame = T.photo_table(root, labels=compare.published_labels(reference))
        labels_info = {"source": f"the study's published labels ({compare.REFERENCE_FILE}); no labels.parquet yet"}
    else:
        frame = T.photo_table(root)
        labels_info = read_manifest(root).get("tables", {}).get("labels", {})
    result = Analysis(
        root=root, frame=frame, partitions=read_partitions(root), label_settings=dict(labels_info),
        reference=reference, published_only=published_only,
    )
    if published_only:
        result.note(
            "study", "no labels.parquet: trend groups and partitions are the study's published ones; run `interest embed` "
            "and `interest label` on this collection for its own, which then appear beside the published ones"
        )
    if result.reference is not None:
        for column in compare.fill_from_published(frame, result.reference):
            result.note("study", f"{column} taken from the published FlickrUser columns (this collection has no own {column})")
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    result.model = model
    steps = [_predictions, _notebook_tables, _study_tables, _characteristic_tables, _drivers, _taste, _published]
    for step in progress_bar(steps, desc="analyze", unit="part", enabled=progress, leave=False):
        step(result, seed=seed, n_boot=n_boot, progress=progress)
    return result


def load_model(path: str | os.PathLike):
    """Load a model bundle, naming the path when it is not one."""
    import interest

    if not Path(path).exists():
        raise not_a_model_bundle(path)
    return interest.load(path)


def read_partitions(root: Path) -> pd.DataFrame | None:
    """partitions.parquet beside labels.parquet, or None (older labels, another labeller)."""
    path = root / PARTITIONS_FILE
    if not path.is_file():
        return None
    parts = read_parquet_checked(path, required=["partition", "ci_score", "trend_group"])
    return parts.assign(partition=parts["partition"].astype(str))


def notes_table(result: Analysis) -> pd.DataFrame:
    """The notes as a table (section, note)."""
    return pd.DataFrame(result.notes, columns=["section", "note"])


def write_tables(tables: dict[str, pd.DataFrame], out: str | os.PathLike) -> Path:
    """Write each table as ``out/<name>.csv`` (atomically); returns ``out``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InterestError(f"{out}: exists and is not a directory; give a folder for the CSV tables")
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        keep_index = table.index.name is not None or not isinstance(table.index, pd.RangeIndex)
        write_csv_atomic(out / f"{name}.csv", table, index=keep_index)
    return out


# ---------------------------------------------------------------- parts


def _predictions(result: Analysis, *, seed: int, n_boot: int, progress: bool) -> None:
    """The model's CI score of every labelled photo with an embedding, as column ``ci_predicted``."""
    if result.model is None:
        return
    ids, emb = _embeddings_for(result, result.model, section="model")
    if ids is None:
        return
    result.embeddings = ids, emb
    scores = result.model.score_embeddings(emb)["ci_score"].to_numpy(dtype=float)
    result.frame["ci_predicted"] = pd.Series(scores, index=ids).reindex(result.frame.index)


def _notebook_tables(result: Analysis, *, seed: int, n_boot: int, progress: bool) -> None:
    """Tables 1 and 3 and the photographers' share exactly as the study's notebook computes them, ours beside them."""
    reference = result.reference
    if reference is None or compare.published_groups(reference).notna().sum() == 0:
        return
    from interest.core.collection import read_table

    favorites = read_table(result.root, "favorites", columns=["user_id", "photo_id", "source"], required=["user_id", "photo_id"])
    photos = read_table(result.root, "photos", columns=["photo_id", "owner_occupation"], required=["photo_id"])
    occupations = photos.set_index(photos["photo_id"].astype(str))["owner_occupation"] if "owner_occupation" in photos else None
    ours = None if result.published_only else result.frame
    tables = compare.study_tables(compare.study_rows(favorites, reference, ours, occupations))
    if not tables:
        result.note("study", f"{compare.REFERENCE_FILE} has published trend groups but no VILA or CLIP emotion columns")
        return
    result.tables.update(tables)
    if "study_photographers" not in tables:
        result.note("study", "no study_photographers: photos.parquet has no owner occupations")
    beside = "; the ours_* columns group the same rows by this package's trend groups" if ours is not None else ""
    rows = compare.STUDY_ROWS if compare.has_sources(favorites) else compare.ALL_FAVOURITES
    result.note("study", f"study_* tables: computed as the study's notebook does, {rows}{beside}")


def _study_tables(result: Analysis, *, seed: int, n_boot: int, progress: bool) -> None:
    frame, options = result.frame, {"n_boot": n_boot, "seed": seed}
    result.tables["groups"] = T.group_summary(frame, result.partitions)
    thin = result.tables["groups"].query("partitions < 5")
    if len(thin):
        result.note("groups", f"fewer than 5 partitions in {', '.join(thin.index)}: intervals that resample partitions are rough")
    for column, name in (("main_style", "main_style"), ("main_emotion", "main_emotion")):
        if column in frame and frame[column].notna().any():
            result.tables[name] = T.share_table(frame, column, **options)
        else:
            result.note(
                "study",
                f"no {column.replace('_', ' ')}: the collection's characteristics have no CLIP {column.split('_')[1]} scores "
                "(run `interest characterize` with a CLIP backbone, or --clip)",
            )
    aesthetic = T.aesthetic_column(frame)
    if aesthetic:
        result.tables["aesthetic_quartiles"] = T.quantile_table(frame, aesthetic, **options)
        if aesthetic == "aesthetic_proxy":
            result.note("study", "aesthetic quartiles use aesthetic_proxy, a perceptual formula, not a learned aesthetic model")
    else:
        result.note("study", "no aesthetic score: run `interest characterize` on this collection")
    categorical = [c for c in ("main_style", "main_emotion") if c in frame and frame[c].notna().any()]
    if categorical:
        result.tables["omnibus"] = T.omnibus_tests(frame, categorical)
    owner = T.binary_table(frame, {"owner is a photographer": "owner_is_photographer", "owner is PRO": "owner_ispro"}, **options)
    if len(owner):
        result.tables["owner"] = owner
    else:
        result.note("owners", "photos.parquet has no owner occupation or PRO status")
    present = [c for c in METADATA_COLUMNS if c in frame and frame[c].notna().any()]
    if present:
        result.tables["metadata"] = T.continuous_table(frame, present, **options)
    else:
        result.note("owners", "photos.parquet has no views, faves or comments")


def _characteristic_tables(result: Analysis, *, seed: int, n_boot: int, progress: bool) -> None:
    columns = T.characteristic_columns(result.frame)
    if not columns:
        result.note("characteristics", "no characteristics: run `interest characterize` on this collection")
        return
    result.tables["characteristics"] = T.continuous_table(result.frame, columns, n_boot=n_boot, seed=seed)


def _drivers(result: Analysis, *, seed: int, n_boot: int, progress: bool) -> None:
    frame = result.frame
    features = T.characteristic_columns(frame) + _metadata_feature_columns(frame)
    result.tables["correlations"] = drivers.correlations(frame, features)
    if result.model is None:
        result.note("drivers", "no model given: importance and partial dependence need one (--model)")
        return
    model = result.model
    if result.embeddings is None:
        result.note("drivers", "importance needs the collection's embeddings in the model's backbone (see the model card)")
        return
    ids, emb = result.embeddings
    if "metadata_model" not in model.capabilities:
        result.note("drivers", "the model was trained without metadata or characteristics: importance needs its full variant")
        return
    pick = taste.sample_photos(ids, MODEL_SAMPLE, seed)
    try:
        explanation = drivers.explain(model, frame, ids[pick], emb[pick])
    except ValueError as exc:  # a model newer than this analysis: say so rather than fail the whole report
        result.note("drivers", f"importance skipped: {exc}")
        return
    imp = drivers.importance(explanation)
    result.tables["importance"] = imp
    top = [f for f in imp.index if f != drivers.EMBEDDING][:PD_FEATURES]
    sub = taste.sample_photos(ids[pick], PD_SAMPLE, seed)
    result.tables["partial_dependence"] = drivers.partial_dependence(explanation, top, rows=sub)


def _taste(result: Analysis, *, seed: int, n_boot: int, progress: bool) -> None:
    model = result.model
    if model is None:
        result.note("taste", "no model given: personal taste needs a model with user heads (--model)")
        return
    users = list(model.users)
    if not users:
        result.note("taste", "the model has no user heads")
        return
    if result.embeddings is None:
        result.note("taste", "personal taste needs the collection's embeddings in the model's backbone (see the model card)")
        return
    ids, emb = result.embeddings
    pick = taste.sample_photos(ids, MODEL_SAMPLE, seed)
    ids, emb = ids[pick], emb[pick]
    dev = taste.deviations(model, users, emb, progress=progress)
    rows = result.frame.loc[ids]
    char_cols = T.characteristic_columns(result.frame) + _metadata_feature_columns(result.frame)
    char_corr = taste.characteristic_correlations(dev, users, rows[char_cols])
    part_means = taste.partition_means(dev, users, rows["partition"].to_numpy())
    favourites = _favourite_counts(result.root)
    summary = taste.user_summary(dev, users, favourites, char_corr, part_means)
    result.tables["taste_users"] = summary
    result.tables["taste_characteristics"] = char_corr
    result.tables["taste_spread"] = taste.spread_summary(summary, char_corr)
    result.taste_photos, result.taste_deviations = ids, dev


def _published(result: Analysis, *, seed: int, n_boot: int, progress: bool) -> None:
    reference = result.reference
    if reference is None:
        result.note("published", "no published labels (reference.parquet): only a collection imported from the FlickrUser CSVs has them")
        return
    if result.published_only:
        result.note("published", "the labels analysed are the published ones: run `interest label` to compare this package's own with them")
        return
    metrics, confusion = compare.compare_published(result.frame, reference)
    if metrics.empty:
        result.note("published", "reference.parquet shares no labelled photos with labels.parquet")
        return
    result.tables["published"] = metrics
    if len(confusion):
        result.tables["published_groups"] = confusion


# ---------------------------------------------------------------- helpers


def _embeddings_for(result: Analysis, model, section: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The labelled photos' embeddings in the model's backbone, or (None, None) with a note."""
    try:
        _, ids, emb = read_embeddings(result.root, model.backbone_id)
    except InterestError as exc:
        result.note(section, f"no embeddings for the model's backbone {model.backbone_id} ({exc})")
        return None, None
    keep = pd.Index(ids).isin(result.frame.index)
    if not keep.any():
        result.note(section, f"no labelled photo has an embedding of backbone {model.backbone_id}")
        return None, None
    return ids[keep], emb[keep]


def _metadata_feature_columns(frame: pd.DataFrame) -> list[str]:
    from interest.models.metadata import METADATA_FEATURES

    return [c for c in METADATA_FEATURES if c in frame and frame[c].notna().any() and frame[c].nunique() > 1]


def _favourite_counts(root: Path) -> pd.Series:
    from interest.core.collection import read_table

    favorites = read_table(root, "favorites", columns=["user_id", "photo_id"])
    return favorites["user_id"].astype(str).value_counts()
