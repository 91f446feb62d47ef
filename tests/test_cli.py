"""The pipeline's CLI end to end, as a user runs it: real processes, real files, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import interest
from interest.core.collection import embeddings_path, read_embeddings
from interest.learn.groups import assign_trend_groups

INTEREST = [sys.executable, "-m", "interest"]


def run(*args: object, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*INTEREST, *map(str, args)], capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"interest {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2, one line on stderr naming the culprit, no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(small_world, tmp_path_factory):
    """A copy of the small world, labelled and trained through the CLI."""
    root = tmp_path_factory.mktemp("cli") / "collection"
    shutil.copytree(small_world, root)
    run("label", root, "--clusters", "40", "--seed", "0")
    model = root.parent / "model"
    proc = run("train", root, "--out", model)
    # the synthetic world's photos carry views and faves, so the faves-per-view prior was blended in
    assert "faves-per-view prior x" in proc.stdout
    return root, model


def test_label_train_evaluate_score_personalize(trained, tmp_path):
    root, model = trained
    labels = pd.read_parquet(root / "labels.parquet")
    assert set(labels["set"]) == {"train", "test"}
    assert labels["ci_score"].between(0, 1).all()
    assert set(labels["trend_group"]) <= {0, 1, 2}

    metrics_path = tmp_path / "metrics.json"
    proc = run("evaluate", model, root, "--out", metrics_path)
    metrics = json.loads(metrics_path.read_text())
    assert "spearman" in proc.stdout.lower()
    assert metrics  # the evaluation room's own tests check the numbers

    # Score precomputed embeddings: a Parquet file in the contract format.
    backbone, ids, emb = read_embeddings(root)
    out = tmp_path / "scores.csv"
    run("score", model, embeddings_path(root, backbone), "--out", out)
    scores = pd.read_csv(out)
    assert list(scores["photo_id"].astype(str)) == list(ids)
    probs = scores[["p_common", "p_interplay", "p_subjective"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    # the trend group is the band of the photo's own ci_score (interest.learn.groups)
    cuts = interest.load(model).label_settings["group_cuts"]
    assert (scores["trend_group"] == assign_trend_groups(scores["ci_score"].to_numpy(), cuts)).all()

    user = pd.read_parquet(root / "favorites.parquet")["user_id"].value_counts().index[0]
    out_user = tmp_path / "scores_user.parquet"
    run("score", model, embeddings_path(root, backbone), "--user", user, "--out", out_user)
    personal = pd.read_parquet(out_user)
    np.testing.assert_allclose(personal["user_score"] - personal["ci_score"], personal["deviation"], atol=1e-6)
    np.testing.assert_allclose(personal["ci_score"], scores["ci_score"], atol=1e-6)

    # A new user personalised from a few liked photos gets a head that is saved in the bundle.
    liked = tmp_path / "liked.parquet"
    pq.write_table(pq.read_table(embeddings_path(root, backbone)).slice(0, 30), liked)
    bundle = tmp_path / "bundle"
    shutil.copytree(model, bundle)
    run("personalize", bundle, "--user", "newcomer", "--liked", liked)
    after = run("score", bundle, liked, "--user", "newcomer", "--out", tmp_path / "new.json")
    assert after.returncode == 0
    rows = json.loads((tmp_path / "new.json").read_text())
    assert len(rows) == 30 and all("deviation" in r for r in rows)


def test_score_prints_a_table_without_out(trained):
    root, model = trained
    backbone, _, _ = read_embeddings(root)
    proc = run("score", model, embeddings_path(root, backbone))
    header = proc.stdout.splitlines()[0].split()
    assert header[:3] == ["photo_id", "ci_score", "trend_group"]


def test_embeddings_written_by_another_program(small_world, tmp_path):
    """A collection whose embeddings come from elsewhere: variable-size lists, float64, not normalised."""
    root = tmp_path / "foreign"
    root.mkdir()
    for name in ("users", "photos", "favorites"):
        shutil.copy(small_world / f"{name}.parquet", root / f"{name}.parquet")
    _, ids, emb = read_embeddings(small_world)
    rng = np.random.default_rng(0)
    scaled = emb.astype(np.float64) * rng.uniform(0.5, 3.0, size=(len(emb), 1))
    path = embeddings_path(root, "mylab/custom-encoder")
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"photo_id": list(ids), "embedding": [list(row) for row in scaled]}), path)

    run("label", root, "--clusters", "40")
    run("train", root, "--out", tmp_path / "model", "--backbone", "mylab/custom-encoder")
    run("score", tmp_path / "model", path, "--out", tmp_path / "s.parquet")
    assert len(pd.read_parquet(tmp_path / "s.parquet")) == len(ids)
    metrics = tmp_path / "m.json"
    run("evaluate", tmp_path / "model", root, "--out", metrics)
    assert json.loads(metrics.read_text())["backbone"] == "mylab/custom-encoder"
    run("personalize", tmp_path / "model", "--user", "someone", "--liked", path)


# ---------------------------------------------------------------- bad input


def test_missing_table(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_user_error(run("label", tmp_path / "empty", check=False), "empty")


def test_missing_column(small_world, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(small_world, root)
    fav = pd.read_parquet(root / "favorites.parquet").drop(columns=["user_id"])
    fav.to_parquet(root / "favorites.parquet")
    assert_user_error(run("label", root, check=False), "favorites.parquet", "user_id")


def test_photo_without_embedding(small_world, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(small_world, root)
    backbone, ids, emb = read_embeddings(root)
    path = embeddings_path(root, backbone)
    pq.write_table(pq.read_table(path).slice(1), path)  # drop the first photo's embedding
    assert_user_error(run("label", root, check=False), ids[0])


def test_embeddings_of_another_backbone(trained, tmp_path):
    root, model = trained
    backbone, ids, emb = read_embeddings(root)
    other = embeddings_path(tmp_path, "openclip/ViT-B-32/none")
    other.parent.mkdir(parents=True)
    shutil.copy(embeddings_path(root, backbone), other)
    assert_user_error(run("score", model, other, check=False), "openclip/ViT-B-32/none", backbone)
    wrong_dim = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"photo_id": ["a"], "embedding": [[0.1] * (emb.shape[1] + 3)]}), wrong_dim)
    assert_user_error(run("score", model, wrong_dim, check=False), str(emb.shape[1]))


def test_unknown_user(trained):
    root, model = trained
    backbone, _, _ = read_embeddings(root)
    proc = run("score", model, embeddings_path(root, backbone), "--user", "nobody@N00", check=False)
    assert_user_error(proc, "nobody@N00", "interest personalize")


def test_users_held_out_by_label_can_be_scored(trained, tmp_path):
    """The users `label` held out whole (no head before issue 20) are scored with their own head."""
    root, model = trained
    backbone, _, _ = read_embeddings(root)
    split = pd.read_parquet(root / "label_users.parquet")
    favs = pd.read_parquet(root / "favorites.parquet")
    held_out = favs[favs["user_id"].isin(split.loc[split["set"] == "test", "user_id"])]["user_id"].value_counts()
    user = str(held_out.index[0])  # the held-out user with the most favourites
    out = tmp_path / "held_out_user.parquet"
    run("score", model, embeddings_path(root, backbone), "--user", user, "--out", out)
    scores = pd.read_parquet(out)
    faved = scores["photo_id"].astype(str).isin(favs.loc[favs["user_id"] == user, "photo_id"].astype(str))
    # a real head, learned from this user's favourites: it lifts the photos they favourited
    assert scores["deviation"].abs().max() > 0
    assert scores.loc[faved, "deviation"].mean() > scores.loc[~faved, "deviation"].mean()
    meta = json.loads((model / "model.json").read_text())["data"]
    assert meta["heads_data"] == "all" and meta["n_users_with_heads"] == favs["user_id"].nunique()


def test_every_user_scored_through_the_cli_and_evaluation_only_keeps_the_split(trained, tmp_path):
    """Every user of the collection has a head in the app bundle, whose common model also learned from the users and
    photos `label` held out; `train --evaluation-only` learns from the label split only and knows none of those."""
    root, model = trained
    backbone, ids, _ = read_embeddings(root)
    labels = pd.read_parquet(root / "labels.parquet")
    split = pd.read_parquet(root / "label_users.parquet")
    held_out = set(split.loc[split["set"] == "test", "user_id"])
    favs = pd.read_parquet(root / "favorites.parquet").merge(labels[["photo_id", "set"]], on="photo_id")
    per_user = favs.groupby("user_id")["photo_id"].nunique()
    assert set(interest.load(model).users) == set(per_user.index)
    # the app bundle's common model learned from every labelled photo and every favourite on them
    data = json.loads((model / "model.json").read_text())["data"]
    assert data["common_data"] == "all" and data["n_train_photos"] == len(labels) and data["n_favourites"] == len(favs)
    assert favs["user_id"].isin(held_out).sum() > 50 and (labels["set"] == "test").sum() > 100

    # one user of each kind through the CLI: held out whole by `label`, and with 1-4 favourites
    light = per_user[(per_user < 5) & ~per_user.index.isin(held_out)]
    whole = per_user[per_user.index.isin(held_out)]
    assert len(light) and len(whole)
    for user in (str(whole.idxmax()), str(light.index[0])):
        out = tmp_path / f"{user}.parquet"
        run("score", model, embeddings_path(root, backbone), "--user", user, "--out", out)
        scores = pd.read_parquet(out)
        assert len(scores) == len(ids) and scores["user_score"].notna().all()
        np.testing.assert_allclose(scores["user_score"], scores["ci_score"] + scores["deviation"], rtol=1e-5, atol=1e-7)

    evaluation = tmp_path / "evaluation"
    run("train", root, "--out", evaluation, "--evaluation-only")
    e_data = json.loads((evaluation / "model.json").read_text())["data"]
    on_split = favs[(favs["set"] == "train") & ~favs["user_id"].isin(held_out)]
    assert e_data["common_data"] == "split" and e_data["n_train_photos"] == (labels["set"] == "train").sum()
    assert e_data["n_favourites"] == len(on_split) < len(favs)
    # a user the evaluation bundle never saw gets the one-line error naming personalize
    proc = run("score", evaluation, embeddings_path(root, backbone), "--user", str(whole.idxmax()), check=False)
    assert_user_error(proc, str(whole.idxmax()), "interest personalize")


def test_newer_bundle_and_hand_edited_bundle(trained, tmp_path):
    _, model = trained
    newer = tmp_path / "newer"
    shutil.copytree(model, newer)
    meta = json.loads((newer / "model.json").read_text())
    meta["schema_version"] = 999
    (newer / "model.json").write_text(json.dumps(meta))
    assert_user_error(run("score", newer, newer / "model.json", check=False), "model.json")

    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    (broken / "model.json").write_text("{not json")
    assert_user_error(run("evaluate", broken, tmp_path, check=False), "model.json")


def test_unreadable_image_names_the_file(tmp_path):
    from interest.synthetic.world import generate_world

    world = tmp_path / "w"
    generate_world(world, n_users=40, n_photos=200, n_topics=6, render=True, seed=3, progress=False)
    run("embed", world, "--backbone", "perceptual/v1")
    run("label", world, "--clusters", "10")
    run("train", world, "--out", tmp_path / "m")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole jpeg")
    out = tmp_path / "scores.csv"
    out.write_text("previous results\n")
    proc = run("score", tmp_path / "m", bad, "--out", out, check=False)
    # nothing could be scored: exit 2, the file named with its reason, then the one-line error
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"skipped {bad}: ") and lines[1].startswith("error: none of the 1 images")
    assert out.read_text() == "previous results\n"  # nothing already written is damaged

    good = sorted((world / "images").glob("*.jpg"))[:3]
    run("score", tmp_path / "m", *good, "--out", out)
    assert len(pd.read_csv(out)) == 3

    # a folder with three bad files among good ones: all three named in one run, the rest scored, exit 0
    folder = tmp_path / "mixed"
    folder.mkdir()
    for image in good:
        shutil.copy(image, folder / image.name)
    (folder / "a_truncated.jpg").write_bytes(good[0].read_bytes()[:200])
    (folder / "b_text.png").write_text("not an image")
    (folder / "c_empty.jpg").write_bytes(b"")
    proc = run("score", tmp_path / "m", folder, "--out", out)
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped ")]
    assert [line.split(":")[0] for line in skipped] == [
        f"skipped {folder / name}" for name in ("a_truncated.jpg", "b_text.png", "c_empty.jpg")
    ]
    table = pd.read_csv(out)
    assert sorted(Path(p).name for p in table["path"]) == sorted(image.name for image in good)
    assert "error" not in table.columns and table["trend_group"].isin([0, 1, 2]).all()

    # --liked and --disliked each take several images (or folders), as in the README
    images = sorted((world / "images").glob("*.jpg"))
    run("personalize", tmp_path / "m", "--user", "fan", "--liked", *images[:6], "--disliked", *images[6:8])
    run("score", tmp_path / "m", *good, "--user", "fan", "--out", out)
    # all six liked and both disliked photos reached the head (how far it moves scores is the heads' own
    # validation: on a world this small it may choose no deviation at all; tests/test_heads.py checks that)
    assert json.loads((tmp_path / "m" / "model.json").read_text())["personalized"]["fan"] == {"liked": 6, "disliked": 2}
    assert pd.read_csv(out)["deviation"].notna().all()
    # a path before any --liked is a usage error that points at --liked (click's usage message, exit 2)
    proc = run("personalize", tmp_path / "m", "--user", "x", images[0], check=False)
    assert proc.returncode == 2 and "--liked" in proc.stderr and "Traceback" not in proc.stderr


def test_nan_metadata_is_handled(small_world, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(small_world, root)
    photos = pd.read_parquet(root / "photos.parquet")
    photos.loc[photos.index[::3], ["views", "faves", "comments"]] = pd.NA
    photos.loc[photos.index[::5], "upload_date"] = pd.NaT
    photos.to_parquet(root / "photos.parquet")
    run("label", root, "--clusters", "40")
    run("train", root, "--out", tmp_path / "m")


def test_user_without_favourites_cannot_be_personalized_from_nothing(trained, tmp_path):
    _, model = trained
    empty = tmp_path / "empty.parquet"
    pq.write_table(
        pa.table({"photo_id": pa.array([], pa.string()), "embedding": pa.array([], pa.list_(pa.float32()))}), empty
    )
    bundle = tmp_path / "b"
    shutil.copytree(model, bundle)
    before = sorted(p.read_bytes() for p in bundle.iterdir() if p.is_file())
    assert_user_error(run("personalize", bundle, "--user", "x", "--liked", empty, check=False), "empty.parquet")
    assert sorted(p.read_bytes() for p in bundle.iterdir() if p.is_file()) == before


# ---------------------------------------------------------------- manners


def test_version_help_and_choices():
    from interest import __version__

    assert run("--version").stdout.strip() == f"interest {__version__}"
    env_help = {"COLUMNS": "200"}
    for command in ([], ["synthetic"], ["embed"], ["score"], ["personalize"], ["curate"]):
        proc = subprocess.run([*INTEREST, *command, "--help"], capture_output=True, text=True, env={**os.environ, **env_help})
        assert proc.returncode == 0, proc.stderr
        assert "<bool>" not in proc.stdout, command  # flags take no value
    root = run("--help").stdout
    assert "--install-completion" in root and "--log-level" in root and "--verbose" in root
    personalize = run("personalize", "--help").stdout
    assert "--liked" in personalize and "--disliked" in personalize
    embed = subprocess.run([*INTEREST, "embed", "--help"], capture_output=True, text=True, env={**os.environ, **env_help}).stdout
    assert "fp32|fp16|bf16" in embed and "local|ray" in embed and "auto|cpu|cuda[:N]|mps" in embed
    proc = run("embed", ".", "--precision", "fp8", check=False)
    assert proc.returncode == 2 and "fp8" in proc.stderr
    assert_user_error(run("embed", ".", "--device", "tpu", check=False), "--device tpu", "cuda[:N]")
    # the weight-free perceptual backbone runs on the CPU: a GPU request is refused, not silently ignored
    assert_user_error(run("embed", ".", "--backbone", "perceptual/v1", "--device", "cuda", check=False), "perceptual/v1")


def test_shell_completion_offers_the_choices():
    script = Path(sys.executable).parent / "interest"  # completion is keyed on the installed command's name
    env = {**os.environ, "_INTEREST_COMPLETE": "complete_bash", "COMP_WORDS": "interest embed --device c", "COMP_CWORD": "3"}
    proc = subprocess.run([str(script)], capture_output=True, text=True, env=env)
    assert proc.stdout.split() == ["cpu", "cuda"], proc.stdout + proc.stderr
    env["COMP_WORDS"], env["COMP_CWORD"] = "interest embed --precision ", "3"
    assert subprocess.run([str(script)], capture_output=True, text=True, env=env).stdout.split() == ["fp32", "fp16", "bf16", "int8"]


def test_log_level_shows_debug_retries(rendered_world, tmp_path):
    """-vv (or --log-level debug) shows the client's retries, logged at DEBUG; without it they stay quiet."""
    from interest.core.collection import read_table
    from interest.synthetic.server import FaultConfig, serve_world

    seeds = ",".join(sorted(read_table(rendered_world, "users")["user_id"])[:3])
    config = tmp_path / "collect.yaml"
    config.write_text("backoff: 0.001\ntimeout: 2.0\n")
    env = {**os.environ, "FLICKR_API_KEY": "cli-test-key"}
    outputs = {}
    with serve_world(rendered_world, faults=FaultConfig(http_500=0.3, seed=4), api_key="cli-test-key") as srv:
        for flags in ([], ["-vv"], ["--log-level", "debug"]):
            args = [*flags, "collect", tmp_path / f"out{len(outputs)}", "--config", config, "--users", seeds,
                    "--rest-url", srv.rest_url, "--no-download", "--rate", "0", "--no-progress"]
            proc = subprocess.run([*INTEREST, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
            assert proc.returncode == 0, proc.stderr
            outputs[" ".join(flags)] = proc.stderr
    assert "retry" not in outputs[""]
    for flags in ("-vv", "--log-level debug"):
        retries = [line for line in outputs[flags].splitlines() if line.startswith("DEBUG: ") and "http_500, retry" in line]
        assert retries, outputs[flags]
    assert "cli-test-key" not in "".join(outputs.values())


def test_label_warning_is_one_clean_line(tmp_path):
    """A library warning reaches the user as one log line, not Python's file:line plus the quoted source."""
    from interest.synthetic.world import generate_world

    root = tmp_path / "w"
    generate_world(root, n_users=30, n_photos=120, n_topics=4, render=False, embed_dim=16, seed=1, progress=False)
    proc = run("label", root, "--clusters", "60")
    warnings = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING: ") and "too few" in warnings[0], proc.stderr
    assert ".py:" not in proc.stderr and "label_collection(" not in proc.stderr


# ---------------------------------------------------------------- optional parts

BLOCKED = (
    "import sys\n"
    "for name in sys.argv[1].split(','):\n"
    "    sys.modules[name] = None  # as if the extra were not installed: importing it raises ImportError\n"
    "sys.argv = ['interest', *sys.argv[2:]]\n"
    "from interest.cli import main\n"
    "main()\n"
)


def run_without(modules: str, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED, modules, *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_optional_parts_name_their_extra(trained, tmp_path):
    _, model = trained
    assert_user_error(run_without("fastapi", "serve", model), "interest serve needs fastapi", "pip install 'interest[serve]'")
    assert_user_error(run_without("multipart", "serve", model), "needs multipart", "'interest[serve]'")
    out = tmp_path / "onnx-export"
    for blocked in ("onnx", "onnxmltools"):
        proc = run_without(blocked, "export-onnx", model, out)
        assert_user_error(proc, f"exporting to ONNX needs {blocked}", "pip install 'interest[export]'")
        assert not out.exists()  # no empty output folder left behind
    backbone, _, _ = read_embeddings(trained[0])
    proc = run_without("ray", "score", model, trained[0], "--engine", "ray")
    assert_user_error(proc, "the Ray engine needs ray", "pip install 'interest[ray]'")
    # the Python API says the same, as an InterestError
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "import interest.onnx\n"
        "from interest.core.errors import InterestError\n"
        "try:\n    interest.onnx.load(sys.argv[1])\n"
        "except InterestError as exc:\n    print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "scoring an ONNX export needs onnxruntime: pip install 'interest[onnx]'", proc.stderr
