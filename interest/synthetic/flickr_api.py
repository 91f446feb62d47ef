"""The Flickr REST methods a crawl calls, answered from a synthetic world's tables in Flickr's own JSON.

:class:`World` is the Flickr view of a collection directory (people, photos,
favourites lists, newest first); :func:`answer` answers one request's
parameters, or raises :class:`Fail` with Flickr's error code and message.
:mod:`interest.synthetic.server` serves them over HTTP, with faults.
"""

from __future__ import annotations

import math
import zoneinfo
from datetime import datetime
from pathlib import Path

import pandas as pd

from interest.core.collection import read_table

_URL_EXTRAS = {"url_z": "z", "url_c": "c", "url_l": "b", "url_b": "b", "url_m": "m", "url_n": "n", "url_q": "q"}


class World:
    """The Flickr view of a collection directory: people, photos and favourites lists."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        users = read_table(root, "users")
        photos = read_table(root, "photos")
        favorites = read_table(root, "favorites")
        self.photos: dict[str, dict] = {r["photo_id"]: r for r in _records(photos)}
        self.people: dict[str, dict] = {}
        for r in _records(photos):
            self.people.setdefault(
                r["owner_id"],
                {"ispro": bool(r.get("owner_ispro") or False), "occupation": r.get("owner_occupation"), "realname": r.get("owner_name")},
            )
        for r in _records(users):
            person = self.people.setdefault(r["user_id"], {"ispro": False, "occupation": None})
            person.update({k: v for k, v in r.items() if k != "user_id" and v is not None})
        favorites = favorites.assign(ts=_seconds(favorites["fave_date"]))
        # Flickr lists favourites newest first
        favorites = favorites.sort_values(["user_id", "ts", "photo_id"], ascending=[True, False, True], na_position="last")
        self.favorites: dict[str, list[tuple[str, int | None]]] = {
            u: list(zip(g["photo_id"], g["ts"])) for u, g in favorites.groupby("user_id", sort=False)
        }

    def image_file(self, photo_id: str) -> Path:
        """Where the world keeps a photo's image."""
        rel = self.photos[photo_id].get("path") or f"images/{photo_id}.jpg"
        return self.root / rel


def _records(df: pd.DataFrame) -> list[dict]:
    df = df.astype(object).where(df.notna(), None)
    return df.to_dict("records")


def _seconds(col: pd.Series) -> list[int | None]:
    ts = pd.to_datetime(col, utc=True, errors="coerce")
    return [None if pd.isna(t) else int(t.timestamp()) for t in ts]


