"""Matplotlib figures of the analysis, readable at a glance.

Every function returns a :class:`matplotlib.figure.Figure` built without
pyplot's global state (so it is safe in scripts, threads and notebooks; in
a notebook, display it by making it the cell's last expression) with
labelled axes and units. The trend groups always have the same colours.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from interest.stages.analyze.drivers import EMBEDDING
from interest.stages.analyze.tables import GROUPS

GROUP_COLOURS = {"common": "#1b9e77", "interplay": "#7570b3", "subjective": "#d95f02"}
_COLOURS = [GROUP_COLOURS[g] for g in GROUPS]
# Heavy-tailed counts: shown on a log axis.
_LOG_COLUMNS = {"views", "faves", "comments"}
THUMB = 160  # thumbnail edge in pixels for image grids


def users_per_partition(partitions: pd.DataFrame, *, title: str | None = None) -> Figure:
    """The study's curve: distinct users per partition, in descending order, coloured by trend group.

    Dashed lines mark where the interplay and the subjective groups begin.
    """
    parts = partitions.sort_values(["distinct_users", "ci_score"], ascending=False, kind="stable").reset_index(drop=True)
    fig = Figure(figsize=(8, 3.6), layout="constrained")
    ax = fig.add_subplot()
    rank = np.arange(1, len(parts) + 1)
    colours = [_COLOURS[int(g)] for g in parts["trend_group"]]
    ax.bar(rank, parts["distinct_users"], width=1.0, color=colours, edgecolor="none")
    for g in range(1, len(GROUPS)):
        start = np.flatnonzero(parts["trend_group"].to_numpy() >= g)
        if len(start):
            ax.axvline(start[0] + 0.5, color="0.25", linestyle="--", linewidth=1)
            ax.annotate(f"{GROUPS[g]} →", (start[0] + 0.5, ax.get_ylim()[1] * 0.95), xytext=(3, 0), textcoords="offset points", fontsize=9, va="top")
    ax.set_xlabel("partition rank (most distinct users first)")
    ax.set_ylabel("distinct users (count)")
    ax.set_xlim(0.5, len(parts) + 0.5)
    ax.set_title(title or "Distinct users who favourited a photo of each partition")
    _group_legend(ax)
    return fig


def partition_map(partitions: pd.DataFrame, *, title: str | None = None) -> Figure:
    """A 2-D map of the partitions (centroid coordinates x, y) coloured by CI score, sized by photos."""
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.add_subplot()
    size = 15 + 200 * np.sqrt(partitions["n_photos"] / partitions["n_photos"].max())
    points = ax.scatter(partitions["x"], partitions["y"], c=partitions["ci_score"], s=size, cmap="viridis", edgecolors="0.2", linewidths=0.4)
    fig.colorbar(points, ax=ax, label="CI score (share of users)")
    top = partitions.nlargest(min(5, len(partitions)), "ci_score")
    for _, row in top.iterrows():
        ax.annotate(_short_partition(row["partition"]), (row["x"], row["y"]), xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel("map x (PCA of partition centroids, unitless)")
    ax.set_ylabel("map y (unitless)")
    ax.set_title(title or "Partitions: nearby = similar content; colour = CI, size = photos")
    return fig


def group_distributions(frame: pd.DataFrame, columns: list[str], *, ncols: int = 3) -> Figure:
    """Box plots of each column per trend group (middle 50 % box, median line, 5-95 % whiskers)."""
    nrows = max(1, int(np.ceil(len(columns) / ncols)))
    fig = Figure(figsize=(3.3 * min(ncols, max(1, len(columns))), 2.8 * nrows), layout="constrained")
    for i, col in enumerate(columns):
        ax = fig.add_subplot(nrows, min(ncols, len(columns)), i + 1)
        data = [frame.loc[frame["trend_group"] == g, col].dropna().to_numpy(dtype=float) for g in range(len(GROUPS))]
        keep = [j for j, d in enumerate(data) if len(d)]
        boxes = ax.boxplot([data[j] for j in keep], whis=(5, 95), showfliers=False, patch_artist=True, widths=0.6)
        for patch, j in zip(boxes["boxes"], keep):
            patch.set_facecolor(_COLOURS[j])
            patch.set_alpha(0.75)
        for median in boxes["medians"]:
            median.set_color("black")
        ax.set_xticks(range(1, len(keep) + 1), [GROUPS[j] for j in keep], fontsize=8)
        if col in _LOG_COLUMNS:
            ax.set_yscale("symlog", linthresh=1)
            ax.set_ylim(bottom=0)
        ax.set_ylabel(_unit_label(col), fontsize=9)
        ax.set_title(col.replace("_", " "), fontsize=10)
    fig.suptitle("Key characteristics per trend group", fontsize=11)
    return fig


def delta_forest(table: pd.DataFrame, *, unit: str = "percentage points", title: str | None = None) -> Figure:
    """Each row's common − subjective difference with its interval; rows found real are solid."""
    rows = table.dropna(subset=["delta"]).iloc[::-1]
    fig = Figure(figsize=(6.4, 0.9 + 0.32 * max(len(rows), 1)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    real = rows["real"].fillna(False).to_numpy(dtype=bool) if "real" in rows else np.zeros(len(rows), bool)
    colours = np.where(rows["delta"] > 0, GROUP_COLOURS["common"], GROUP_COLOURS["subjective"])
    err = np.vstack([rows["delta"] - rows["delta_lo"], rows["delta_hi"] - rows["delta"]]).clip(min=0)
    for yi, d, e0, e1, c, r in zip(y, rows["delta"], err[0], err[1], colours, real):
        ax.errorbar(d, yi, xerr=[[e0], [e1]], fmt="o", color=c, mfc=c if r else "white", capsize=3, lw=1.4)
    ax.axvline(0, color="0.3", linewidth=0.8)
    ax.set_yticks(y, [str(i).replace("_", " ") for i in rows.index], fontsize=9)
    ax.set_xlabel(f"common − subjective ({unit}); filled = real difference")
    ax.set_title(title or "Difference between commonly and subjectively interesting photos", fontsize=10)
    return fig


def importance_bars(importance: pd.DataFrame, *, top: int = 15) -> Figure:
    """Mean |contribution| of each characteristic and metadata feature to the predicted CI (top ``top``).

    The embedding's row usually dwarfs the rest, so it is left out of the
    bars and stated in the title.
    """
    rows = importance.drop(index=EMBEDDING, errors="ignore").head(top).iloc[::-1]
    fig = Figure(figsize=(6.4, 0.9 + 0.3 * max(len(rows), 1)), layout="constrained")
    ax = fig.add_subplot()
    direction = rows["direction"].to_numpy(dtype=float)
    colours = np.where(np.isnan(direction), "0.6", np.where(direction >= 0, GROUP_COLOURS["common"], GROUP_COLOURS["subjective"]))
    ax.barh(np.arange(len(rows)), rows["mean_abs_contribution"], color=colours)
    ax.set_yticks(np.arange(len(rows)), [str(i).replace("_", " ") for i in rows.index], fontsize=9)
    ax.set_xlabel("mean |contribution| to predicted CI score (CI units)")
    title = "What drives the predicted CI score, besides content"
    if EMBEDDING in importance.index and "share_%" in importance:
        title += f"\n(the embedding itself: {importance.loc[EMBEDDING, 'share_%']:.0f} % of all contributions)"
    ax.set_title(title, fontsize=10)
    return fig


def partial_dependence(curves: pd.DataFrame, *, ncols: int = 3) -> Figure:
    """Partial-dependence curves: the model's mean predicted CI as one feature varies."""
    features = list(dict.fromkeys(curves["feature"]))
    nrows = max(1, int(np.ceil(len(features) / ncols)))
    width = min(ncols, max(1, len(features)))
    fig = Figure(figsize=(3.3 * width, 2.6 * nrows), layout="constrained")
    first = None
    for i, feat in enumerate(features):
        # one y scale for all panels, so that a flat curve looks flat next to a steep one
        ax = fig.add_subplot(nrows, width, i + 1, sharey=first)
        first = first or ax
        curve = curves[curves["feature"] == feat]
        ax.plot(curve["value"], curve["mean_prediction"], color=GROUP_COLOURS["common"], lw=2)
        ax.set_xlabel(_unit_label(feat), fontsize=9)
        ax.set_ylabel("mean predicted CI", fontsize=9)
        ax.set_title(feat.replace("_", " "), fontsize=10)
    fig.suptitle("Partial dependence of the predicted CI score", fontsize=11)
    return fig


def taste_spread(spread: pd.DataFrame) -> Figure:
    """How far users' heads move away from the common taste: one point per user."""
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(spread["favourites"].clip(lower=1), spread["deviation_sd"], s=14, color=GROUP_COLOURS["interplay"], alpha=0.7, edgecolors="none")
    ax.set_xscale("log")
    ax.set_xlabel("user's favourites in the collection (count, log scale)")
    ax.set_ylabel("spread of the user's deviation\nover photos (SD, CI units)")
    ax.set_title("Personal taste: how far each user departs from the common model", fontsize=10)
    return fig


def photo_grid(
    root: str | os.PathLike,
    paths: list[str | None],
    captions: list[str],
    *,
    title: str,
    ncols: int = 6,
) -> Figure | None:
    """A grid of thumbnails (paths relative to collection ``root``) with a caption under each.

    Photos whose file is missing or unreadable are left out; None when none
    of them can be shown (a collection without downloaded images).
    """
    cells = [(t, c) for t, c in ((thumbnail(root, p), c) for p, c in zip(paths, captions)) if t is not None]
    if not cells:
        return None
    ncols = min(ncols, len(cells))
    rows = [cells[i : i + ncols] for i in range(0, len(cells), ncols)]
    return _image_figure(_montage([("", row) for row in rows], ncols), title)


def partition_grid(
    root: str | os.PathLike, frame: pd.DataFrame, partitions: list[str], *, per_partition: int = 6, title: str
) -> Figure | None:
    """One row of thumbnails per partition, labelled with the partition, its CI and group."""
    rows = []
    for part in partitions:
        photos = frame[frame["partition"] == part].sort_index().head(per_partition * 3)
        images = [im for im in (thumbnail(root, p) for p in photos["path"]) if im is not None][:per_partition]
        if images:
            first = photos.iloc[0]
            label = f"{_short_partition(part)}\nCI {first['ci_score']:.2f}\n{first['group']}"
            rows.append((label, [(im, "") for im in images]))
    if not rows:
        return None
    return _image_figure(_montage(rows, per_partition), title)


def thumbnail(root: str | os.PathLike, path: str | None, size: int = THUMB) -> np.ndarray | None:
    """The image at ``path`` (relative to ``root``) shrunk to fit ``size`` px, as an array; None if unreadable.

    None too when ``path`` leads outside the collection (absolute, ``..``, a
    link out) or is not a regular file: a shared report never shows a picture
    from the disk of whoever renders it, and a FIFO never hangs it.
    """
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    from interest.core.safe_files import MAX_IMAGE_BYTES, UnsafeFile, read_file

    if path is None or (isinstance(path, float) and np.isnan(path)) or pd.isna(path):
        return None
    try:
        data = read_file(str(path), max_bytes=MAX_IMAGE_BYTES, roots=[root])
    except UnsafeFile:
        return None
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            img.thumbnail((size, size))
            return np.asarray(img)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


_PAD = 6  # pixels between thumbnails
DPI = 110  # resolution of every figure; pictures of photos are drawn pixel for pixel at it


def _montage(rows: list[tuple[str, list[tuple[np.ndarray, str]]]], ncols: int) -> np.ndarray:
    """Thumbnails pasted into one picture: rows of (row label, [(image, caption)]).

    One picture instead of one matplotlib axes per photo: drawing stays fast
    for large grids, and the thumbnails are shown pixel for pixel.
    """
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=12)
    label_w = 110 if any(label for label, _ in rows) else 0
    caption_h = 18 if any(c for _, row in rows for _, c in row) else 0
    cell_w, cell_h = THUMB + _PAD, THUMB + caption_h + _PAD
    canvas = Image.new("RGB", (label_w + ncols * cell_w + _PAD, len(rows) * cell_h + _PAD), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, cells) in enumerate(rows):
        top = _PAD + r * cell_h
        if label:
            draw.multiline_text((label_w - _PAD, top + THUMB // 2), label, fill="black", font=font, anchor="rm", align="right")
        for c, (img, caption) in enumerate(cells):
            left = label_w + _PAD + c * cell_w
            h, w = img.shape[:2]
            canvas.paste(Image.fromarray(img), (left + (THUMB - w) // 2, top + (THUMB - h) // 2))
            if caption:
                draw.text((left + THUMB // 2, top + THUMB + 3), caption, fill="black", font=font, anchor="mt")
    return np.asarray(canvas)


def _image_figure(picture: np.ndarray, title: str) -> Figure:
    """A figure that shows ``picture`` at its own resolution under ``title``."""
    h, w = picture.shape[:2]
    title_px = 28
    fig = Figure(figsize=(w / DPI, (h + title_px) / DPI), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, h / (h + title_px)))
    ax.imshow(picture, interpolation="none")
    ax.set_axis_off()
    fig.suptitle(title, fontsize=10, y=1 - 4 / (h + title_px), va="top")
    return fig


def _short_partition(label: object) -> str:
    """A partition label cut to its first clusters ("10.31.40.86.98" -> "10.31.40…")."""
    parts = str(label).split(".")
    return ".".join(parts[:3]) + ("…" if len(parts) > 3 else "")


def _group_legend(ax) -> None:
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=GROUP_COLOURS[g], label=g) for g in GROUPS], frameon=False, fontsize=9, loc="upper right")


def _unit_label(column: str) -> str:
    if column in _LOG_COLUMNS:
        return f"{column} (count, log scale)"
    if column.startswith("log_"):
        return f"{column} (log(1 + count))"
    if column == "photo_age_days":
        return "photo age (days)"
    if column == "faves_per_view":
        return "faves per view (ratio)"
    if column.startswith(("style_", "emotion_")):
        return f"{column} (probability)"
    return f"{column} (score)"
