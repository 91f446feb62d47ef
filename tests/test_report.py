"""The HTML report: written atomically, self-contained, every section present; the CLI commands."""

from __future__ import annotations

import re
import subprocess
import sys

import pandas as pd
import pytest
from test_analyze import make_collection, model_world
from typer.testing import CliRunner

from interest.stages.analyze import report
from interest.stages.analyze.report_html import SECTIONS
from interest.cli import app
from interest.core.errors import InterestError


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return make_collection(tmp_path_factory.mktemp("report_handmade"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return model_world(tmp_path_factory.getbasetemp())


def assert_self_contained(text: str) -> None:
    """No reference to anything outside the file: every image inline, no external src/href/url()/@import."""
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert not re.search(r"""url\(\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert "@import" not in text and "<script" not in text.lower() and "<link" not in text.lower()
    images = re.findall(r"<img\b[^>]*>", text)
    assert images, "the report has figures"
    for tag in images:
        assert re.search(r'src="data:image/(png|jpeg);base64,[A-Za-z0-9+/=]+"', tag), tag[:80]


def test_report_without_model_is_self_contained_with_every_section(collection, tmp_path):
    out = report(collection, out=tmp_path / "r.html", n_boot=100, progress=False)
    text = out.read_text(encoding="utf-8")
    assert_self_contained(text)
    for sid, title in SECTIONS:
        assert f'<section id="{sid}">' in text and f'href="#{sid}"' in text
    # the study's tables and their figures are in; the model's parts say how to get them
    for caption in ("Main style per trend group", "Main emotion per trend group", "aesthetic_score quartiles", "Owners per trend group", "Median views, faves and comments"):
        assert caption in text
    assert "interest report DATA --model MODEL" in text
    assert "@media print" in text
    # tables as CSV beside the report, equal to what the report shows
    style = pd.read_csv(tmp_path / "r_tables" / "main_style.csv", index_col=0)
    assert {"common", "interplay", "subjective", "delta", "delta_lo", "delta_hi", "real"} <= set(style.columns)
    assert f"{style.loc['hdr', 'common']:.1f}" in text
    # no temporary files left behind; same inputs and seed give the same bytes
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    again = report(collection, out=tmp_path / "again" / "r.html", n_boot=100, progress=False)
    assert again.read_bytes() == out.read_bytes()


def test_report_with_model_has_card_drivers_taste_and_photos(trained, tmp_path):
    root, bundle = trained
    out = report(root, model=bundle, out=tmp_path / "report.html", n_boot=100, progress=False)
    text = out.read_text(encoding="utf-8")
    assert_self_contained(text)
    assert "synthetic/d32" in text  # the backbone, in the model card
    for piece in ("Validation metrics", "Feature importance", "Partial dependence", "most personal users", "likes most compared with everyone", "Highest CI photos", "partitions with the highest CI"):
        assert piece in text, piece
    assert len(re.findall(r"<img\b", text)) >= 10
    for name in ("importance", "partial_dependence", "taste_users", "taste_spread"):
        assert (tmp_path / "report_tables" / f"{name}.csv").is_file()


def test_cli_analyze_and_report(collection, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["analyze", str(collection), "--out", str(tmp_path / "t"), "--n-boot", "50", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t" / "main_style.csv").is_file()
    result = runner.invoke(app, ["report", str(collection), "--out", str(tmp_path / "x.html"), "--n-boot", "50", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x.html").is_file()


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "from interest.cli import main; main()", "report", str(tmp_path / "missing")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing" in proc.stderr and "Traceback" not in proc.stderr
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "r.pdf")])
    assert isinstance(result.exception, InterestError) and ".html" in str(result.exception)
    result = CliRunner().invoke(app, ["analyze", str(tmp_path), "--model", str(tmp_path / "no-model")])
    assert isinstance(result.exception, InterestError) and "no-model" in str(result.exception)
