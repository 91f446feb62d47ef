"""Flickr's answers checked and parsed: the API methods a crawl calls and what each answer must hold.

Every answer is checked before it is stored: a value out of range or of the
wrong type makes that item ``malformed`` (:class:`Malformed`).
"""

from __future__ import annotations

import math
from typing import Any

from interest.stages.collect.config import SIZE_EXTRAS

PERSON = "flickr.people.getInfo"
PROFILE = "flickr.profile.getProfile"
PHOTO_INFO = "flickr.photos.getInfo"
PHOTO_FAVES = "flickr.photos.getFavorites"

#: counts (views, favourites, comments) beyond this are not real answers
MAX_COUNT = 10**12
#: Unix times outside 1970-01-01 .. 2100-01-01 are not real dates
MAX_TIMESTAMP = 4_102_444_800
_MAX_ID = 200
_MAX_TEXT = 2000


class Malformed(ValueError):
    """An answer (or one photo of a page) with a value of the wrong type or out of range."""


def _content(value: Any) -> Any:
    return value.get("_content") if isinstance(value, dict) else value


def _text(value: Any) -> str | None:
    value = _content(value)
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    text = str(value)[:_MAX_TEXT]
    return None if text.strip() == "" else text


def _int(value: Any) -> int | None:
    value = _content(value)
    if value is None or value == "" or isinstance(value, (bool, float, dict, list)):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):  # "abc", or a number of more than 4300 digits
        return None


def _ranged(value: Any, name: str, high: int) -> int | None:
    """An optional integer field that must lie in 0..high when present."""
    raw = _content(value)
    number = _int(raw)
    if number is None:
        if raw not in (None, "") and not isinstance(raw, str):
            raise Malformed(f"{name} is a {type(raw).__name__}, not a number")
        return None
    if not 0 <= number <= high:
        shown = str(number) if len(str(number)) <= 20 else f"a {len(str(number))}-digit number"
        raise Malformed(f"{name} {shown} is out of range")
    return number


def _count(value: Any, name: str) -> int | None:
    return _ranged(value, name, MAX_COUNT)


def _timestamp(value: Any, name: str) -> int | None:
    return _ranged(value, name, MAX_TIMESTAMP)


def _object(value: Any, name: str, *, optional: bool = False) -> dict:
    if optional and value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise Malformed(f"{name} is a {type(value).__name__}, not an object")
    return value


def parse_person(reply: dict) -> dict:
    """The fields of people.getInfo the tables use."""
    p = _object(reply["person"], "person")
    tz = _object(p.get("timezone"), "timezone", optional=True)
    ispro = _count(p.get("ispro"), "ispro")
    return {
        "ispro": None if ispro is None else bool(ispro),
        "username": _text(p.get("username")),
        "realname": _text(p.get("realname")),
        "location": _text(p.get("location")),
        "gender": _text(p.get("gender")),
        "timezone_label": _text(tz.get("label")),
        "timezone_id": _text(tz.get("timezone_id")),
        "timezone_offset": _text(tz.get("offset")),
    }


def parse_profile(reply: dict) -> dict:
    """The fields of profile.getProfile the tables use."""
    p = _object(reply["profile"], "profile")
    return {k: _text(p.get(k)) for k in ("occupation", "country", "gender", "hometown", "city")}


def _photo_id(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Malformed(f"photo id is a {type(value).__name__}")
    pid = str(value)
    if not pid.strip() or len(pid) > _MAX_ID:
        raise Malformed("photo id is empty or too long")
    return pid


def parse_page(
    reply: dict, user_id: str, page: int, per_page: int, size: str, max_pages: int
) -> tuple[dict, list[tuple], list[tuple], list[tuple[str, str]]]:
    """A favourites page: (totals, list_photos rows, favorites rows, malformed entries as (photo id, why)).

    ``pages`` is capped at ``max_pages`` (and at what ``total`` implies), so a
    hostile count never turns into work; a photo entry with a bad value is
    left out and reported, the rest of the page kept.
    """
    photos = _object(reply["photos"], "photos")
    total = _count(photos.get("total"), "total") or 0
    claimed = _count(photos.get("pages"), "pages") or 0
    pages = min(claimed, max(1, math.ceil(total / per_page)), max_pages)
    entries = photos.get("photo") or []
    if not isinstance(entries, list) or len(entries) > per_page:
        raise Malformed(f"photo is not a list of at most {per_page} entries")
    totals = {"page": page, "pages": pages, "total": total, "capped": claimed > pages}
    url_key = SIZE_EXTRAS[size]
    photo_rows, fave_rows, bad = [], [], []
    for i, ph in enumerate(entries):
        try:
            ph = _object(ph, "photo entry")
            pid = _photo_id(ph.get("id"))
            row = (
                pid,
                _text(ph.get("owner")),
                _text(ph.get("secret")),
                _text(ph.get("server")),
                _text(ph.get(url_key)) or static_url(ph, size),
                _count(ph.get("views"), "views"),
                _timestamp(ph.get("dateupload"), "dateupload"),
                _text(ph.get("title")),
                _text(ph.get("ownername")),
                _text(ph.get("datetaken")),
            )
            fave = (user_id, pid, _timestamp(ph.get("date_faved"), "date_faved"), (page - 1) * per_page + i)
        except Malformed as exc:
            where = str(ph.get("id"))[:64] if isinstance(ph, dict) else f"#{i}"
            bad.append((f"{user_id}:{page}:{where}", str(exc)))
            continue
        photo_rows.append(row)
        fave_rows.append(fave)
    totals["n"] = len(photo_rows)
    return totals, photo_rows, fave_rows, bad


def parse_photo_info(reply: dict) -> dict:
    """The fields of photos.getInfo the tables use."""
    p = _object(reply["photo"], "photo")
    return {
        "views": _count(p.get("views"), "views"),
        "comments": _count(p.get("comments"), "comments"),
        "upload_date": _timestamp(p.get("dateuploaded"), "dateuploaded"),
    }


def parse_photo_faves(reply: dict) -> dict:
    """photos.getFavorites (per_page=1): the favourite count."""
    return {"faves": _count(_object(reply["photo"], "photo").get("total"), "total")}


#: each single-item method: its parser and the key its answer must hold
PARSERS = {PERSON: (parse_person, "person"), PROFILE: (parse_profile, "profile"), PHOTO_INFO: (parse_photo_info, "photo"), PHOTO_FAVES: (parse_photo_faves, "photo")}


def static_url(photo: dict, size: str) -> str | None:
    """The static image URL of a photo from its server and secret (when the url extra is absent)."""
    if not photo.get("server") or not photo.get("secret"):
        return None
    return f"https://live.staticflickr.com/{photo['server']}/{photo['id']}_{photo['secret']}_{size}.jpg"
