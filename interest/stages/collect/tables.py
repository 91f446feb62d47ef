"""The contract tables (users, photos, favorites) built from a crawl's state, and an image's status columns."""

from __future__ import annotations

import pandas as pd

from interest.stages.collect.answers import PERSON, PHOTO_FAVES, PHOTO_INFO, PROFILE
from interest.stages.collect.config import CollectConfig
from interest.stages.collect.state import LIST_METHOD, CrawlState


def _people(state: CrawlState) -> pd.DataFrame:
    person = state.payloads(PERSON)
    profile = state.payloads(PROFILE)
    ids = sorted(set(person) | set(profile))
    rows = [{"user_id": i, **{f"p_{k}": v for k, v in person.get(i, {}).items()}, **profile.get(i, {})} for i in ids]
    return pd.DataFrame(rows).set_index("user_id") if rows else pd.DataFrame(index=pd.Index([], name="user_id"))


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series(pd.NA, index=df.index, dtype="object")


def _first(a: pd.Series, b: pd.Series) -> list:
    """``a``'s values, ``b``'s where ``a`` is null (profile fields first, then people.getInfo's)."""
    return [x if not pd.isna(x) else y for x, y in zip(a.astype(object), b.astype(object))]


def crawl_tables(
    config: CollectConfig, state: CrawlState, out_users: list[str], favorites: pd.DataFrame, photos: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The users, photos and favorites tables from the crawl state, photos and favorites sorted by key."""
    people = _people(state)
    firsts = state.payloads(LIST_METHOD)
    depth = dict(state.db.execute("SELECT user_id, depth FROM crawl_users").fetchall())

    users = pd.DataFrame({"user_id": out_users})
    u = people.reindex(users["user_id"])
    users["gender"] = _first(_col(u, "gender"), _col(u, "p_gender"))
    users["timezone_label"] = _col(u, "p_timezone_label").to_numpy()
    users["timezone_id"] = _col(u, "p_timezone_id").to_numpy()
    users["country"] = _first(_col(u, "country"), _col(u, "p_location"))
    users["username"] = _col(u, "p_username").to_numpy()
    users["realname"] = _col(u, "p_realname").to_numpy()
    users["ispro"] = _col(u, "p_ispro").astype("boolean").to_numpy()
    users["occupation"] = _col(u, "occupation").to_numpy()
    users["favorites_total"] = [firsts[f"{x}:1"]["total"] for x in out_users]
    users["depth"] = [depth[x] for x in out_users]
    users = users.astype({c: "string" for c in ("gender", "timezone_label", "timezone_id", "country", "username", "realname", "occupation")})

    photos = photos.sort_values("photo_id").reset_index(drop=True)
    owners = people.reindex(photos["owner_id"])
    photos["owner_ispro"] = _col(owners, "p_ispro").astype("boolean").to_numpy()
    photos["owner_occupation"] = _col(owners, "occupation").astype("string").to_numpy()
    info, faves = state.payloads(PHOTO_INFO), state.payloads(PHOTO_FAVES)
    if config.enrich == "photos":
        got = [info.get(p, {}) for p in photos["photo_id"]]
        photos["views"] = [g.get("views", v) for g, v in zip(got, photos["views"])]
        photos["comments"] = pd.array([g.get("comments") for g in got], dtype="Int64")
        photos["faves"] = pd.array([faves.get(p, {}).get("faves") for p in photos["photo_id"]], dtype="Int64")
    photos["views"] = pd.array(photos["views"].tolist(), dtype="Int64")
    photos["upload_date"] = pd.to_datetime(photos["upload_date"], unit="s", utc=True)
    add_image_status(photos, state.image_rows() if config.download else {})

    favorites = favorites.sort_values(["user_id", "photo_id"]).reset_index(drop=True)
    favorites["fave_date"] = pd.to_datetime(favorites["fave_date"], unit="s", utc=True)
    return users, photos, favorites


def add_image_status(photos: pd.DataFrame, images: dict) -> None:
    """Fill ``photos``' path, sha256, status and status_reason from the settled images (photo id -> row).

    ``images`` holds :meth:`CrawlState.image_rows`' (status, path, sha256,
    reason) by photo id; a photo without one is ``not_downloaded``.
    """
    settled = [images.get(p) for p in photos["photo_id"]]
    photos["path"] = [s[1] if s else None for s in settled]
    photos["sha256"] = [s[2] if s else None for s in settled]
    photos["status"] = [s[0] if s else "not_downloaded" for s in settled]
    photos["status_reason"] = pd.array([s[3] if s else None for s in settled], dtype="string")
