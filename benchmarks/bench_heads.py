"""User heads against the recommenders, and trend groups, over the worlds: gain against an oracle, few-shot, far inputs.

For each world (the eight of ``interest.synthetic.family.FAMILY``, the four
``TASTE_WORLDS`` and, reported apart, the two ``ASIDE_WORLDS`` no default was
chosen on): a seeded fifth of the users with 10+ favourites is taken out of
the collection before labelling and training (they are *new users*), then

* **heads**: every training user's favourites on the test photos are ranked
  among all test photos by the common score, by common + head, and, in the same
  run, by the references: the package's other kind of heads (joint when the
  model's are templates, column ``previous_heads``) fitted on the same favourites; cornac's
  VBPR (k=10, k2=10, 30 epochs, its defaults; the embeddings as the item
  images) through its visual part for photos it never saw,
  ``theta_u . (E f) + beta' . f``, alone and rank-averaged with the common
  score; a per-user logistic regression on [embedding, common score] (the
  user's favourites against 300 random training photos); the oracle (each
  user's true log-odds, ``family.oracle_scores``). Reported: mean AUC gain over
  the common score for users with 20+ training favourites, the share of the
  room ``(head - common) / (oracle - common)``, every activity bucket, and the
  common score's Spearman against the true commonality on the test photos;
* **few-shot**: each new user is personalised from 1, 2, 4, 8 and 16 of their
  favourites on training photos (with those photos' common scores) and ranks
  their test-photo favourites; the mean AUC gain over common-only, beside the
  previous heads and VBPR's fold-in of the same photos (its E and beta' fixed,
  a new theta fitted by L-BFGS on the BPR loss against 256 background photos,
  cornac's lambda_w ridge), alone and rank-averaged with the common score;
* **far inputs**: the largest |deviation| over all users for random unit
  directions, an out-of-distribution cluster and the world's held-out photos,
  against the spread of the common score (its 1st to 99th percentile);
* **groups**: agreement of ``trend_group`` with the cut of its own
  ``ci_score`` (must be 100%), expected calibration error of the group
  probabilities on the test photos against their labels and against the true
  groups, beside a multinomial logistic regression with temperature.

Needs the ``bench`` extra (``pip install -e '.[bench]'``: cornac, which trains VBPR with torch)::

    nice -n 10 .venv/bin/python benchmarks/bench_heads.py [--worlds taste-dense-s0 ...] [--json out.json]
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

from interest.core.vocabulary import ACTIVITY_BUCKETS, bucket_name

SHOTS = (1, 2, 4, 8, 16)


def _auc(scores: np.ndarray, is_pos: np.ndarray) -> float:
    from scipy.stats import rankdata

    n_pos, n_neg = int(is_pos.sum()), int((~is_pos).sum())
    ranks = rankdata(scores)
    return float((ranks[is_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _hold_out_users(root: Path, fraction: float, seed: int) -> np.ndarray:
    """Remove a seeded ``fraction`` of the users with 10+ favourites from favorites.parquet; returns their ids."""
    from interest.core.collection import read_table, write_table

    fav = read_table(root, "favorites")
    counts = fav["user_id"].value_counts()
    eligible = np.sort(counts.index[counts >= 10].astype(str).to_numpy())
    rng = np.random.default_rng(seed)
    out = rng.choice(eligible, int(round(fraction * len(eligible))), replace=False)
    write_table(root, "favorites", fav[~fav["user_id"].astype(str).isin(out)].reset_index(drop=True))
    return np.sort(out), fav


def _training_data(model, root: Path) -> dict:
    """What train_model fitted the heads on: training photos' embeddings, favourites (user, row), common scores."""
    from interest.stages.train import TrainConfig, read_training_data

    data = read_training_data(root, None, TrainConfig())
    data["base"] = model.score_embeddings(data["emb"])["ci_score"].to_numpy(np.float64)
    return data


