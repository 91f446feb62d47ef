"""The end-to-end demo: every stage of the pipeline, offline, on a small synthetic world.

The world is served by the local Flickr-compatible server and gathered with
the real collector, so the demo exercises the same code a crawl of Flickr
does; from there on it is the same label → train → evaluate → score → report
a researcher runs on a real collection.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import typer

from interest.core.collection import write_json_atomic


def run_demo(out: str | Path, *, n_users: int = 300, n_photos: int = 3000, seed: int = 0) -> dict:
    """Run the demo into ``out``; returns the evaluation metrics."""
    from interest.stages.analyze import report
    from interest.stages.collect import CollectConfig, collect
    from interest.stages.collect.config import make_client
    from interest.stages.evaluate import evaluate, format_metrics
    from interest.stages.characterize import characterize
    from interest.pipeline.local import embed_collection
    from interest.stages.labels import label_collection
    from interest.stages.train import train_model
    from interest.synthetic.server import serve_world
    from interest.synthetic.world import generate_world

    out = Path(out)
    world, collection, bundle = out / "world", out / "collection", out / "model"
    clock = _Clock()

    clock.step(f"1/8 generating a synthetic Flickr world ({n_users} users, {n_photos} photos)")
    generate_world(world, n_users=n_users, n_photos=n_photos, render=True, seed=seed, overwrite=True)

    clock.step("2/8 collecting it through the local Flickr-compatible server with the real collector")
    import pandas as pd

    seeds = pd.read_parquet(world / "users.parquet", columns=["user_id"])["user_id"].tolist()
    _remove_own_output(collection, bundle)
    api_key = "demo-key"  # the local server's key, whatever FLICKR_API_KEY holds (a real crawl reads that)
    with serve_world(world, api_key=api_key) as server:
        config = CollectConfig(
            rest_url=server.rest_url, image_host=server.image_host, api_key=api_key, users=seeds, rate=0
        )
        collect(collection, config, client=make_client(config, environment=False))
    # The world's answer key sits beside the collection so that evaluate can report agreement with it.
    shutil.copytree(world / "ground_truth", collection / "ground_truth")

    clock.step("3/8 embedding the images with the weight-free perceptual backbone")
    embed_collection(collection, backbone_id="perceptual/v1")
    characterize(collection)

    clock.step("4/8 labelling: clusters → partitions → CI score → trend groups")
    label_collection(collection, seed=seed)

    clock.step("5/8 training the common model, trend-group classifier and user heads")
    model = train_model(collection, bundle)

    clock.step("6/8 evaluating on held-out photos and users")
    metrics = evaluate(model, collection)
    write_json_atomic(out / "metrics.json", metrics)
    typer.echo(format_metrics(metrics))

    clock.step("7/8 scoring a few images, for everyone and for one user")
    user, images, liked, held_out = _demo_images(collection, model)
    table = model.score(images, user=user)
    table.insert(1, f"liked by {user}", liked)
    typer.echo(
        (f"{user} was held out whole by `label` (evaluate refitted the model without them; the bundle learned from "
         "all their favourites): " if held_out else f"{user}: ")
        + "three held-out photos they favourited and three they did not:"
    )
    typer.echo(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))  # ci_score is ~0.001-0.05

    clock.step("8/8 writing the HTML report")
    report_path = report(collection, model=bundle, out=out / "report.html", progress=False)

    typer.echo(
        f"\ndone in {clock.total():.0f} s. Wrote:\n"
        f"  world (with ground truth)  {world}\n"
        f"  collection                 {collection}\n"
        f"  model bundle               {bundle}\n"
        f"  metrics                    {out / 'metrics.json'}\n"
        f"  report (open in a browser) {report_path}\n"
        f"  the report's tables (CSV)  {report_path.with_name(report_path.stem + '_tables')}\n"
        f"Try: {_command()} score {bundle} {images[0]} --user {user}"
    )
    return metrics


def _demo_images(collection: Path, model) -> tuple[str, list[Path], list[bool], bool]:
    """Among the users ``label`` held out whole (the bundle's heads learn from them too), the one with the most
    favourites among the held-out (test) photos: three of those photos and three other test photos (seeded),
    with which is which (and whether the user was held out): a head shows itself where the user's taste does."""
    import numpy as np

    from interest.core.collection import read_table
    from interest.stages.labels import read_labels, read_user_split

    labels = read_labels(collection)
    test = labels.loc[labels["set"] == "test", "photo_id"].astype(str)
    split = read_user_split(collection)
    held_out = split.loc[split["set"] == "test", "user_id"]
    favs = read_table(collection, "favorites")
    favs = favs[favs["photo_id"].astype(str).isin(test) & favs["user_id"].isin(model.users)]
    if favs["user_id"].isin(held_out).any():
        favs = favs[favs["user_id"].isin(held_out)]
    user = str(favs["user_id"].value_counts().idxmax())
    mine = set(favs.loc[favs["user_id"] == user, "photo_id"].astype(str))
    rng = np.random.default_rng(0)
    others = [p for p in test if p not in mine]
    chosen = sorted(mine)[:3] + [str(p) for p in rng.choice(others, 3, replace=False)]
    paths = read_table(collection, "photos").dropna(subset=["path"]).set_index("photo_id")["path"]
    chosen = [p for p in chosen if p in paths.index]
    return user, [collection / paths[p] for p in chosen], [p in mine for p in chosen], user in set(held_out)


def _command() -> str:
    """How this user calls `interest` (from `make demo` it is .venv/bin/interest, not on the PATH)."""
    return sys.argv[0] if Path(sys.argv[0]).name == "interest" else "interest"


def _remove_own_output(*paths: Path) -> None:
    """Clear what an earlier demo run wrote, so a re-run starts fresh (only the demo's own folders)."""
    for path in paths:
        if path.is_dir() and ((path / "manifest.json").exists() or (path / "model.json").exists() or (path / ".collect").exists()):
            shutil.rmtree(path)


class _Clock:
    """Prints each step with the time the previous one took."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()

    def step(self, message: str) -> None:
        now = time.perf_counter()
        if now - self.start > 0.01:
            typer.echo(f"   ({now - self.last:.1f} s)", err=True)
        self.last = now
        typer.echo(f"\n==> {message}", err=True)

    def total(self) -> float:
        return time.perf_counter() - self.start
