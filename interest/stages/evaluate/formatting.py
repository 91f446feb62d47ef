"""The evaluation's metrics as a plain-text table (headline first) and as JSON-ready values."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def format_metrics(metrics: dict) -> str:
    """The metrics of :func:`evaluate` as a readable plain-text table, headline first."""
    f = _fmt
    corner = "true \\ predicted"
    rel, ci, groups, users = metrics["reliability"], metrics["ci"], metrics["groups"], metrics["users"]
    lines = [
        f"held-out photos {metrics['n_test_photos']}, held-out favourites {metrics['n_test_favourites']}, "
        f"backbone {metrics['backbone']}, commonality {metrics['commonality']}, "
        f"metadata {'used' if metrics['used_metadata'] else 'not used'}",
        *([
            "the bundle learned from every user and photo (an app bundle): the figures below are of the same "
            "training refitted on the label split (`interest train --evaluation-only`)"
        ] if metrics.get("refitted") == "model" else []),
        "",
        *_headline_lines(metrics),
        "secondary, partition-level (a model that only knows a photo's partition scores well here, "
        "whatever the partitions' relation to common appeal):",
        f"reliability (split-half, {rel['splits']} splits of {rel['n_users']} users): "
        f"spearman {f(rel['split_half_spearman'])} ± {f(rel['split_half_spearman_sd'])}, "
        f"spearman-brown {f(rel['spearman_brown'])}, full-set ceiling {f(rel['full_ceiling'])}",
        "",
        f"{'CI':<22}{'spearman':>10}{'pearson':>10}{'MAE':>10}{'/split-half':>13}{'/full-set':>11}",
        f"{'  vs held-out CI':<22}{f(ci['heldout']['spearman']):>10}{f(ci['heldout']['pearson']):>10}"
        f"{_sig(ci['heldout']['mae']):>10}{f(ci['heldout']['spearman_over_ceiling']):>13}"
        f"{f(ci['heldout']['spearman_over_full_ceiling']):>11}",
        f"{'  vs label CI':<22}{f(ci['label']['spearman']):>10}{f(ci['label']['pearson']):>10}"
        f"{_sig(ci['label']['mae']):>10}",
        "",
        f"trend groups: macro-F1 {f(groups['macro_f1'])}, accuracy {f(groups['accuracy'])}",
        f"  {corner:<18}" + "".join(f"{g:>12}" for g in groups["groups"]),
    ]
    for name, row in zip(groups["groups"], groups["confusion"]):
        lines.append(f"  {name:<18}" + "".join(f"{v:>12}" for v in row))
    lines += [
        "",
        f"users: held-out favourites ranked among up to {users['negatives']} non-favourites "
        f"(AUC, NDCG@{users['ndcg_at']}); common-only vs common + head"
        + (" (heads refitted on the label split: the bundle's learned from these favourites too)"
           if metrics.get("refitted") == "heads" else ""),
        f"  {'train faves':<12}{'users':>7}{'heads':>7}{'AUC com':>9}{'AUC head':>9}{'diff':>8}"
        f"{'NDCG com':>10}{'NDCG head':>10}{'diff':>8}",
    ]
    for b in [*users["buckets"], {"bucket": "20+", **users["20+"]}, {"bucket": "all", **users["all"]}]:
        lines.append(
            f"  {b['bucket']:<12}{b['n_users']:>7}{b['n_with_head']:>7}{f(b['auc_common']):>9}{f(b['auc_head']):>9}"
            f"{f(b['auc_diff'], signed=True):>8}{f(b['ndcg_common']):>10}{f(b['ndcg_head']):>10}"
            f"{f(b['ndcg_diff'], signed=True):>8}"
        )
    gt = metrics.get("ground_truth")
    if gt:
        lines += [
            "",
            f"ground truth (synthetic): spearman vs common_appeal: predicted CI {f(gt['spearman_predicted'])}, "
            f"label CI {f(gt['spearman_label'])}",
        ]
    return "\n".join(lines)


def _headline_lines(metrics: dict) -> list[str]:
    f = _fmt
    names = ("model", "study_recipe", "random")
    lines = []
    new, photo, truth = metrics.get("new_users"), metrics.get("photo_level"), metrics.get("truth")
    if new:
        lines += [
            f"new users ({new['n_users']} held out whole; their held-out favourites among up to {new['negatives']} "
            f"held-out photos, by the common score alone)",
            f"  {'score':<16}{'AUC':>8}{'NDCG@' + str(new['ndcg_at']):>10}",
        ]
        lines += [f"  {n:<16}{f(new[n]['auc']):>8}{f(new[n]['ndcg']):>10}" for n in names if n in new]
    else:
        lines.append("new users: none held out (re-run `interest label` with --user-test-fraction above 0)")
    if photo:
        lines += [
            "",
            f"photo-level held-out commonality (distinct new users per held-out photo, mean {f(photo['mean_count'])}): "
            "Spearman, Poisson deviance explained (one fitted scale)",
        ]
        lines += [
            f"  {n:<16}{f(photo[n]['spearman']):>8}{f(photo[n]['deviance_explained']):>10}" for n in names if n in photo
        ]
    if truth:
        never = truth.get("never_held") or {}
        lines += [
            "",
            f"ground truth (synthetic): Spearman vs true commonality; held-out photos ({truth['n_test']})"
            + (f", photos never held ({truth.get('n_never_held')})" if never else ""),
        ]
        lines += [
            f"  {n:<16}{f(truth['test'].get(n)):>8}" + (f"{f(never.get(n)):>10}" if never else "")
            for n in names if n in truth["test"]
        ]
        if "app_bundle" in never:
            lines.append(f"  {'app bundle':<16}{'-':>8}{f(never['app_bundle']):>10}  (every user and photo)")
    return [*lines, ""]


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _sig(value: float | None) -> str:
    """Three significant digits: errors on the CI's own scale (an image-level label's is ~0.001-0.05)."""
    return "-" if value is None else f"{value:.3g}"


def json_ready(obj: Any) -> Any:
    """Plain Python types only, NaN and inf as None."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