def _other_heads(model, data: dict):
    """The package's other kind of heads (templates when the model's are joint, joint when they are templates),
    fitted on the same data, anchors and bandwidth."""
    from interest.learn.heads import UserHeads

    other = "templates" if model.heads.method_ == "joint" else "joint"
    return UserHeads(method=other, bandwidth=model.heads.bandwidth, seed=0).fit(
        model.head_inputs(data["emb"]), data["fav_users"], data["fav_rows"], data["base"], anchors=model.heads.anchors_)


def _vbpr(data: dict, seed: int):
    """cornac's VBPR (k=10, k2=10, 30 epochs, its other defaults) on the training favourites, the embeddings as
    the item images. Returns (model, {user: row of theta_user})."""
    import cornac
    from cornac.data import Dataset, ImageModality

    triples = [(str(u), str(r), 1.0) for u, r in zip(data["fav_users"], data["fav_rows"])]
    ds = Dataset.from_uir(triples, seed=seed)
    image = ImageModality(features=data["emb"].astype(np.float32), ids=[str(r) for r in range(len(data["emb"]))])
    image.build(id_map=ds.iid_map)
    ds.add_modalities(item_image=image)
    model = cornac.models.VBPR(k=10, k2=10, n_epochs=30, seed=seed, verbose=False, use_gpu=False)
    import contextlib, io

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Optimization finished!"
        model.fit(ds)
    return model, dict(ds.uid_map)


def _vbpr_visual(model, theta: np.ndarray, emb: np.ndarray) -> np.ndarray:
    """VBPR's visual part for photos it never saw: theta_u . (E f) + beta' . f."""
    return (emb @ model.emb_matrix) @ theta + (emb @ model.beta_prime).ravel()


def _vbpr_fold_in(model, liked: np.ndarray, background: np.ndarray, lambda_w: float = 0.01) -> np.ndarray:
    """A new user's theta for VBPR from liked photos' embeddings, its E and beta' fixed: the BPR loss of each liked
    photo against the background photos (cornac's lambda_w ridge per triple), minimised by L-BFGS."""
    from scipy.optimize import minimize

    diff = (liked[:, None, :] - background[None]).reshape(-1, liked.shape[1])
    proj, bias = diff @ model.emb_matrix, (diff @ model.beta_prime).ravel()
    n_pairs = len(diff)

    def loss(theta):
        x = proj @ theta + bias
        sig = 0.5 * (1 - np.tanh(0.5 * x))  # sigmoid(-x)
        value = np.logaddexp(0, -x).sum() / len(background) + len(liked) * lambda_w / 2 * theta @ theta
        grad = -(sig @ proj) / len(background) + len(liked) * lambda_w * theta
        return value, grad

    return minimize(loss, np.zeros(model.emb_matrix.shape[1]), jac=True, method="L-BFGS-B").x if n_pairs else None


