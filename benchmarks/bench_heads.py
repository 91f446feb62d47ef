"""User heads and trend groups over the family of synthetic worlds: gain against an oracle, few-shot, far inputs.

For each family world (``interest.synthetic.family``): a seeded fifth of the
users with 10+ favourites is taken out of the collection before labelling and
training (they are *new users*), then

* **heads**: every training user's favourites on the test photos are ranked
  among all test photos by the common score, by common + head, and by the
  oracle (each user's true log-odds, ``family.oracle_scores``); the share of
  the room ``(head - common) / (oracle - common)`` captured for users with 20+
  training favourites, and the mean AUC of every activity bucket. Baseline in
  the same run: the same heads with sharing switched off (eta = 0: each user's
  own favourites only);
* **few-shot**: each new user is personalised from 1, 2, 4 and 8 of their
  favourites on training photos and ranks their test-photo favourites; the
  mean AUC gain over common-only, beside the no-sharing baseline;
* **far inputs**: the largest |deviation| over all users for random unit
  directions, an out-of-distribution cluster and the world's held-out photos,
  against the spread of the common score (its 1st to 99th percentile);
* **groups**: agreement of ``trend_group`` with the cut of its own
  ``ci_score`` (must be 100%), expected calibration error of the group
  probabilities on the test photos against their labels and against the true
  groups (true commonality cut at the labels' group shares), beside a multinomial
  logistic regression with temperature on the same inputs (the previous
  classifier), and the largest probability on far inputs.

    nice -n 10 .venv/bin/python benchmarks/bench_heads.py [--worlds flat-s0 ...] [--json out.json]
    nice -n 10 .venv/bin/python benchmarks/bench_heads.py --scoring   # what a user head adds to scoring
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from interest.vocabulary import ACTIVITY_BUCKETS, bucket_name

SHOTS = (1, 2, 4, 8)


def _auc(scores: np.ndarray, is_pos: np.ndarray) -> float:
    from scipy.stats import rankdata

    n_pos, n_neg = int(is_pos.sum()), int((~is_pos).sum())
    ranks = rankdata(scores)
    return float((ranks[is_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _hold_out_users(root: Path, fraction: float, seed: int) -> np.ndarray:
    """Remove a seeded ``fraction`` of the users with 10+ favourites from favorites.parquet; returns their ids."""
    from interest.collection import read_table, write_table

    fav = read_table(root, "favorites")
    counts = fav["user_id"].value_counts()
    eligible = np.sort(counts.index[counts >= 10].astype(str).to_numpy())
    rng = np.random.default_rng(seed)
    out = rng.choice(eligible, int(round(fraction * len(eligible))), replace=False)
    write_table(root, "favorites", fav[~fav["user_id"].astype(str).isin(out)].reset_index(drop=True))
    return np.sort(out), fav


def _no_sharing(model, root: Path):
    """The same heads fitted with borrowing switched off (eta = 0): each user from their own favourites only."""
    from interest.models.train import TrainConfig, read_training_data
    from interest.models.user_heads import UserHeads

    data = read_training_data(root, None, TrainConfig())
    base = model.score_embeddings(data["emb"])["ci_score"].to_numpy()
    return UserHeads(sharing=(0.0,), seed=0).fit(model.head_inputs(data["emb"]), data["fav_users"], data["fav_rows"], base)


def run_world(name: str, work: Path, seed: int = 0) -> dict:
    from interest.collection import read_embeddings
    from interest.labels import label_collection
    from interest.labels.groups import assign_trend_groups, cuts_with_shares
    from interest.models.groups import expected_calibration_error
    from interest.models.train import train_model
    from interest.synthetic.family import heldout_photos, make_family_world, oracle_scores

    root = work / name
    make_family_world(name, root)
    new_users, all_fav = _hold_out_users(root, 0.2, seed)
    label_collection(root, seed=seed, progress=False)
    model = train_model(root, None, progress=False)
    _, ids, emb = read_embeddings(root)
    labels = pd.read_parquet(root / "labels.parquet").set_index("photo_id").loc[ids]
    test = (labels["set"] == "test").to_numpy()
    train_set = set(np.asarray(ids)[~test])
    test_ids, test_emb = np.asarray(ids)[test], emb[test]
    scores = model.score_embeddings(test_emb)
    ci = scores["ci_score"].to_numpy(np.float64)
    truth = pd.read_parquet(root / "ground_truth" / "photos.parquet").set_index("photo_id").loc[test_ids]
    position = {p: i for i, p in enumerate(test_ids)}
    all_fav = all_fav.assign(user_id=all_fav["user_id"].astype(str), photo_id=all_fav["photo_id"].astype(str))
    train_count = all_fav[all_fav["photo_id"].isin(train_set)].groupby("user_id").size()
    test_fav = all_fav[all_fav["photo_id"].isin(position)]

    # ---- heads of training users, by activity bucket, against the oracle
    plain = _no_sharing(model, root)
    rows = []
    users = [u for u in sorted(test_fav["user_id"].unique()) if model.heads.has(u)]
    test_in = model.head_inputs(test_emb)
    dev = model.heads.deviations(users, test_in).astype(np.float64)
    dev0 = plain.deviations(users, test_in).astype(np.float64)
    oracle = oracle_scores(root, np.array(users), truth.reset_index())
    for j, user in enumerate(users):
        is_pos = np.zeros(len(test_ids), dtype=bool)
        is_pos[[position[p] for p in test_fav.loc[test_fav["user_id"] == user, "photo_id"]]] = True
        if is_pos.all():
            continue
        rows.append((int(train_count.get(user, 0)), _auc(ci, is_pos), _auc(ci + dev[:, j], is_pos),
                     _auc(ci + dev0[:, j], is_pos), _auc(oracle[j], is_pos)))
    table = pd.DataFrame(rows, columns=["n", "common", "head", "no_sharing", "oracle"])
    heavy = table[table["n"] >= 20]
    room = float((heavy["oracle"] - heavy["common"]).mean())
    result = {
        "world": name,
        "users_20+": int(len(heavy)),
        "auc_20+": {c: float(heavy[c].mean()) for c in ("common", "head", "no_sharing", "oracle")},
        "captured_20+": float((heavy["head"] - heavy["common"]).mean()) / room if room > 0 else None,
        "captured_20+_no_sharing": float((heavy["no_sharing"] - heavy["common"]).mean()) / room if room > 0 else None,
        "buckets": {},
        "heads": {"anchors": model.heads.validation_.get("n_anchors"), "templates": model.heads.validation_.get("n_templates"),
                  "regimes": [[round(v, 4) for v in row] for row in model.heads.regime_settings_],
                  "shots": [[round(v, 4) for v in row] for row in model.heads.shot_settings_]},
    }
    for lo, hi in ACTIVITY_BUCKETS:
        sel = table[(table["n"] >= lo) & (table["n"] < (hi or 10**9))]
        if len(sel):
            result["buckets"][bucket_name(lo, hi)] = {
                "users": int(len(sel)), **{c: float(sel[c].mean()) for c in ("common", "head", "no_sharing")}
            }

    # ---- few-shot: new users personalised from k liked photos
    rng = np.random.default_rng(seed)
    gains = {k: [] for k in SHOTS}
    gains0 = {k: [] for k in SHOTS}
    for user in new_users:
        mine = all_fav[all_fav["user_id"] == user]["photo_id"]
        liked_pool = np.sort(mine[mine.isin(train_set)].to_numpy())
        pos = [position[p] for p in mine if p in position]
        if len(liked_pool) < max(SHOTS) or not pos:
            continue
        is_pos = np.zeros(len(test_ids), dtype=bool)
        is_pos[pos] = True
        base_auc = _auc(ci, is_pos)
        order = rng.permutation(liked_pool)
        row_of = pd.Index(ids)
        for k in SHOTS:
            liked = model.head_inputs(emb[row_of.get_indexer(order[:k])])
            w = model.heads.fit_one(liked)
            w0 = plain.fit_one(liked)
            r = model.heads.memberships(test_in)
            gains[k].append(_auc(ci + r @ w, is_pos) - base_auc)
            gains0[k].append(_auc(ci + r @ w0, is_pos) - base_auc)
    result["few_shot"] = {
        "new_users": len(gains[SHOTS[0]]),
        **{str(k): {"gain": float(np.mean(gains[k])), "gain_no_sharing": float(np.mean(gains0[k]))} for k in SHOTS},
    }

    # ---- far from the training photos
    dim = emb.shape[1]
    far_rng = np.random.default_rng(seed + 1)
    random_dirs = far_rng.standard_normal((500, dim)).astype(np.float32)
    centre = far_rng.standard_normal(dim)
    ood = (centre / np.linalg.norm(centre) + far_rng.normal(0, 0.9 / np.sqrt(dim), (500, dim))).astype(np.float32)
    _, heldout_emb = heldout_photos(root)
    spread = float(np.quantile(ci, 0.99) - np.quantile(ci, 0.01))
    model.personalize("far-fan", liked=ood[:5])  # a user who likes only photos unlike any training photo
    every = list(model.users)
    far = {}
    for label, x in (("random", random_dirs), ("ood_cluster", ood), ("heldout", heldout_emb), ("test", test_emb)):
        d = model.user_deviations(every, x)  # normalises rows, as scoring does
        s = model.score_embeddings(x)
        far[label] = {
            "max_abs_deviation_over_ci_spread": float(np.abs(d).max() / spread),
            "max_group_probability": float(s[["p_common", "p_interplay", "p_subjective"]].to_numpy().max()),
            "mean_max_group_probability": float(s[["p_common", "p_interplay", "p_subjective"]].to_numpy().max(1).mean()),
            "group_agrees_with_ci": float((s["trend_group"].to_numpy()
                                           == assign_trend_groups(s["ci_score"].to_numpy(), model.label_settings["group_cuts"])).mean()),
        }
    result["far"] = far

    # ---- groups on the test photos against their labels and against the true groups (the world's true
    # commonality cut at the shares of the labels' groups), beside the previous classifier
    y = labels.loc[test_ids, "trend_group"].to_numpy(np.int64)
    train_groups = labels.loc[np.asarray(ids)[~test], "trend_group"].to_numpy(np.int64)
    all_truth = pd.read_parquet(root / "ground_truth" / "photos.parquet").set_index("photo_id")["true_commonality"]
    true_cuts = cuts_with_shares(all_truth.loc[np.asarray(ids)[~test]].to_numpy(), train_groups)
    true_y = assign_trend_groups(truth["true_commonality"].to_numpy(), true_cuts)
    proba = scores[["p_common", "p_interplay", "p_subjective"]].to_numpy(np.float64)
    result["groups"] = {
        "agreement_with_ci": far["test"]["group_agrees_with_ci"],
        "ece": expected_calibration_error(proba, y),
        "accuracy": float((scores["trend_group"].to_numpy() == y).mean()),
        "ece_truth": expected_calibration_error(proba, true_y),
        "accuracy_truth": float((scores["trend_group"].to_numpy() == true_y).mean()),
        "label_agreement_with_truth": float((y == true_y).mean()),
        "mean_max_probability": float(proba.max(1).mean()),
        **_logistic_baseline(model, emb[~test], train_groups, test_emb, y, true_y, random_dirs, seed),
    }
    return result


def _logistic_baseline(model, train_emb, train_y, test_emb, test_y, true_y, far_emb, seed) -> dict:
    """The previous classifier: multinomial logistic regression on the app inputs, temperature on a held-out 20%."""
    from scipy.optimize import minimize_scalar
    from sklearn.linear_model import LogisticRegression

    from interest.models.groups import expected_calibration_error

    def inputs(x):
        Z, stack = model._project(model._check_embeddings(x))
        return model.booster.app_matrix(Z[:, : model.booster_components], stack).astype(np.float64)

    F, Ft, Ff = inputs(train_emb), inputs(test_emb), inputs(far_emb)
    mu, sd = F.mean(0), F.std(0) + 1e-12
    rng = np.random.default_rng(seed)
    calib = rng.random(len(F)) < 0.2
    lr = LogisticRegression(max_iter=300).fit((F[~calib] - mu) / sd, train_y[~calib])
    logits = lr.decision_function((F[calib] - mu) / sd)

    def nll(t):
        z = logits / np.exp(t)
        z = z - z.max(1, keepdims=True)
        return float(-(z[np.arange(len(z)), np.searchsorted(lr.classes_, train_y[calib])] - np.log(np.exp(z).sum(1))).mean())

    temp = float(np.exp(minimize_scalar(nll, bounds=(-3, 3), method="bounded").x))

    def proba(F_):
        z = lr.decision_function((F_ - mu) / sd) / temp
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p = proba(Ft)
    ci = model.score_embeddings(test_emb)["ci_score"].to_numpy()
    from interest.labels.groups import assign_trend_groups

    cut = assign_trend_groups(ci, model.label_settings["group_cuts"])
    return {
        "baseline_logistic_ece": expected_calibration_error(p, test_y),
        "baseline_logistic_ece_truth": expected_calibration_error(p, true_y),
        "baseline_logistic_agreement_with_ci": float((lr.classes_[p.argmax(1)] == cut).mean()),
        "baseline_logistic_max_probability_random": float(proba(Ff).max()),
    }


def summarise(results: list[dict]) -> dict:
    def stats(values):
        values = [v for v in values if v is not None]
        return {"median": statistics.median(values), "worst": min(values)} if values else None

    out = {
        "captured_20+": stats([r["captured_20+"] for r in results]),
        "captured_20+_no_sharing": stats([r["captured_20+_no_sharing"] for r in results]),
        "lowest_bucket_gain": stats([min(b["head"] - b["common"] for b in r["buckets"].values()) for r in results]),
        "group_agreement": stats([min(f["group_agrees_with_ci"] for f in r["far"].values()) for r in results]),
        "group_ece": {"median": statistics.median(r["groups"]["ece"] for r in results),
                      "worst": max(r["groups"]["ece"] for r in results)},
        "baseline_logistic_ece": {"median": statistics.median(r["groups"]["baseline_logistic_ece"] for r in results),
                                  "worst": max(r["groups"]["baseline_logistic_ece"] for r in results)},
        **{key: {"median": statistics.median(r["groups"][key] for r in results),
                 "worst": max(r["groups"][key] for r in results)}
           for key in ("ece_truth", "baseline_logistic_ece_truth")},
        "accuracy_truth": stats([r["groups"]["accuracy_truth"] for r in results]),
        "label_agreement_with_truth": stats([r["groups"]["label_agreement_with_truth"] for r in results]),
        "mean_max_probability": stats([r["groups"]["mean_max_probability"] for r in results]),
    }
    for k in SHOTS:
        out[f"few_shot_{k}"] = stats([r["few_shot"][str(k)]["gain"] for r in results])
        out[f"few_shot_{k}_no_sharing"] = stats([r["few_shot"][str(k)]["gain_no_sharing"] for r in results])
    for label in ("random", "ood_cluster", "heldout", "test"):
        out[f"far_{label}_max_dev"] = max(r["far"][label]["max_abs_deviation_over_ci_spread"] for r in results)
        out[f"far_{label}_max_p"] = max(r["far"][label]["max_group_probability"] for r in results)
    return out


def scoring_cost(repeats: int = 7, n: int = 50_000) -> None:
    """What a user head adds to scoring: photos/s of score_embeddings without and with ``user`` (512-d, interleaved)."""
    import time

    from interest.collection import l2_normalize
    from interest.labels import label_collection
    from interest.models.train import train_model
    from interest.synthetic.world import generate_world

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "w"
        generate_world(root, n_users=300, n_photos=5000, render=False, embed_dim=512, seed=0, progress=False)
        label_collection(root, progress=False)
        model = train_model(root, None, progress=False)
        user = next(u for u in model.users if np.abs(model.heads.weights_[model.heads._index[u]]).max() > 0)
        emb = l2_normalize(np.random.default_rng(0).normal(size=(n, 512)).astype(np.float32))
        times = {"common": [], "with user": []}
        model.score_embeddings(emb[:1000], user=user)
        for _ in range(repeats):
            for name, kwargs in (("common", {}), ("with user", {"user": user})):
                t = time.perf_counter()
                model.score_embeddings(emb, **kwargs)
                times[name].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(json.dumps({k: {"median_s": v, "photos_per_s": n / v} for k, v in med.items()}
                         | {"ratio_with_user": med["with user"] / med["common"]}))


def main() -> None:
    from interest.synthetic.family import FAMILY

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", default=FAMILY)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--scoring", action="store_true", help="only: what a user head adds to scoring time")
    args = parser.parse_args()
    if args.scoring:
        scoring_cost()
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.worlds:
            r = run_world(name, Path(tmp))
            results.append(r)
            print(json.dumps({k: r[k] for k in ("world", "captured_20+", "captured_20+_no_sharing", "auc_20+", "heads")}))
            print("  buckets", json.dumps(r["buckets"]))
            print("  few-shot", json.dumps(r["few_shot"]))
            print("  groups", json.dumps(r["groups"]))
            print("  far", json.dumps(r["far"]), flush=True)
    summary = summarise(results)
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"worlds": results, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
