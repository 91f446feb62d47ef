"""The faves-per-view prior on and off, on the world family and on worlds the default was not chosen on.

Each world: generate, default ``label`` (seed 0), then ``train`` twice on the
same labels, ``faves_prior: false`` (the baseline, measured in the same run)
and ``faves_prior: true`` (the default), and for each:

* ``never_held`` — Spearman of ``score_embeddings(...)["ci_score"]`` with the
  true commonality of the world's held-out photos (the collection never held them);
* ``test`` — the same on the collection's own test photos (``evaluate``);
* ``new_user_auc`` — ``evaluate``'s new-user ranking of the common score.

Worlds: the eight of ``interest.synthetic.family.FAMILY`` (the default was
chosen on these), then ``--extra``: each structure with seeds 2 and 3, and each
structure at seeds 0 and 1 with fewer users and photos (250 users, 2,000
photos, 400 held out), sixteen worlds the choice never saw. ``--shuffled``:
the family's worlds with views and faves permuted among the photos, so the
metadata carries nothing (the blend should then change nothing). ``--dim``:
the worlds' embedding size (64 by default; CLIP's are 512 or 768).

    nice -n 10 .venv/bin/python benchmarks/bench_faves_prior.py [--extra] [--shuffled] [--dim 512] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import warnings
from pathlib import Path

SMALL = dict(n_users=250, n_photos=2000, heldout_photos=400)


def worlds(extra: bool) -> list[tuple[str, str, dict]]:
    from interest.synthetic.family import FAMILY, STRUCTURES

    out = [(name, name, {}) for name in FAMILY]
    if extra:
        for structure in STRUCTURES:
            out += [(f"{structure}-s{seed}", f"{structure}-s0", {"seed": seed}) for seed in (2, 3)]
            out += [(f"{structure}-small-s{seed}", f"{structure}-s{seed}", SMALL) for seed in (0, 1)]
    return out


def run_world(base: str, overrides: dict, root: Path, shuffled: bool = False) -> dict:
    import interest  # noqa: F401  (the public package, as a user imports it)
    from interest.stages.evaluate import evaluate, spearman_or_none
    from interest.stages.labels import label_collection
    from interest.stages.train import TrainConfig, train_model
    from interest.synthetic.family import heldout_photos, make_family_world

    make_family_world(base, root, **overrides)
    if shuffled:
        import numpy as np
        import pandas as pd

        photos = pd.read_parquet(root / "photos.parquet")
        order = np.random.default_rng(0).permutation(len(photos))
        for column in ("views", "faves"):
            photos[column] = photos[column].to_numpy()[order]
        photos.to_parquet(root / "photos.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        label_collection(root, seed=0, progress=False)
    photos, emb = heldout_photos(root)
    truth = photos["true_commonality"].to_numpy(float)
    row = {}
    for tag, prior in (("off", False), ("on", True)):
        model = train_model(root, None, config=TrainConfig(faves_prior=prior), progress=False)
        m = evaluate(model, root, progress=False)
        row[tag] = {
            "never_held": spearman_or_none(model.score_embeddings(emb)["ci_score"].to_numpy(float), truth),
            "test": m["truth"]["test"]["model"],
            "new_user_auc": m["new_users"]["model"]["auc"],
            "blend": model.metadata["metrics"]["ridge"].get("faves_blend"),
        }
    return row


def summarise(rows: dict[str, dict], names: list[str]) -> dict:
    out = {}
    for metric in ("never_held", "test", "new_user_auc"):
        off = [rows[n]["off"][metric] for n in names]
        on = [rows[n]["on"][metric] for n in names]
        gain = [b - a for a, b in zip(off, on)]
        out[metric] = {
            "off": (statistics.median(off), min(off)),
            "on": (statistics.median(on), min(on)),
            "gain_median": statistics.median(gain),
            "gain_min": min(gain),
            "wins": sum(g > 0 for g in gain),
            "n": len(gain),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--extra", action="store_true", help="also the sixteen worlds the default was not chosen on")
    parser.add_argument("--shuffled", action="store_true", help="views and faves permuted among photos (no signal)")
    parser.add_argument("--dim", type=int, default=None, help="embedding size of every world (default: the family's 64)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_faves_prior_") as tmp:
        for name, base, overrides in worlds(args.extra):
            dim = {} if args.dim is None else {"embed_dim": args.dim}
            rows[name] = run_world(base, {**overrides, **dim}, Path(tmp) / name, args.shuffled)
            r = rows[name]
            print(
                f"{name:22s} never held {r['off']['never_held']:.3f} -> {r['on']['never_held']:.3f}   "
                f"test {r['off']['test']:.3f} -> {r['on']['test']:.3f}   "
                f"new-user AUC {r['off']['new_user_auc']:.3f} -> {r['on']['new_user_auc']:.3f}",
                flush=True,
            )
    family = [n for n, _, o in worlds(False)]
    groups = {"family": family}
    if args.extra:
        groups["extra"] = [n for n, _, _ in worlds(True) if n not in family]
    summary = {group: summarise(rows, names) for group, names in groups.items()}
    for group, s in summary.items():
        for metric, v in s.items():
            print(
                f"{group:6s} {metric:12s} off {v['off'][0]:.3f} / {v['off'][1]:.3f}   on {v['on'][0]:.3f} / {v['on'][1]:.3f}"
                f"   gain median {v['gain_median']:+.4f}, smallest {v['gain_min']:+.4f}, wins {v['wins']}/{v['n']}"
            )
    if args.json:
        args.json.write_text(json.dumps({"worlds": rows, "summary": summary}, indent=1, default=float))


if __name__ == "__main__":
    main()