def _rank_average(*scores: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return np.mean([rankdata(s) for s in scores], axis=0)


def _logistic_per_user(data: dict, rows: np.ndarray, test_x: np.ndarray, rng) -> np.ndarray:
    """A per-user logistic regression on [embedding, common score]: the user's favourites against 300 random
    training photos; its decision function on the test photos."""
    from sklearn.linear_model import LogisticRegression

    X = np.column_stack([data["emb"], data["base"]])
    negatives = rng.choice(len(X), min(300, len(X)), replace=False)
    negatives = negatives[~np.isin(negatives, rows)]
    y = np.r_[np.ones(len(rows)), np.zeros(len(negatives))]
    lr = LogisticRegression(max_iter=500, C=1.0).fit(np.vstack([X[rows], X[negatives]]), y)
    return lr.decision_function(test_x)


def run_world(name: str, work: Path, seed: int = 0, config=None) -> dict:
    from interest.core.collection import read_embeddings
    from interest.stages.labels import label_collection
    from interest.stages.labels.groups import cuts_with_shares
    from interest.learn.groups import assign_trend_groups, expected_calibration_error
    from interest.stages.train import train_model
    from interest.synthetic.family import heldout_photos, make_family_world, oracle_scores

    root = work / name
    make_family_world(name, root)
    new_users, all_fav = _hold_out_users(root, 0.2, seed)
    label_collection(root, seed=seed, progress=False)
    # heads on the split only: an app bundle's heads would have seen the test photos' favourites ranked here
    model = train_model(root, None, config=config, evaluation_only=True, progress=False)
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

    # ---- heads of training users, by activity bucket, against the oracle and the references of this run
    from scipy.stats import spearmanr

    data = _training_data(model, root)
    previous = _other_heads(model, data)
    vbpr, vbpr_users = _vbpr(data, seed)
    fav_rows_of = pd.Series(data["fav_rows"]).groupby(np.asarray(data["fav_users"]).astype(str)).apply(np.asarray)
    lr_rng = np.random.default_rng(seed + 2)
    test_x = np.column_stack([test_emb, ci])
    rows = []
    users = [u for u in sorted(test_fav["user_id"].unique()) if model.heads.has(u)]
    test_in = model.head_inputs(test_emb)
    dev = model.heads.deviations(users, test_in).astype(np.float64)
    dev0 = previous.deviations(users, test_in).astype(np.float64)
    oracle = oracle_scores(root, np.array(users), truth.reset_index())
    for j, user in enumerate(users):
        is_pos = np.zeros(len(test_ids), dtype=bool)
        is_pos[[position[p] for p in test_fav.loc[test_fav["user_id"] == user, "photo_id"]]] = True
        if is_pos.all():
            continue
        n = int(train_count.get(user, 0))
        if user in vbpr_users:
            visual = _vbpr_visual(vbpr, vbpr.theta_user[vbpr_users[user]], test_emb)
            auc_vbpr, auc_vbpr_common = _auc(visual, is_pos), _auc(_rank_average(visual, ci), is_pos)
        else:
            auc_vbpr = auc_vbpr_common = _auc(ci, is_pos)
        mine = fav_rows_of.get(user)
        auc_lr = _auc(_logistic_per_user(data, mine, test_x, lr_rng), is_pos) if mine is not None else _auc(ci, is_pos)
        rows.append((n, _auc(ci, is_pos), _auc(ci + dev[:, j], is_pos), _auc(ci + dev0[:, j], is_pos),
                     auc_vbpr, auc_vbpr_common, auc_lr, _auc(oracle[j], is_pos)))
    methods = ("common", "head", "previous_heads", "vbpr", "vbpr_common", "logistic", "oracle")
    table = pd.DataFrame(rows, columns=["n", *methods])
    heavy = table[table["n"] >= 20]
    room = float((heavy["oracle"] - heavy["common"]).mean())

    def captured(frame, column):
        r = float((frame["oracle"] - frame["common"]).mean())
        return float((frame[column] - frame["common"]).mean()) / r if r > 0 else None

    result = {
        "world": name,
        "users_20+": int(len(heavy)),
        "auc_20+": {c: float(heavy[c].mean()) for c in methods},
        "gain_20+": {c: float((heavy[c] - heavy["common"]).mean()) for c in methods if c != "common"},
        "room_20+": room,
        "captured_20+": captured(heavy, "head"),
        **{f"captured_20+_{c}": captured(heavy, c) for c in ("previous_heads", "vbpr", "vbpr_common", "logistic")},
        "ci_spearman_truth": float(spearmanr(ci, truth["true_commonality"].to_numpy()).statistic),
        "buckets": {},
        # method: what the heads were fitted with (auto keeps one of the two: its validation gains are in "auto")
        "heads": {"method": model.heads.method_, "asked": model.heads.method, "other_heads": previous.method_,
                  "auto": model.heads.validation_.get("auto"),
                  "heads_s": model.metadata.get("timings_s", {}).get("heads"),
                  "anchors": model.heads.validation_.get("n_anchors"), "factors": model.heads.validation_.get("factors"),
                  "common_weight": model.heads.validation_.get("common_weight"),
                  "regimes": [round(float(row[2]), 4) for row in model.heads.regime_settings_],
                  "shots": [round(float(row[2]), 4) for row in model.heads.shot_settings_]},
    }
    for lo, hi in ACTIVITY_BUCKETS:
        sel = table[(table["n"] >= lo) & (table["n"] < (hi or 10**9))]
        if len(sel):
            result["buckets"][bucket_name(lo, hi)] = {"users": int(len(sel)), **{c: float(sel[c].mean()) for c in methods}}

    # ---- few-shot: new users personalised from k liked photos, beside VBPR's fold-in of the same photos
    rng = np.random.default_rng(seed)
    background = data["emb"][np.sort(rng.choice(len(data["emb"]), min(256, len(data["emb"])), replace=False))]
    gains = {k: {"head": [], "previous_heads": [], "vbpr": [], "vbpr_common": []} for k in SHOTS}
    row_of = pd.Index(ids)
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
        r = model.heads.memberships(test_in)
        for k in SHOTS:
            liked_emb = emb[row_of.get_indexer(order[:k])]
            liked = model.head_inputs(liked_emb)
            w = model.heads.fit_one(liked, common_liked=model.score_embeddings(liked_emb)["ci_score"].to_numpy())
            gains[k]["head"].append(_auc(ci + r @ w, is_pos) - base_auc)
            w0 = previous.fit_one(liked, common_liked=model.score_embeddings(liked_emb)["ci_score"].to_numpy())
            gains[k]["previous_heads"].append(_auc(ci + previous.memberships(test_in) @ w0, is_pos) - base_auc)
            visual = _vbpr_visual(vbpr, _vbpr_fold_in(vbpr, liked_emb.astype(np.float64), background), test_emb)
            gains[k]["vbpr"].append(_auc(visual, is_pos) - base_auc)
            gains[k]["vbpr_common"].append(_auc(_rank_average(visual, ci), is_pos) - base_auc)
    result["few_shot"] = {
        "new_users": len(gains[SHOTS[0]]["head"]),
        **{str(k): {m: float(np.mean(v)) if v else None for m, v in gains[k].items()} for k in SHOTS},
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

    from interest.learn.groups import expected_calibration_error

    def inputs(x):
        Z, stack = model._project(model.check_embeddings(x))
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
    from interest.learn.groups import assign_trend_groups

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

    def vbpr_best(r):
        return max(r["gain_20+"]["vbpr"], r["gain_20+"]["vbpr_common"])

    out = {
        "worlds": [r["world"] for r in results],
        "captured_20+": stats([r["captured_20+"] for r in results]),
        **{f"captured_20+_{c}": stats([r[f"captured_20+_{c}"] for r in results])
           for c in ("previous_heads", "vbpr", "vbpr_common", "logistic")},
        "gain_20+": stats([r["gain_20+"]["head"] for r in results]),
        "gain_20+_vbpr_best": stats([vbpr_best(r) for r in results]),
        "head_minus_vbpr_best_20+": stats([r["gain_20+"]["head"] - vbpr_best(r) for r in results]),
        "gain_5-19": stats([r["buckets"]["5-19"]["head"] - r["buckets"]["5-19"]["common"] for r in results
                            if "5-19" in r["buckets"]]),
        "lowest_bucket_gain": stats([min(b["head"] - b["common"] for b in r["buckets"].values()) for r in results]),
        "ci_spearman_truth": stats([r["ci_spearman_truth"] for r in results]),
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
        for m in ("head", "previous_heads", "vbpr", "vbpr_common"):
            out[f"few_shot_{k}_{m}"] = stats([r["few_shot"][str(k)][m] for r in results])
    for label in ("random", "ood_cluster", "heldout", "test"):
        out[f"far_{label}_max_dev"] = max(r["far"][label]["max_abs_deviation_over_ci_spread"] for r in results)
        out[f"far_{label}_max_p"] = max(r["far"][label]["max_group_probability"] for r in results)
    return out


def table_rows(results: list[dict]) -> str:
    """A Markdown table: per world, users 20+, AUC gain over the common score of each method, share of the oracle room."""
    lines = ["| world | users 20+ | common AUC | heads | previous heads | VBPR | VBPR + common | per-user LR | oracle "
             "| heads' share of the room | 5-19 gain | lowest bucket gain | ci vs truth |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        g = r["gain_20+"]
        b = r["buckets"].get("5-19")
        lines.append(
            f"| {r['world']} | {r['users_20+']} | {r['auc_20+']['common']:.3f} | {g['head']:+.3f} | {g['previous_heads']:+.3f} "
            f"| {g['vbpr']:+.3f} | {g['vbpr_common']:+.3f} | {g['logistic']:+.3f} | {g['oracle']:+.3f} "
            f"| {100 * (r['captured_20+'] or 0):.0f}% | {(b['head'] - b['common']) if b else float('nan'):+.4f} "
            f"| {min(v['head'] - v['common'] for v in r['buckets'].values()):+.4f} | {r['ci_spearman_truth']:.3f} |")
    return "\n".join(lines)


def shot_rows(results: list[dict]) -> str:
    """A Markdown table of few-shot gains (median over worlds) at each number of liked photos."""
    lines = ["| liked photos | heads | previous heads | VBPR fold-in | VBPR fold-in + common |", "|---|---|---|---|---|"]
    for k in SHOTS:
        med = {m: statistics.median(r["few_shot"][str(k)][m] for r in results if r["few_shot"][str(k)][m] is not None)
               for m in ("head", "previous_heads", "vbpr", "vbpr_common")}
        worst = {m: min(r["few_shot"][str(k)][m] for r in results if r["few_shot"][str(k)][m] is not None) for m in med}
        lines.append(f"| {k} | " + " | ".join(f"{med[m]:+.3f} ({worst[m]:+.3f})" for m in med) + " |")
    return "\n".join(lines)


def scoring_cost(repeats: int = 7, n: int = 50_000) -> None:
    """What a user head adds to scoring: photos/s of score_embeddings without and with ``user`` (512-d, interleaved)."""
    import time

    from interest.core.collection import l2_normalize
    from interest.stages.labels import label_collection
    from interest.stages.train import train_model
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
    from interest.synthetic.family import ASIDE_WORLDS, FAMILY, TASTE_WORLDS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="+", default=FAMILY + TASTE_WORLDS + ASIDE_WORLDS)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--scoring", action="store_true", help="only: what a user head adds to scoring time")
    parser.add_argument("--config", type=Path, help="a train config (YAML, as `interest train --config`; default: the defaults)")
    args = parser.parse_args()
    from interest.core.config import load_config
    from interest.stages.train import TrainConfig

    config = load_config(TrainConfig, args.config)
    if args.scoring:
        scoring_cost()
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.worlds:
            r = run_world(name, Path(tmp), config=config)
            results.append(r)
            print(json.dumps({k: r[k] for k in ("world", "captured_20+", "gain_20+", "auc_20+", "ci_spearman_truth", "heads")}))
            print("  buckets", json.dumps(r["buckets"]))
            print("  few-shot", json.dumps(r["few_shot"]))
            print("  groups", json.dumps(r["groups"]))
            print("  far", json.dumps(r["far"]), flush=True)
    from interest.synthetic.family import ASIDE_WORLDS

    # the worlds kept aside (no default was chosen on them) are summarised apart
    chosen_on = [r for r in results if r["world"] not in ASIDE_WORLDS]
    aside = [r for r in results if r["world"] in ASIDE_WORLDS]
    summary = {"chosen_on": summarise(chosen_on) if chosen_on else None, "aside": summarise(aside) if aside else None}
    print(json.dumps(summary, indent=1))
    for label, group in (("worlds the defaults were chosen on", chosen_on), ("worlds kept aside", aside)):
        if group:
            print(f"\n{label}\n" + table_rows(group) + "\n\n" + shot_rows(group))
    if args.json:
        args.json.write_text(json.dumps({"worlds": results, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
