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

import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Iterable

import pandas as pd
from tqdm import tqdm

from interest.stages.collect.answers import PARSERS, PERSON, PHOTO_FAVES, PHOTO_INFO, PROFILE, parse_page
from interest.stages.collect.client import CallFailed, FlickrClient
from interest.stages.collect.config import CRAWL_DEFINING, CollectConfig, extras_for, make_client
from interest.stages.collect.download import download_images, remove_temporaries
from interest.stages.collect.pool import run_parallel
from interest.stages.collect.state import LIST_METHOD, CrawlLock, CrawlState
from interest.stages.collect.summary import crawl_summary, format_summary
from interest.stages.collect.tables import crawl_tables
from interest.core.collection import read_manifest, write_json_atomic, write_table
from interest.core.errors import InterestError
from interest.core.progress import progress_bar


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
    users, photos, favorites = crawl_tables(config, state, out_users, favorites, photos)
    info = {"source": "interest collect", "rest_url": config.rest_url}
    write_table(out, "users", users.sort_values("user_id"), **info)
    write_table(out, "photos", photos, **info)
    write_table(out, "favorites", favorites, **info)

    summary = crawl_summary(config, state, users, favorites, photos, client, elapsed, extra)
    manifest = read_manifest(out)
    manifest["collect"] = {**summary, "settings": config.public_dict()}
    write_json_atomic(Path(out) / "manifest.json", manifest)
    return summary
