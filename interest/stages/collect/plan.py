"""The dry run: how many calls each stage will make and how long that takes at the rate.

The plan asks one thing of Flickr: each seed user's favourites count
(``favorites.getPublicList`` with ``per_page=1``, one call per seed). It makes
no per-photo call and writes nothing. Snowball users are estimated at the
seeds' mean favourites count; owners are bounded by the favourites count (each
favourite a different owner), so their line is an upper bound.
"""

from __future__ import annotations

import math

from interest.stages.collect.client import CallFailed, FlickrClient
from interest.stages.collect.config import CollectConfig
from interest.stages.collect.state import LIST_METHOD


def plan_crawl(config: CollectConfig, client: FlickrClient) -> dict:
    """The crawl plan of ``config``: users, favourites, calls per stage, total, hours at the rate."""
    config.validate()
    seeds = config.seed_users()
    cap = config.max_favorites_per_user or None
    totals: dict[str, int] = {}
    unknown: list[str] = []
    for user_id in seeds:
        try:
            reply = client.call(LIST_METHOD, expect="photos", user_id=user_id, per_page=1)
            total = int(reply["photos"].get("total") or 0)
            totals[user_id] = min(total, cap) if cap else total
        except CallFailed:
            unknown.append(user_id)
    mean = sum(totals.values()) / len(totals) if totals else 0.0
    extra_users = 0
    if config.snowball:
        extra_users = max(0, config.max_users - len(seeds)) if config.max_users else 0
    n_users = len(seeds) - len(unknown) + extra_users
    favorites = sum(totals.values()) + extra_users * mean
    per_page = config.per_page
    stages = {
        "users": 2 * n_users,
        "lists": sum(max(1, math.ceil(t / per_page)) for t in totals.values())
        + extra_users * max(1, math.ceil(mean / per_page)),
        "owners (at most)": 2 * round(favorites) if config.enrich in ("owners", "photos") else 0,
        "photos (at most)": 2 * round(favorites) if config.enrich == "photos" else 0,
    }
    total = sum(stages.values())
    return {
        "seed_users": len(seeds),
        "seeds_not_found": unknown,
        "snowball_users": extra_users,
        "snowball_unbounded": bool(config.snowball and not config.max_users),
        "favorites": round(favorites),
        "calls": stages,
        "total_calls": total,
        "probe_calls": client.calls.get(LIST_METHOD, 0),
        "rate_per_hour": config.rate,
        "hours": round(total / config.rate, 2) if config.rate else 0.0,
        "images": round(favorites) if config.download else 0,
    }


def format_plan(plan: dict) -> str:
    """The plan as a small table for the terminal."""
    lines = [
        f"users: {plan['seed_users']} seeds + {plan['snowball_users']} snowball"
        + (" (snowball unbounded: set max_users to plan it)" if plan["snowball_unbounded"] else ""),
        f"favourites: about {plan['favorites']}",
        "",
        f"{'stage':<18}{'API calls':>12}",
    ]
    lines += [f"{stage:<18}{calls:>12}" for stage, calls in plan["calls"].items()]
    rate = f"at {plan['rate_per_hour']:g} calls/hour: {plan['hours']} h" if plan["rate_per_hour"] else "no rate limit"
    lines += [f"{'total':<18}{plan['total_calls']:>12}   ({rate})", f"images to download: {plan['images']} (not API calls)"]
    if plan["seeds_not_found"]:
        lines.append(f"seeds not found or failing: {', '.join(plan['seeds_not_found'])}")
    return "\n".join(lines)
