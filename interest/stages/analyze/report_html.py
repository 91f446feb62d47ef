"""The HTML report: one self-contained file a researcher can open offline, print or put in slides.

Figures and thumbnails are embedded as base64 data URIs and the style sheet
is inline, so the file refers to nothing outside itself (no CDN, no web
fonts). The tables are also written as CSV into ``<report>_tables/`` beside
the HTML. The file is written atomically and, for the same inputs and seed,
is the same byte for byte (no timestamps).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from interest.stages.analyze import plots
from interest.stages.analyze.analysis import Analysis, notes_table, run_analysis, write_tables
from interest.stages.analyze.tables import aesthetic_column, characteristic_columns
from interest.core.collection import read_table, write_text_atomic
from interest.core.errors import InterestError

# (id, title) of every section, in order; each is always present, with a note when its input is missing.
SECTIONS = [
    ("data", "Data"),
    ("model-card", "Model card"),
    ("trend-groups", "Trend groups"),
    ("study-tables", "The study's tables"),
    ("owners-metadata", "Owners and metadata"),
    ("characteristics", "Characteristics"),
    ("drivers", "What drives CI"),
    ("personal-taste", "Personal taste"),
    ("photos", "Photos"),
    ("published", "Comparison with the published labels"),
    ("method", "How to read this report"),
]
GRID_PHOTOS = 12
GRID_PARTITIONS = 4


def report(
    root: str | os.PathLike,
    *,
    model: object | str | os.PathLike | None = None,
    out: str | os.PathLike = "report.html",
    seed: int = 0,
    n_boot: int = 1000,
    progress: bool = True,
) -> Path:
    """Analyse collection ``root`` (and ``model``, a bundle path or InterestModel) into one HTML file.

    Writes ``out`` and its tables as CSV into ``<out stem>_tables/`` beside
    it; returns the path of the HTML file.
    """
    out = Path(out)
    if out.is_dir():
        raise InterestError(f"{out}: is a directory; give the report's file name, e.g. {out / 'report.html'}")
    model_path = Path(model) if isinstance(model, (str, os.PathLike)) else None
    result = run_analysis(root, model=model, seed=seed, n_boot=n_boot, progress=progress)
    tables_dir = out.with_name(f"{out.stem}_tables")
    write_tables({**result.tables, "notes": notes_table(result)}, tables_dir)
    body = _Builder(result, model_path, tables_dir.name).build()
    write_text_atomic(out, body)
    return out


class _Builder:
    """Assembles the sections of one report from an :class:`Analysis`."""

    def __init__(self, result: Analysis, model_path: Path | None, tables_dir: str):
        self.r = result
        self.t = result.tables
        self.model_path = model_path
        self.tables_dir = tables_dir

    def build(self) -> str:
        parts = [getattr(self, "_" + sid.replace("-", "_"))() for sid, _ in SECTIONS]
        nav = "".join(f'<li><a href="#{sid}">{html.escape(title)}</a></li>' for sid, title in SECTIONS)
        sections = "".join(
            f'<section id="{sid}"><h2>{html.escape(title)}</h2>{content}</section>' for (sid, title), content in zip(SECTIONS, parts)
        )
        name = html.escape(self.r.root.resolve().name)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>interest report: {name}</title>"
            f"<style>{CSS}</style></head><body><header><h1>What makes images commonly interesting</h1>"
            f"<p class=\"sub\">Collection <b>{name}</b>{self._model_line()} · tables as CSV in <code>{html.escape(self.tables_dir)}/</code></p>"
            f"{self._headline()}</header><nav><ol>{nav}</ol></nav><main>{sections}</main></body></html>\n"
        )

    # ------------------------------------------------------------ sections

    def _data(self) -> str:
        root, frame = self.r.root, self.r.frame
        counts = {"labelled photos": len(frame), "partitions": frame["partition"].nunique()}
        for name in ("users", "favorites"):
            try:
                counts[{"users": "users", "favorites": "favourites"}[name]] = len(read_table(root, name))
            except InterestError:
                pass
        if "set" in frame:
            counts.update({f"{s} photos": int((frame["set"] == s).sum()) for s in ("train", "test")})
        counts["with an image file"] = int(frame["path"].notna().sum()) if "path" in frame else 0
        rows = [(k, f"{v:,}") for k, v in counts.items()]
        settings = self.r.label_settings
        for key in ("source", "backbone", "commonality", "clusters_used", "partitions", "group_cuts", "group_cuts_source", "seed"):
            if key in settings:
                rows.append((f"labels: {key.replace('_', ' ')}", _plain(settings[key])))
        chars = characteristic_columns(frame)
        rows.append(("characteristics", ", ".join(chars) if chars else "none"))
        return _kv_table(rows) + self._notes("data")

    def _model_card(self) -> str:
        model = self.r.model
        if model is None:
            return _note("No model given: run <code>interest report DATA --model MODEL</code> for the model card, drivers and personal taste.")
        from interest.bundle.io import without_local_paths

        meta = without_local_paths(model.metadata)  # a report is shared: older bundles keep the collection's path
        features = meta.get("features", {})
        rows = [
            ("bundle", str(self.model_path) if self.model_path else getattr(model, "name", "")),
            ("backbone", f"{model.backbone_id} ({meta.get('backbone', {}).get('dim', '?')}-d)"),
            ("user heads", f"{len(model.users):,}"),
            ("trained on", _plain({k: v for k, v in meta.get("data", {}).items() if k != "fingerprint"})),
            ("data fingerprint", _plain(meta.get("data", {}).get("fingerprint", ""))),
            ("embedding features", _embedding_features(features)),
            ("metadata features", ", ".join(features.get("metadata", [])) or "none"),
            ("characteristics used", ", ".join(features.get("characteristics", [])) or "none"),
            ("label settings", _plain({k: v for k, v in meta.get("label_settings", {}).items() if k in ("commonality", "group_cuts", "clusters_used", "partitions", "seed")})),
            ("interest version", _plain(meta.get("interest_version", ""))),
        ]
        parts = [_kv_table(rows)]
        metrics = meta.get("metrics", {})
        if metrics:
            parts.append("<h3>Validation metrics (training split, model.json)</h3>" + _kv_table(_key_metrics(metrics)))
            parts.append(f"<details><summary>all validation metrics</summary>{_kv_table(_flatten(metrics), cls='compact')}</details>")
        evaluation = self._evaluation_metrics()
        if evaluation:
            path, text = evaluation
            parts.append(f"<h3>Held-out evaluation (<code>{html.escape(path.name)}</code>, <code>interest evaluate</code>)</h3><pre>{html.escape(text)}</pre>")
        return "".join(parts) + self._notes("model")

    def _trend_groups(self) -> str:
        parts = []
        if "groups" in self.t:
            parts.append(_df_html(self.t["groups"], caption="Size of each trend group"))
        if self.r.partitions is not None and "distinct_users" in self.r.partitions:
            parts.append(_figure(plots.users_per_partition(self.r.partitions), "The study's curve: distinct users per partition. The head is commonly interesting, the long tail subjectively."))
        if self.r.partitions is not None and {"x", "y", "n_photos"} <= set(self.r.partitions):
            parts.append(_figure(plots.partition_map(self.r.partitions), "Map of the partitions; nearby partitions have similar content."))
        if self.r.partitions is None:
            parts.append(_note("No partitions.parquet beside labels.parquet: re-run <code>interest label</code> for the curve and the map."))
        return "".join(parts) + self._notes("groups")

    def _study_tables(self) -> str:
        parts = self._notebook_tables()
        parts.append('<p>Share of each group\'s photos whose main style / main emotion is the category (percent), and aesthetic quartiles; Δ = common − subjective with its 95 % interval.</p>')
        if "main_style" in self.t:
            parts.append(_df_html(self.t["main_style"], caption="Main style per trend group (% of photos)"))
            parts.append(_figure(plots.delta_forest(self.t["main_style"], title="Main style: common − subjective"), "Filled points: real differences."))
        if "aesthetic_quartiles" in self.t:
            col = self.t["aesthetic_quartiles"].index.name
            parts.append(_df_html(self.t["aesthetic_quartiles"], caption=f"{col} quartiles per trend group"))
        if "main_emotion" in self.t:
            parts.append(_df_html(self.t["main_emotion"], caption="Main emotion per trend group (% of photos)"))
            parts.append(_figure(plots.delta_forest(self.t["main_emotion"], title="Main emotion: common − subjective"), "Filled points: real differences."))
        if "omnibus" in self.t:
            parts.append(_df_html(self.t["omnibus"], caption="Does the mix differ across the three groups at all?"))
        return "".join(parts) + self._notes("study")

    def _notebook_tables(self) -> list[str]:
        """The study's Tables 1 and 3 and photographers' shares as its notebook computes them (imported collections)."""
        if "study_rows" not in self.t:
            return []
        ours = any(str(c).startswith("ours_") for c in self.t["study_rows"].columns)
        parts = [
            "<h3>As the study's notebook computes them</h3><p>From the rows of the published FlickrUser_definition.csv (one "
            "row per user and favourited photo; favourites from FlickrUser_additional.csv are not among them), grouped by the "
            "published trend_group; shares and quartiles rounded as the notebook rounds them (<code>round(4) * 100</code>), "
            "Δ from the rounded numbers, no intervals, as in the notebook; – is a category the group never shows (the notebook's NaN)."
            + (" The <i>ours</i> columns group the same rows by this package's trend groups." if ours else "") + "</p>",
            _df_html(self.t["study_rows"], caption="Rows of these tables per group"),
        ]
        for name, caption in (("study_main_style", "Table 1: VILA main feature per trend group (% of rows)"),
                              ("study_aesthetic_quartiles", "Table 1: VILA aesthetic score × 100 per trend group"),
                              ("study_main_emotion", "Table 3: CLIP main emotion per trend group (% of rows)"),
                              ("study_photographers", "Owners who are photographers (% of rows: a photo counts once per user who favourited it)")):
            if name in self.t:
                parts.append(_df_html(self.t[name], caption=caption, decimals=2))
        parts.append("<h3>Per photo, with intervals (this package's view)</h3>")
        return parts

    def _owners_metadata(self) -> str:
        parts = []
        if "owner" in self.t:
            parts.append(_df_html(self.t["owner"], caption="Owners per trend group (% of photos, each photo once, with intervals; the notebook's share of rows is in the study's tables)"))
        if "metadata" in self.t:
            parts.append(_df_html(self.t["metadata"], caption="Median views, faves and comments per trend group"))
            parts.append('<p class="note">Flickr counts are skewed by the platform (the owner\'s audience, the photo\'s age): photos with the same CI differ by orders of magnitude in views.</p>')
        return "".join(parts) + self._notes("owners")

    def _characteristics(self) -> str:
        if "characteristics" not in self.t:
            return self._notes("characteristics") or _note("No characteristics in this collection.")
        table = self.t["characteristics"]
        key = list(table.index[:5])
        if "views" in self.r.frame:
            key.append("views")
        aesthetic = aesthetic_column(self.r.frame)
        if aesthetic and aesthetic not in key:
            key.insert(0, aesthetic)
        return (
            _figure(plots.group_distributions(self.r.frame, key), "The characteristics that separate the groups most (box: middle half; whiskers: 5-95 %).")
            + _df_html(table, caption="Median of each characteristic per trend group, sorted by effect size")
            + self._notes("characteristics")
        )

    def _drivers(self) -> str:
        parts = []
        if "importance" in self.t:
            parts.append(_figure(plots.importance_bars(self.t["importance"]), "Green: a higher value raises the predicted CI; orange: lowers it; grey: the embedding. Mean absolute LightGBM contribution (TreeSHAP) of each feature to the predicted CI of the model's full variant; the PCA components of the embedding and the ridge prediction are summed into one row."))
            parts.append(_df_html(self.t["importance"].head(20), caption="Feature importance (top 20)"))
        if "partial_dependence" in self.t and len(self.t["partial_dependence"]):
            parts.append(_figure(plots.partial_dependence(self.t["partial_dependence"]), "Partial dependence: the model's mean prediction as one feature varies over its 2-98 % range."))
        if "correlations" in self.t and len(self.t["correlations"]):
            parts.append(_df_html(self.t["correlations"].head(20), caption="Rank correlation with the CI score (model-free)"))
        return "".join(parts) + self._notes("drivers")

    def _personal_taste(self) -> str:
        if "taste_users" not in self.t:
            return self._notes("taste")
        summary = self.t["taste_users"]
        parts = [
            _figure(plots.taste_spread(summary), "Each point is a user; users with few favourites stay close to the common taste (their heads are shrunk)."),
            _df_html(self.t["taste_spread"], caption="Spread across users: correlation of a user's deviation with each characteristic"),
            _df_html(_taste_display(summary.head(15)), caption="The 15 most personal users (r: rank correlation of the user's deviation with the characteristic)"),
        ]
        grid = self._user_grid(summary)
        if grid:
            parts.append(grid)
        return "".join(parts) + self._notes("taste")

    def _photos(self) -> str:
        frame = self.r.frame
        if "path" not in frame or frame["path"].notna().sum() == 0:
            return _note("No image files in this collection (photos.path is empty): download them with <code>interest collect</code> to see photos here.")
        parts = []
        for title, ascending in (("Highest", False), ("Lowest", True)):
            sel = _spread_over_partitions(frame[frame["path"].notna()], ascending).head(GRID_PHOTOS)
            captions = [_ci_caption(row) for _, row in sel.iterrows()]
            fig = plots.photo_grid(self.r.root, list(sel["path"]), captions, title=f"{title} CI photos")
            if fig is not None:
                parts.append(_figure(fig, f"{title} CI photos of the collection, at most two per partition (CI: the label; pred: the model's score).", fmt="jpeg"))
        partitions = frame.groupby("partition", observed=True)["ci_score"].first().sort_values(ascending=False, kind="stable")
        for title, chosen in (("highest", list(partitions.index[:GRID_PARTITIONS])), ("lowest", list(partitions.index[::-1][:GRID_PARTITIONS]))):
            fig = plots.partition_grid(self.r.root, frame, chosen, title=f"Partitions with the {title} CI")
            if fig is not None:
                parts.append(_figure(fig, f"Sample photos of the {GRID_PARTITIONS} partitions with the {title} CI.", fmt="jpeg"))
        return "".join(parts) or _note("None of the image files could be read.")

    def _published(self) -> str:
        if "published" not in self.t:
            return self._notes("published")
        parts = [_df_html(self.t["published"], caption="This package's labels vs the study's published ones")]
        if "published_groups" in self.t:
            parts.append(_df_html(self.t["published_groups"], caption="Trend groups: ours (rows) vs published (columns), photos"))
        return "".join(parts) + self._notes("published")

    def _method(self) -> str:
        return (
            "<ul>"
            "<li><b>Trend groups</b> come from the CI score of each photo's partition: 0 common (liked by many distinct users), 1 interplay, 2 subjective.</li>"
            "<li><b>Δ</b> is common − subjective. Its 95 % interval is a percentile bootstrap that resamples whole partitions within each group "
            "(photos of one partition share their group, so they are not independent draws).</li>"
            "<li><b>Tests</b>: shares use a two-proportion z-test with Cohen's h (0.2 small, 0.5 medium, 0.8 large); continuous measures use "
            "Mann-Whitney U with the rank-biserial r = P(common &gt; subjective) − P(common &lt; subjective) (0.1 small, 0.3 medium, 0.5 large). "
            "p_holm is Holm-adjusted within each table.</li>"
            "<li><b>real</b> ✓: p_holm &lt; 0.05 <i>and</i> the interval excludes 0. Differences without it may be noise at this sample size.</li>"
            "<li><b>Contributions</b> are LightGBM's exact per-photo feature attributions (TreeSHAP), in CI units.</li>"
            "<li><b>Deviation</b>: a user head's personal score minus the common score, in CI units.</li>"
            "</ul>" + self._all_notes()
        )

    # ------------------------------------------------------------ helpers

    def _headline(self) -> str:
        """One sentence a reader sees first: the largest real differences of each kind."""
        findings = []
        for name, verb, unit in (("main_style", "more", " points"), ("main_emotion", "more", " points"), ("characteristics", "higher", "")):
            table = self.t.get(name)
            if table is None or "real" not in table:
                continue
            real = table[table["real"].fillna(False).astype(bool)]
            largest = real.iloc[np.argsort(-real["delta"].abs().to_numpy(), kind="stable")[:2]]
            if name == "characteristics":  # their deltas have different units: take the largest effect sizes
                largest = real.head(2)
            for label, row in largest.iterrows():
                side = "common" if row["delta"] > 0 else "subjective"
                findings.append(f"{verb} <b>{html.escape(str(label).replace('_', ' '))}</b> in {side} photos (Δ {row['delta']:+.3g}{unit})")
        if not findings:
            return ""
        return '<p class="headline">Real differences: ' + "; ".join(findings) + ".</p>"

    def _model_line(self) -> str:
        if self.r.model is None:
            return ""
        return f" · model <b>{html.escape(self.model_path.name if self.model_path else getattr(self.r.model, 'name', 'model'))}</b> ({html.escape(self.r.model.backbone_id)})"

    def _evaluation_metrics(self) -> tuple[Path, str] | None:
        """metrics.json of `interest evaluate`, kept in the bundle or beside it (as the demo does), as text."""
        from interest.stages.evaluate import format_metrics

        if self.model_path is None:
            return None
        for path in (self.model_path / "metrics.json", self.model_path.parent / "metrics.json"):
            if path.is_file():
                try:
                    return path, format_metrics(json.loads(path.read_text(encoding="utf-8")))
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.r.note("model", f"{path}: not the output of `interest evaluate`; left out")
                    return None
        return None

    def _user_grid(self, summary: pd.DataFrame) -> str:
        r = self.r
        if r.taste_deviations is None or "path" not in r.frame:
            return ""
        # the most personal user among the active ones: a head fitted on a handful of favourites says little
        active = summary[summary["favourites"] >= summary["favourites"].quantile(0.5)]
        user = (active if len(active) else summary).index[0]
        col = list(r.tables["taste_characteristics"].index).index(user)
        dev = r.taste_deviations[:, col]
        paths = r.frame.loc[r.taste_photos, "path"].to_numpy()
        order = np.argsort(-dev, kind="stable")
        parts = []
        for title, idx in (("most", order), ("least", order[::-1])):
            idx = [i for i in idx if isinstance(paths[i], str)][:6]
            fig = plots.photo_grid(r.root, [paths[i] for i in idx], [f"dev {dev[i]:+.3f}" for i in idx], title=f"User {user}: {title} preferred relative to the common model", ncols=6)
            if fig is not None:
                parts.append(_figure(fig, f"Photos user {html.escape(str(user))} likes {title} compared with everyone (deviation in CI units).", fmt="jpeg"))
        return "".join(parts)

    def _notes(self, section: str) -> str:
        return "".join(_note(html.escape(text)) for sec, text in self.r.notes if sec == section)

    def _all_notes(self) -> str:
        if not self.r.notes:
            return ""
        items = "".join(f"<li><b>{html.escape(sec)}</b>: {html.escape(text)}</li>" for sec, text in self.r.notes)
        return f"<h3>Notes</h3><ul>{items}</ul>"


# ---------------------------------------------------------------- HTML pieces


def _taste_display(summary: pd.DataFrame) -> pd.DataFrame:
    """The per-user summary in fewer, readable columns: "brightness (+0.21)"."""
    out = summary[["favourites", "deviation_sd"]].copy()
    pairs = (("likes_more", "likes_more_r", "+.2f"), ("likes_less", "likes_less_r", "+.2f"),
             ("top_partition", "top_partition_deviation", "+.3f"), ("bottom_partition", "bottom_partition_deviation", "+.3f"))
    for col, value, fmt in pairs:
        if col in summary:
            out[col] = [f"{name} ({v:{fmt}})" if isinstance(name, str) else "–" for name, v in zip(summary[col], summary[value])]
    return out


def _spread_over_partitions(frame: pd.DataFrame, ascending: bool, per_partition: int = 2) -> pd.DataFrame:
    """Photos ordered by CI (then the model's score), at most ``per_partition`` from each partition.

    Every photo of a partition shares its CI, so a plain top list would show one partition only.
    """
    keys = ["ci_score"] + (["ci_predicted"] if "ci_predicted" in frame else [])
    ordered = frame.sort_values(keys, ascending=ascending, kind="stable")
    return ordered[ordered.groupby("partition", observed=True).cumcount() < per_partition]


def _ci_caption(row: pd.Series) -> str:
    if "ci_predicted" in row and pd.notna(row["ci_predicted"]):
        return f"CI {row['ci_score']:.2f} · pred {row['ci_predicted']:.2f}"
    return f"CI {row['ci_score']:.2f}"


def _figure(fig, caption: str, *, fmt: str = "png") -> str:
    """A matplotlib figure as an embedded <figure> (PNG for charts, JPEG for photo grids)."""
    buffer = io.BytesIO()
    options = {"pil_kwargs": {"quality": 82}} if fmt == "jpeg" else {"metadata": {"Software": None}}
    fig.savefig(buffer, format=fmt, dpi=plots.DPI, **options)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<figure><img src="data:image/{fmt};base64,{data}" alt="{html.escape(caption)}"><figcaption>{caption}</figcaption></figure>'


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _kv_table(rows: list[tuple[str, str]], cls: str = "kv") -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<table class="{cls}">{body}</table>'


def _df_html(df: pd.DataFrame, *, caption: str, decimals: int | None = None) -> str:
    """A DataFrame as an HTML table; rows found real are bold, numbers rounded for reading.

    ``decimals``: every float with this many decimals instead (the study's
    tables, whose numbers are shown as its notebook prints them).
    """
    index_name = df.index.name or ""
    head = f"<th>{html.escape(str(index_name).replace('_', ' '))}</th>" + "".join(f"<th>{html.escape(_header(c))}</th>" for c in df.columns)
    rows = []
    real_at = list(df.columns).index("real") if "real" in df.columns else None
    for label, *values in df.itertuples(name=None):  # per-column types kept (iterrows would make ints floats)
        real = real_at is not None and values[real_at] is not pd.NA and bool(values[real_at])
        cells = "".join(f"<td>{html.escape(_cell(c, v, decimals))}</td>" for c, v in zip(df.columns, values))
        rows.append(f'<tr{" class=real" if real else ""}><th>{html.escape(str(label).replace("_", " "))}</th>{cells}</tr>')
    return f'<table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _header(column: object) -> str:
    names = {"delta": "Δ", "delta_lo": "Δ low", "delta_hi": "Δ high", "share_%": "share %", "p_holm": "p (Holm)", "real": "real"}
    return names.get(str(column), str(column).replace("_", " "))


def _cell(column: object, value: object, decimals: int | None = None) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "✓" if value else ""
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)) and decimals is not None:
        return f"{float(value):.{decimals}f}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if str(column) in ("p", "p_holm"):
            return "<0.001" if v < 0.001 else f"{v:.3f}"
        if v == 0:
            return "0"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(value)


def _plain(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    return str(value)


def _embedding_features(features: dict) -> str:
    """ "32 PCA components + ridge, prototype": what the app model sees of the embedding."""
    app = [str(f) for f in features.get("app", [])]
    stacked = [f for f in app if not f.startswith("pca_")]
    n_pca = len(app) - len(stacked) if app else features.get("pca_components", "?")
    return f"{n_pca} PCA components" + (f" + first-level predictions: {', '.join(stacked)}" if stacked else "")


def _key_metrics(metrics: dict) -> list[tuple[str, str]]:
    """The few validation figures a reader needs, in words; the rest stay in the details."""
    rows = []
    common = metrics.get("common", {})
    for variant in ("app", "full"):
        m = common.get(variant)
        if m and "spearman" in m:
            rows.append((f"CI, {variant} model", f"Spearman {m['spearman']:.3f}, MAE {m.get('mae', float('nan')):.3f} on {m.get('n_validation', '?')} validation photos"))
    for name, m in common.items():
        if name not in ("app", "full") and isinstance(m, dict) and "spearman" in m:
            rows.append((f"CI, {name} alone (first level)", f"Spearman {m['spearman']:.3f}, MAE {m.get('mae', float('nan')):.3f}"))
    g = metrics.get("groups", {})
    if "accuracy" in g:
        rows.append(("trend groups", f"accuracy {g['accuracy']:.3f}, macro-F1 {g.get('macro_f1', float('nan')):.3f}, "
                     f"calibration error {g.get('expected_calibration_error', float('nan')):.3f}"))
    h = metrics.get("heads", {})
    for bucket, b in h.get("buckets", {}).items():
        if "auc_common" in b:
            rows.append((f"user heads, {bucket} favourites", f"AUC {b['auc_common']:.3f} → {b.get('auc_with_head', float('nan')):.3f} with the head ({b.get('n_users', '?')} users)"))
    return rows or _flatten(metrics)


def _flatten(d: dict, prefix: str = "", depth: int = 4) -> list[tuple[str, str]]:
    """Nested metrics as (dotted key, value) rows; long lists are summarised."""
    rows: list[tuple[str, str]] = []
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and depth > 1:
            rows.extend(_flatten(value, f"{name} · ", depth - 1))
        elif isinstance(value, (list, tuple)) and len(value) > 6:
            rows.append((name, f"[{len(value)} values]"))
        else:
            rows.append((name, _plain(value)))
    return rows


CSS = """
:root{--ink:#1d2327;--muted:#5f6b73;--line:#d9dee2;--common:#1b9e77;--subjective:#d95f02;--bg:#fbfbfa}
*{box-sizing:border-box}
body{margin:0;font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--ink);background:var(--bg);line-height:1.45;font-size:15px}
header{padding:28px 40px 12px;border-bottom:3px solid var(--common);background:#fff}
h1{margin:0 0 4px;font-size:26px}
h2{font-size:20px;margin:0 0 12px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:16px;margin:18px 0 6px}
.sub{color:var(--muted);margin:0 0 6px}
.headline{font-size:16px;margin:8px 0 4px;max-width:70em}
nav{padding:8px 40px;background:#fff;border-bottom:1px solid var(--line)}
nav ol{margin:0;padding:0;list-style:none;display:flex;flex-wrap:wrap;gap:4px 18px;font-size:14px}
nav a{color:var(--common);text-decoration:none}
main{padding:8px 40px 40px;max-width:1200px}
section{overflow-x:auto;margin:26px 0;padding:18px 22px;background:#fff;border:1px solid var(--line);border-radius:6px}
table{border-collapse:collapse;margin:10px 0 16px;font-size:13px;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:4px 0;color:var(--ink)}
th,td{padding:3px 9px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
thead th{border-bottom:2px solid var(--ink);font-weight:600}
tbody th,table.kv th,table.compact th{text-align:left;font-weight:500}
table.kv td,table.compact td{text-align:left;white-space:normal}
tr.real td,tr.real th{font-weight:700}
figure{margin:12px 0 18px;break-inside:avoid;page-break-inside:avoid}
figure img{max-width:100%;height:auto;border:1px solid var(--line)}
figcaption{color:var(--muted);font-size:13px;margin-top:4px;max-width:60em}
.note{color:var(--muted);font-style:italic;border-left:3px solid var(--line);padding-left:8px}
pre{font-size:12px;background:#f6f7f8;padding:8px;overflow-x:auto}
details summary{cursor:pointer;color:var(--muted);font-size:13px}
code{font-size:13px;background:#f1f3f4;padding:0 3px;border-radius:3px}
@media print{
 @page{size:A4;margin:14mm}
 body{background:#fff;font-size:11pt}
 nav{display:none}
 header{padding:0 0 8px;border-bottom-width:2px}
 main{padding:0;max-width:none}
 section{border:none;padding:0;margin:14px 0;overflow:visible}
 h2{break-after:avoid;page-break-after:avoid}
 table,figure{break-inside:avoid;page-break-inside:avoid}
 table{font-size:9pt}
 a{color:inherit;text-decoration:none}
}
"""