def _offset(timezone_id: str | None) -> str:
    try:
        delta = datetime(2020, 1, 1, tzinfo=zoneinfo.ZoneInfo(timezone_id)).utcoffset()
    except Exception:  # unknown or missing zone: Flickr shows GMT
        return "+00:00"
    minutes = int(delta.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


class Fail(Exception):
    """A Flickr failure answer: HTTP 200 with ``stat: fail``, ``code`` and ``message``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def answer(world: World, params: dict[str, str]) -> dict:
    """The answer to one API request (``method`` and its parameters); :class:`Fail` for Flickr's failures."""
    method = params.get("method", "")
    handler = _METHODS.get(method)
    if handler is None:
        raise Fail(112, f'Method "{method}" not found')
    return {**handler(world, params), "stat": "ok"}


def _person(world: World, params: dict) -> dict:
    uid = params.get("user_id", "")
    p = world.people.get(uid)
    if p is None:
        raise Fail(1, "User not found")
    tz = p.get("timezone_id")
    person = {
        "id": uid,
        "nsid": uid,
        "ispro": int(bool(p.get("ispro"))),
        "can_buy_pro": 0,
        "iconserver": "0",
        "iconfarm": 0,
        "path_alias": None,
        "username": {"_content": p.get("username") or uid},
        "realname": {"_content": p.get("realname") or ""},
        "location": {"_content": p.get("country") or ""},
        "description": {"_content": ""},
        "photosurl": {"_content": f"https://www.flickr.com/photos/{uid}/"},
        "profileurl": {"_content": f"https://www.flickr.com/people/{uid}/"},
        "photos": {"count": {"_content": 0}},
    }
    if p.get("timezone_label") or tz:
        person["timezone"] = {"label": p.get("timezone_label") or "", "offset": _offset(tz), "timezone_id": tz or ""}
    return {"person": person}


def _profile(world: World, params: dict) -> dict:
    uid = params.get("user_id", "")
    p = world.people.get(uid)
    if p is None:
        raise Fail(1, "User not found")
    profile = {"id": uid, "nsid": uid, "join_date": "1104537600", "hometown": "", "city": ""}
    for key in ("occupation", "country", "gender"):
        profile[key] = p.get(key) or ""
    return {"profile": profile}


def _public_list(world: World, params: dict) -> dict:
    uid = params.get("user_id", "")
    if uid not in world.people:
        raise Fail(1, "User not found")
    faves = world.favorites.get(uid, [])
    per_page = min(max(int(params.get("per_page") or 100), 1), 500)
    page = max(int(params.get("page") or 1), 1)
    extras = {e.strip() for e in (params.get("extras") or "").split(",") if e.strip()}
    chunk = faves[(page - 1) * per_page : page * per_page]
    photos = []
    for photo_id, ts in chunk:
        p = world.photos[photo_id]
        item = {
            **_photo_ref(p),
            "owner": p["owner_id"],
            "title": p.get("title") or "",
            "ispublic": 1,
            "isfriend": 0,
            "isfamily": 0,
        }
        if ts is not None:
            item["date_faved"] = str(ts)
        if "date_upload" in extras and p.get("upload_date") is not None:
            item["dateupload"] = str(int(pd.Timestamp(p["upload_date"]).timestamp()))
        if "date_taken" in extras and p.get("date_taken") is not None:
            item["datetaken"] = pd.Timestamp(p["date_taken"]).strftime("%Y-%m-%d %H:%M:%S")
            item["datetakengranularity"] = 0
        if "owner_name" in extras:
            item["ownername"] = p.get("owner_name") or ""
        if "views" in extras and p.get("views") is not None:
            item["views"] = str(int(p["views"]))
        for extra in extras & set(_URL_EXTRAS):
            item[extra] = _static_url(p, _URL_EXTRAS[extra])
        photos.append(item)
    return {
        "photos": {
            "page": page,
            "pages": math.ceil(len(faves) / per_page),
            "perpage": per_page,
            "total": len(faves),
            "photo": photos,
        }
    }


def _static_url(p: dict, size: str) -> str:
    return f"https://live.staticflickr.com/{p.get('server')}/{p['photo_id']}_{p.get('secret')}_{size}.jpg"


def _photo(world: World, params: dict) -> dict:
    p = world.photos.get(params.get("photo_id", ""))
    if p is None:
        raise Fail(1, "Photo not found")
    return p


def _photo_ref(p: dict) -> dict:
    """The fields every Flickr answer uses to name a photo (and build its static URL)."""
    return {"id": p["photo_id"], "secret": p.get("secret") or "", "server": p.get("server") or "", "farm": 66}


def _photo_info(world: World, params: dict) -> dict:
    p = _photo(world, params)
    owner = world.people.get(p["owner_id"], {})
    upload = int(pd.Timestamp(p["upload_date"]).timestamp()) if p.get("upload_date") is not None else 0
    return {
        "photo": {
            **_photo_ref(p),
            "dateuploaded": str(upload),
            "owner": {"nsid": p["owner_id"], "username": p.get("owner_name") or "", "realname": owner.get("realname") or ""},
            "title": {"_content": p.get("title") or ""},
            "views": str(int(p["views"])) if p.get("views") is not None else "0",
            "comments": {"_content": str(int(p["comments"])) if p.get("comments") is not None else "0"},
            "dates": {"posted": str(upload)},
        }
    }


def _photo_favorites(world: World, params: dict) -> dict:
    p = _photo(world, params)
    total = int(p["faves"]) if p.get("faves") is not None else 0
    per_page = min(max(int(params.get("per_page") or 10), 1), 50)
    return {
        "photo": {
            **_photo_ref(p),
            "page": 1,
            "pages": math.ceil(total / per_page),
            "perpage": per_page,
            "total": str(total),
            "person": [],
        }
    }


_METHODS = {
    "flickr.people.getInfo": _person,
    "flickr.profile.getProfile": _profile,
    "flickr.favorites.getPublicList": _public_list,
    "flickr.photos.getInfo": _photo_info,
    "flickr.photos.getFavorites": _photo_favorites,
}
