"""A crawl's summary: counts, failures, API calls against the floor; and the few lines printed at its end."""

from __future__ import annotations

import math
from collections import Counter

import pandas as pd

from interest.stages.collect.client import FlickrClient
from interest.stages.collect.config import CollectConfig
from interest.stages.collect.state import LIST_METHOD, CrawlState


def crawl_summary(
    config: CollectConfig,
    state: CrawlState,
    users: pd.DataFrame,
    favorites: pd.DataFrame,
    photos: pd.DataFrame,
    client: FlickrClient,
    elapsed: float,
    extra: dict,
) -> dict:
    """What the crawl collected and what it cost (the manifest's ``collect`` entry, settings aside)."""
    firsts = state.payloads(LIST_METHOD)
    calls = Counter(state.get_meta("calls") or {})
    calls.update(client.calls)
    cap = config.max_favorites_per_user
    # the least a crawl can do: one call per 500 favourites of each user, at least one
    floor = sum(max(1, math.ceil((min(f["total"], cap) if cap else f["total"]) / config.per_page))
                for k, f in firsts.items() if k.endswith(":1"))
    summary = {
        "users": len(users),
        "crawl_users": state.count_users(),
        "favorites": len(favorites),
        "photos": len(photos),
        "images": int((photos["status"] == "ok").sum()),
        "failures": state.failures(),
        "calls": dict(sorted(calls.items())),
        "calls_total": sum(v for k, v in calls.items() if k != "image"),
        "list_calls": calls.get(LIST_METHOD, 0),
        "list_calls_floor": floor,
        "lists_capped": sum(1 for k, f in firsts.items() if k.endswith(":1") and f.get("capped")),
        "retries": dict(sorted(client.retried.items())),
        "elapsed_s": round(elapsed, 2),
        **extra,
    }
    return summary


def format_summary(summary: dict) -> str:
    """The end-of-crawl summary as a few readable lines."""
    failures = ", ".join(f"{k} {v}" for k, v in sorted(summary["failures"].items())) or "none"
    text = (
        f"collected {summary['users']} users, {summary['favorites']} favourites, {summary['photos']} photos, "
        f"{summary['images']} images in {summary['elapsed_s']} s\n"
        f"API calls {summary['calls_total']} ({summary['list_calls']} list calls, the floor is {summary['list_calls_floor']}); "
        f"failures: {failures}"
    )
    if "retry_failed" in summary:
        r = summary["retry_failed"]
        text += f"\nretry-failed: {r['retried']} retried, {r['came_back']} came back"
    return text
