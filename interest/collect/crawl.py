"""The crawl: users -> favourites lists -> owners -> per-photo enrichment -> images.

Every stage asks only for what the crawl state does not already hold, so each
is resumable on its own, and the contract tables are built at the end from
the state alone, sorted by key: a crawl killed and resumed ends with exactly
the tables of an uninterrupted one.

Call costs (``N`` users, ``F`` favourites, ``O`` distinct owners, ``P``
distinct photos): users ``2N`` (people.getInfo + profile.getProfile), lists
``~F/500`` (favorites.getPublicList with ``per_page=500`` and the extras that
carry views, upload date, owner and the image URL), owners ``2O`` (minus
owners who are crawl users, fetched once), photos ``2P`` (photos.getInfo for
comments, photos.getFavorites for the favourite count; only with
``enrich=photos``). Image downloads are not API calls.

Every answer is checked before it is stored: a value out of range or of the
wrong type (a timezone that is a string, views of 10**30, an upload date in
the year 33,000) makes that item ``malformed`` (recorded with the reason, the
crawl goes on, and ``--resume`` does not ask again); a favourites answer that
claims more pages than ``max_list_pages`` is read up to that cap.

Snowball mode grows the user set from the owners of collected favourites, in
rounds: round ``d+1`` is decided only once every list of round ``d`` is in, and
its users are the most frequent owners (ties by id), so the user set never
depends on thread timing.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from tqdm import tqdm

from interest.collect.client import CallFailed, FlickrClient, resolve_credentials
from interest.collect.download import MAX_PIXELS, download_images, remove_temporaries
from interest.collect.limiter import RateLimiter
from interest.collect.pool import run_parallel
from interest.collect.state import LIST_METHOD, CrawlLock, CrawlState
from interest.collection import read_manifest, write_json_atomic, write_table
from interest.errors import InterestError
from interest.progress import progress_bar

PERSON = "flickr.people.getInfo"
PROFILE = "flickr.profile.getProfile"
PHOTO_INFO = "flickr.photos.getInfo"
PHOTO_FAVES = "flickr.photos.getFavorites"
#: a photo entry of a favourites page that was left out (its key: user:photo id)
LIST_ENTRY = "list_entry"

ENRICH_LEVELS = ("none", "owners", "photos")
#: image size suffix -> the getPublicList extra that carries its URL (Flickr names "b" url_l)
SIZE_EXTRAS = {"z": "url_z", "c": "url_c", "b": "url_l"}
#: settings that decide what a crawl collects: a resumed crawl must keep them
CRAWL_DEFINING = ("users", "snowball", "max_users", "min_favorites", "max_favorites_per_user", "per_page", "enrich", "image_size", "download")


@dataclass
class CollectConfig:
    """Settings of a crawl (``configs/collect.yaml``); credentials are never written anywhere."""

    rest_url: str = "https://api.flickr.com/services/rest/"
    image_host: str = ""  # e.g. http://127.0.0.1:8000: replaces the static host of image URLs
    api_key: str = field(default="", repr=False)  # FLICKR_API_KEY wins over this
    api_secret: str = field(default="", repr=False)  # FLICKR_API_SECRET wins over this
    rate: float = 3500.0  # API calls an hour for the whole process; 0 = unlimited
    image_rate: float = 0.0  # image downloads an hour; 0 = unlimited
    threads: int = 8
    retries: int = 6  # tries of an API call on transient failures before it is recorded as failed
    image_retries: int = 3  # tries of an image on transient failures (--retry-failed tries again later)
    body_tries: int = 3  # tries of an image whose body never arrives whole, then bad_image
    backoff: float = 2.0  # seconds before the first retry; doubles each try, with jitter
    max_backoff: float = 300.0
    timeout: float = 30.0  # wall-clock deadline of one HTTP request, however slowly it trickles
    max_json_bytes: int = 16 * 2**20  # an API answer over this is refused (too_large)
    max_image_bytes: int = 32 * 2**20  # an image body over this is refused (too_large)
    max_image_pixels: int = MAX_PIXELS  # a decoded image over this is bad_image (too_many_pixels)
    max_redirects: int = 3  # hops an image request may follow, to allowed hosts only
    max_list_pages: int = 2000  # a favourites list is read up to this many pages (1M favourites at 500)
    placeholder_sha256: list = field(default_factory=list)  # hashes of placeholder images to refuse
    seed: int = 0  # seeds the backoff jitter
    users: list = field(default_factory=list)  # seed user NSIDs
    users_file: str = ""  # one NSID a line; '#' starts a comment
    snowball: int = 0  # rounds of growing the user set from favourites' owners
    max_users: int = 0  # cap on crawl users (seeds always kept); 0 = no cap
    min_favorites: int = 0  # users with fewer public favourites are left out of the tables
    max_favorites_per_user: int = 0  # newest N favourites per user; 0 = all
    per_page: int = 500
    enrich: str = "owners"  # none | owners | photos
    image_size: str = "z"  # z (640 px) | c (800) | b (1024)
    download: bool = True

    def validate(self) -> None:
        """Raise InterestError naming the first bad setting."""
        if self.enrich not in ENRICH_LEVELS:
            raise InterestError(f"enrich: '{self.enrich}' is not one of {', '.join(ENRICH_LEVELS)}")
        if self.image_size not in SIZE_EXTRAS:
            raise InterestError(f"image_size: '{self.image_size}' is not one of {', '.join(SIZE_EXTRAS)}")
        if not 1 <= self.per_page <= 500:
            raise InterestError(f"per_page: {self.per_page} is outside 1..500 (Flickr's maximum is 500)")
        for name in ("rate", "image_rate", "max_users", "min_favorites", "max_favorites_per_user", "snowball"):
            if getattr(self, name) < 0:
                raise InterestError(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("threads", "retries", "image_retries", "body_tries", "max_json_bytes", "max_image_bytes", "max_image_pixels", "max_list_pages"):
            if getattr(self, name) < 1:
                raise InterestError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.max_redirects < 0 or self.timeout <= 0:
            raise InterestError("max_redirects must be >= 0 and timeout > 0")
        bad = [h for h in self.placeholder_sha256 if not (isinstance(h, str) and len(h) == 64 and all(c in "0123456789abcdefABCDEF" for c in h))]
        if bad:
            raise InterestError(f"placeholder_sha256: {str(bad[0])[:70]!r} is not a SHA-256 hex digest")

    def seed_users(self) -> list[str]:
        """The seed NSIDs from ``users`` and ``users_file``, in order, without repeats."""
        given = self.users.split(",") if isinstance(self.users, str) else self.users
        ids = [str(u).strip() for u in given if str(u).strip()]
        if self.users_file:
            path = Path(self.users_file)
            if not path.is_file():
                raise InterestError(f"{path}: users file not found (one NSID a line)")
            for line in path.read_text(encoding="utf-8").splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    ids.append(line)
        return list(dict.fromkeys(ids))

    def public_dict(self) -> dict[str, Any]:
        """The settings as a dict without the credentials (what manifests record)."""
        d = dataclasses.asdict(self)
        d.pop("api_key")
        d.pop("api_secret")
        return d


def make_client(config: CollectConfig, *, threads: int | None = None, environment: bool = True) -> FlickrClient:
    """A client for ``config``: credentials from the environment or config, one limiter for all threads.

    ``environment=False`` uses the config's key whatever FLICKR_API_KEY holds
    (the demo talks to its own local server).
    """
    key, secret = resolve_credentials(config.api_key, config.api_secret, environment=environment)
    return FlickrClient(
        key,
        secret,
        rest_url=config.rest_url,
        image_host=config.image_host or None,
        limiter=RateLimiter(config.rate),
        image_limiter=RateLimiter(config.image_rate),
        retries=config.retries,
        backoff=config.backoff,
        max_backoff=config.max_backoff,
        timeout=config.timeout,
        max_json_bytes=config.max_json_bytes,
        max_image_bytes=config.max_image_bytes,
        max_redirects=config.max_redirects,
        threads=threads or config.threads,
        seed=config.seed,
    )


def extras_for(config: CollectConfig) -> str:
    """The getPublicList extras: everything the photos table needs without a per-photo call."""
    return f"date_upload,date_taken,owner_name,views,{SIZE_EXTRAS[config.image_size]}"


def static_url(photo: dict, size: str) -> str | None:
    """The static image URL of a photo from its server and secret (when the url extra is absent)."""
    if not photo.get("server") or not photo.get("secret"):
        return None
    return f"https://live.staticflickr.com/{photo['server']}/{photo['id']}_{photo['secret']}_{size}.jpg"


# ---------------------------------------------------------------- answer parsing

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


PARSERS = {PERSON: (parse_person, "person"), PROFILE: (parse_profile, "profile"), PHOTO_INFO: (parse_photo_info, "photo"), PHOTO_FAVES: (parse_photo_faves, "photo")}


# ---------------------------------------------------------------- the crawl


class _Crawl:
    def __init__(self, out: Path, config: CollectConfig, client: FlickrClient, state: CrawlState, progress: bool) -> None:
        self.out, self.config, self.client, self.state, self.progress = out, config, client, state, progress
        self.cap_pages = math.ceil(config.max_favorites_per_user / config.per_page) if config.max_favorites_per_user else None

    def _bar(self, desc: str, total: int) -> tqdm:
        return progress_bar(total=total, desc=desc, unit="call", enabled=self.progress, dynamic_ncols=True)

    def call_items(self, desc: str, items: list[tuple[str, str]]) -> None:
        """Make the single-item calls (method, key) that the state does not hold yet."""
        done = {m: self.state.done_keys(m) for m in {m for m, _ in items}}
        pending = [(m, k) for m, k in dict.fromkeys(items) if k not in done[m]]

        def work(item: tuple[str, str]) -> dict:
            method, key = item
            parse, expect = PARSERS[method]
            params = {"photo_id": key} if method in (PHOTO_INFO, PHOTO_FAVES) else {"user_id": key}
            if method == PHOTO_FAVES:
                params["per_page"] = 1
            reply = self.client.call(method, expect=expect, **params)
            try:
                return parse(reply)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise CallFailed("malformed", f"{method}: {str(exc)[:200]}") from None

        def on_result(item: tuple[str, str], result: dict | CallFailed) -> None:
            method, key = item
            if isinstance(result, CallFailed):
                self.state.record_failed(method, key, result.reason, self.client.scrub(result.detail))
            else:
                self.state.record_ok(method, key, result)

        with self._bar(desc, len(pending)) as bar:
            run_parallel(pending, work, on_result, threads=self.config.threads, bar=bar)

    def users_stage(self, users: list[str]) -> None:
        self.call_items("users", [(m, u) for u in users for m in (PERSON, PROFILE)])

    def lists_stage(self, users: list[str]) -> None:
        done = self.state.done_keys(LIST_METHOD)
        firsts = self.state.payloads(LIST_METHOD)
        pending: list[tuple[str, int]] = []
        for u in users:
            first = firsts.get(f"{u}:1")
            if f"{u}:1" not in done:
                pending.append((u, 1))
            elif first is not None:
                pending += [(u, p) for p in self._pages(first) if f"{u}:{p}" not in done]
        extras, per_page, size = extras_for(self.config), self.config.per_page, self.config.image_size
        max_pages = self.config.max_list_pages

        def work(item: tuple[str, int]) -> tuple:
            user_id, page = item
            reply = self.client.call(LIST_METHOD, expect="photos", user_id=user_id, extras=extras, per_page=per_page, page=page)
            try:
                return parse_page(reply, user_id, page, per_page, size, max_pages)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise CallFailed("malformed", f"getPublicList {user_id} page {page}: {str(exc)[:200]}") from None

        def on_result(item: tuple[str, int], result: tuple | CallFailed) -> list[tuple[str, int]]:
            user_id, page = item
            if isinstance(result, CallFailed):
                self.state.record_failed(LIST_METHOD, f"{user_id}:{page}", result.reason, self.client.scrub(result.detail))
                return []
            totals, photos, faves, bad = result
            self.state.record_page(user_id, page, per_page, totals, photos, faves, bad)
            return [(user_id, p) for p in self._pages(totals)] if page == 1 else []

        with self._bar("favourites lists", len(pending)) as bar:
            run_parallel(pending, work, on_result, threads=self.config.threads, bar=bar)

    def _pages(self, first: dict) -> range:
        """The pages after the first that the crawl asks for."""
        last = min(first["pages"], self.config.max_list_pages)
        if self.cap_pages is not None:
            last = min(last, self.cap_pages)
        return range(2, last + 1)

    def _cap_sql(self) -> str:
        cap = self.config.max_favorites_per_user
        return f"pos < {int(cap)}" if cap else "1"

    def grow_snowball(self) -> bool:
        """Add the next snowball round; False when the crawl has all its users."""
        depth = self.state.max_depth()
        room = self.config.max_users - self.state.count_users() if self.config.max_users else None
        if depth >= self.config.snowball or (room is not None and room <= 0):
            return False
        rows = self.state.db.execute(
            f"""SELECT p.owner_id, COUNT(*) AS n FROM favorites f
                JOIN crawl_users c ON c.user_id = f.user_id AND c.depth = ?
                JOIN list_photos p ON p.photo_id = f.photo_id
                WHERE {self._cap_sql()} AND p.owner_id IS NOT NULL
                  AND p.owner_id NOT IN (SELECT user_id FROM crawl_users)
                GROUP BY p.owner_id ORDER BY n DESC, p.owner_id""",
            (depth,),
        ).fetchall()
        candidates = [r[0] for r in rows][:room]
        if not candidates:
            return False
        self.state.add_users(candidates, depth + 1)
        return True

    def output_users(self) -> list[str]:
        """Crawl users whose list came back and who have at least ``min_favorites`` favourites."""
        firsts = self.state.payloads(LIST_METHOD)
        return [
            u for u in self.state.users()
            if f"{u}:1" in firsts and firsts[f"{u}:1"]["total"] >= self.config.min_favorites
        ]

    def output_favorites(self, users: list[str]) -> pd.DataFrame:
        self.state.db.execute("CREATE TEMP TABLE IF NOT EXISTS out_users (user_id TEXT PRIMARY KEY)")
        self.state.db.execute("DELETE FROM out_users")
        self.state.db.executemany("INSERT INTO out_users VALUES (?)", [(u,) for u in users])
        return pd.read_sql_query(
            f"""SELECT f.user_id, f.photo_id, f.fave_date FROM favorites f
                JOIN out_users o ON o.user_id = f.user_id WHERE {self._cap_sql()}""",
            self.state.db,
        )

    def list_photos(self, photo_ids: Iterable[str]) -> pd.DataFrame:
        df = pd.read_sql_query("SELECT * FROM list_photos", self.state.db)
        return df[df["photo_id"].isin(set(photo_ids))]


def collect(
    out: str | os.PathLike,
    config: CollectConfig,
    *,
    progress: bool = True,
    resume: bool = False,
    retry_failed: bool = False,
    client: FlickrClient | None = None,
) -> dict:
    """Crawl Flickr favourites into collection ``out``; return the summary (also in manifest.json).

    ``resume=True`` continues the crawl recorded in ``out/.collect/state.sqlite``;
    without it, ``out`` must not hold a crawl already. ``retry_failed=True``
    (with ``resume``) first puts back what failed for a transient reason (HTTP
    5xx/429, timeouts, connection errors, truncated bodies); the summary's
    ``retry_failed`` says how many came back. Only one crawl at a time may
    write ``out`` (a lock under ``.collect/``). ``client`` defaults to
    :func:`make_client` of ``config``. Raises InterestError on a user's
    mistake (no key, no users, an invalid key, changed settings on resume,
    another crawl running).
    """
    config.validate()
    seeds = config.seed_users()
    if not seeds:
        raise InterestError("no users to crawl: give --users NSID,... or --users-file FILE (or users: in the config)")
    if retry_failed and not resume:
        raise InterestError("--retry-failed retries the failures of an earlier crawl: add --resume")
    out = Path(out)
    state_path = CrawlState.for_output(out)
    client = client or make_client(config)
    with CrawlLock(out):  # before anything in out is touched: a second crawl changes nothing
        if state_path.exists() and not resume:
            raise InterestError(f"{out}: holds a crawl already; add --resume to continue it, or choose a new directory")
        started = time.monotonic()
        remove_temporaries(out)
        state = CrawlState(state_path)
        try:
            _check_settings(state, config, seeds, state_path)
            if retry_failed:
                state.retry_transient_failures()
            summary = _run(out, config, client, state, seeds, progress, started, retry_failed)
        except BaseException:
            client.stop()  # a Ctrl-C must not wait for requests in flight or backoff sleeps
            raise
        finally:
            _add_calls(state, client)
            state.close()
    if progress:
        tqdm.write(format_summary(summary))
    return summary


def _run(
    out: Path, config: CollectConfig, client: FlickrClient, state: CrawlState, seeds: list[str], progress: bool,
    started: float, retry_failed: bool,
) -> dict:
    state.add_users(seeds, 0)
    crawl = _Crawl(out, config, client, state, progress)
    while True:
        users = state.users()
        crawl.users_stage(users)
        crawl.lists_stage(users)
        if not crawl.grow_snowball():
            break
    out_users = crawl.output_users()
    favorites = crawl.output_favorites(out_users)
    photos = crawl.list_photos(favorites["photo_id"].unique())
    if config.enrich in ("owners", "photos"):
        owners = sorted(photos["owner_id"].dropna().unique())
        crawl.call_items("owners", [(m, o) for o in owners for m in (PERSON, PROFILE)])
    if config.enrich == "photos":
        ids = sorted(photos["photo_id"])
        crawl.call_items("photos", [(m, p) for p in ids for m in (PHOTO_INFO, PHOTO_FAVES)])
    if config.download:
        jobs = sorted(zip(photos["photo_id"], photos["url"]))
        download_images(
            out, jobs, client, state, threads=config.threads, progress=progress, retries=config.image_retries,
            body_tries=config.body_tries, backoff=config.backoff, max_backoff=config.max_backoff,
            placeholder_sha256=config.placeholder_sha256, max_pixels=config.max_image_pixels, seed=config.seed,
        )
    extra = {"retry_failed": state.retried_outcome()} if retry_failed else {}
    return _write_tables(out, config, state, out_users, favorites, photos, client, time.monotonic() - started, extra)


def _check_settings(state: CrawlState, config: CollectConfig, seeds: list[str], path: Path) -> None:
    settings = {k: v for k, v in config.public_dict().items() if k in CRAWL_DEFINING}
    settings["users"] = seeds
    stored = state.get_meta("settings")
    if stored is None:
        state.set_meta("settings", settings)
        return
    for key, value in settings.items():
        if stored.get(key) != value:
            raise InterestError(
                f"{path}: the crawl being resumed used {key}={stored.get(key)!r}, not {value!r}; "
                "resume with the same setting or start a new directory"
            )


def _add_calls(state: CrawlState, client: FlickrClient) -> None:
    total = Counter(state.get_meta("calls") or {})
    total.update(client.calls)
    state.set_meta("calls", dict(total))
    client.calls.clear()


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


def _write_tables(
    out: Path,
    config: CollectConfig,
    state: CrawlState,
    out_users: list[str],
    favorites: pd.DataFrame,
    photos: pd.DataFrame,
    client: FlickrClient,
    elapsed: float,
    extra: dict,
) -> dict:
    """Build the contract tables from the crawl state, sorted by key; write them and the manifest."""
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
    images = state.image_rows() if config.download else {}
    settled = [images.get(p) for p in photos["photo_id"]]
    photos["path"] = [s[1] if s else None for s in settled]
    photos["sha256"] = [s[2] if s else None for s in settled]
    photos["status"] = [s[0] if s else "not_downloaded" for s in settled]
    photos["status_reason"] = pd.array([s[3] if s else None for s in settled], dtype="string")

    favorites = favorites.sort_values(["user_id", "photo_id"]).reset_index(drop=True)
    favorites["fave_date"] = pd.to_datetime(favorites["fave_date"], unit="s", utc=True)

    info = {"source": "interest collect", "rest_url": config.rest_url}
    write_table(out, "users", users.sort_values("user_id"), **info)
    write_table(out, "photos", photos, **info)
    write_table(out, "favorites", favorites, **info)

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
    manifest = read_manifest(out)
    manifest["collect"] = {**summary, "settings": config.public_dict()}
    write_json_atomic(Path(out) / "manifest.json", manifest)
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
