"""README.md's quickstart, run as written: its own code blocks, parsed, with the synthetic world in place of Flickr.

Only what cannot run offline is replaced, each with its reason (``OFFLINE``);
a README edit that the replacements no longer match fails this test, so the
quickstart cannot drift from what works. Not run here: `make demo` (the
whole demo takes minutes; its stages are these commands) and `pip install`
(the package is installed). docs/analysis.md's notebook command is run as
written by tests/test_notebooks.py.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from interest.core.collection import read_table
from interest.synthetic.server import serve_world

REPO = Path(__file__).resolve().parents[1]
INTEREST = Path(sys.executable).parent / "interest"
KEY = "readme-key"

# (what the README says, what runs here instead, why)
OFFLINE = [
    ("interest collect data/flickr --users-file seeds.txt",
     "interest collect data/flickr --users-file seeds.txt --rest-url {rest_url} --image-host {image_host} --rate 0",
     "the local Flickr-compatible server stands in for Flickr (and has no hourly quota)"),
    ("--model ViT-B-32 --pretrained laion2b_s34b_b79k", "--backbone perceptual/v1",
     "CLIP weights cannot be downloaded here; the weight-free backbone keeps the test fast (open_clip with "
     "random weights runs in tests/test_embed.py and test_backbones.py)"),
    ("--user 12345678@N00", "--user {user}", "a user of the synthetic world"),
]


def readme_blocks(section: str, language: str) -> list[str]:
    """The ```language code blocks under the README heading ``section``."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    return re.findall(rf"```{language}\n(.*?)```", text[start : end if end > 0 else None], flags=re.S)


def quickstart_commands() -> list[str]:
    """The shell lines of the quickstart, comments stripped."""
    lines = []
    for line in readme_blocks("Quickstart on real data", "bash")[0].splitlines():
        line = re.sub(r"\s+#.*$", "", line).strip()
        if line:
            lines.append(line)
    return lines


@pytest.mark.slow  # ten CLI processes, each importing torch: ~20 s of CPU
def test_readme_quickstart_runs_as_written(tmp_path):
    from interest.synthetic.world import generate_world

    world = tmp_path / "world"
    generate_world(world, n_users=30, n_photos=120, n_topics=4, render=True, seed=5, progress=False)
    work = tmp_path / "work"
    shutil.copytree(REPO / "configs", work / "configs")
    users = read_table(world, "users")["user_id"].tolist()
    (work / "seeds.txt").write_text("\n".join(users) + "\n")
    images = sorted((world / "images").glob("*.jpg"))
    (work / "my_photos").mkdir()
    for image in images[:4]:
        shutil.copy(image, work / "my_photos" / image.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLICKR_")}
    env["OMP_NUM_THREADS"] = "1"

    commands = quickstart_commands()
    assert commands[0].startswith("pip install -e ") and commands[1].startswith("export FLICKR_API_KEY=")
    with serve_world(world, api_key=KEY) as srv:
        favourites = read_table(world, "favorites")["user_id"].value_counts()
        values = {"rest_url": srv.rest_url, "image_host": srv.image_host, "user": favourites.index[0]}
        used = set()
        for line in commands[2:]:
            assert line.startswith("interest "), line
            for said, instead, _why in OFFLINE:
                if said in line:
                    line = line.replace(said, instead.format(**values))
                    used.add(said)
            env["FLICKR_API_KEY"] = KEY  # the README's `export FLICKR_API_KEY=...`
            proc = subprocess.run([str(INTEREST), *shlex.split(line)[1:]], cwd=work, env=env, capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
            assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert used == {said for said, _, _ in OFFLINE}, "a replacement no longer matches the README"

    # what the quickstart promises is there
    assert (work / "data" / "flickr" / "labels.parquet").is_file()
    assert (work / "models" / "flickr-vitb32" / "model.json").is_file()
    scores = pd.read_csv(work / "scores.csv")
    assert len(scores) == 4 and {"ci_score", "user_score", "deviation"} <= set(scores.columns)
    assert (work / "report.html").stat().st_size > 10_000 and (work / "report_tables").is_dir()
    assert (work / "metrics.json").is_file()

    # then the photo-app snippet, as written, on four of the photos
    for name, image in zip(("a.jpg", "b.jpg", "c.jpg", "d.jpg"), images[4:8]):
        shutil.copy(image, work / name)
    (snippet,) = readme_blocks("Quickstart on real data", "python")
    proc = subprocess.run([sys.executable, "-c", snippet + "\nprint(df.to_json())"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_json(io.StringIO(proc.stdout.strip().splitlines()[-1]))
    assert len(df) == 2 and {"user_score", "deviation"} <= set(df.columns)
    import interest

    assert "alice" in interest.load(work / "models" / "flickr-vitb32").users
