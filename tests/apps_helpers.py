"""Shared by the photo-app and bundle tests: a small model that can score real image files, and a tiny bundle."""

from __future__ import annotations

import sys
from pathlib import Path


def train_image_model(
    root: Path, *, backbone_id: str = "perceptual/v1", n_users: int = 40, n_photos: int = 240, n_topics: int = 6,
    clusters: int = 19, seed: int = 5,
):
    """Render a small world into ``root``, embed it with ``backbone_id``, label it, train; returns the model.

    The bundle is at ``root / "model"``; the images under ``root / "images"``. With the defaults the
    user heads are not zero (smaller worlds may give heads too weak to keep).
    """
    from interest.pipeline.local import embed_collection
    from interest.stages.labels import label_collection
    from interest.stages.train import train_model
    from interest.synthetic.world import generate_world

    generate_world(root, n_users=n_users, n_photos=n_photos, n_topics=n_topics, render=True, seed=seed, progress=False)
    embed_collection(root, backbone_id=backbone_id, workers=0, progress=False)
    label_collection(root, clusters=clusters, progress=False)
    return train_model(root, root / "model", progress=False)


def train_tiny_bundle(root: Path, dim: int = 16) -> Path:
    """A bundle of a tiny embeddings-only world (``dim``-d, app and full LightGBM models) under ``root``: fast to
    copy, load, score and save. Returns the bundle's path."""
    from interest.stages.labels import label_collection
    from interest.stages.train import TrainConfig, train_model
    from interest.synthetic.world import generate_world

    generate_world(root / "world", n_users=40, n_photos=300, n_topics=6, render=False, embed_dim=dim, seed=0, progress=False)
    label_collection(root / "world", clusters=10, seed=0, progress=False)
    config = TrainConfig(num_threads=1, lgb_num_boost_round=8, pca_components=4, head_components=8)
    train_model(root / "world", root / "model", config=config, progress=False)
    return root / "model"


def assert_benchmarks_rows(heading: str, rows: list[tuple[str, str]], what: str) -> None:
    """BENCHMARKS.md's two-column table under ``heading`` holds every (sent, outcome) row of ``rows``."""
    text = (Path(__file__).resolve().parents[1] / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert heading in text, f"BENCHMARKS.md has no '{heading}' section"
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and len(cells) == 2:
            table[cells[0]] = cells[1]
    expected = "\n".join(f"| {sent} | {outcome} |" for sent, outcome in rows)
    for sent, outcome in rows:
        assert table.get(sent) == outcome, f"BENCHMARKS.md's {what} rows are stale; they should read:\n{expected}"


def run_cli(monkeypatch, capsys, *args: object) -> tuple[int, str, str]:
    """``interest ARGS`` in this process, through the console entry point: (exit status, stdout, stderr)."""
    from interest.cli import main

    monkeypatch.setattr(sys, "argv", ["interest", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
