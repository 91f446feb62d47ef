"""Crawl state in SQLite (WAL): what was asked, what came back, what failed and why.

Every answer is stored in one transaction together with what it implies (a
favourites page and its photos and favourites rows; a user's info; an
image's file, hash and status), so a crawl killed at any moment, ``kill -9``
included, loses at most the calls in flight and repeats them on resume.
Every table is keyed, so a repeated answer never adds a duplicate row. Only the
main thread writes; worker threads only make HTTP calls.

Tables:

* ``meta(key, value)``: the crawl settings that must not change on resume, counters.
* ``crawl_users(user_id, depth, seq)``: the users whose favourites are collected
  (seeds at depth 0, snowball rounds after), in a fixed order.
* ``calls(method, key, status, payload, reason, detail)``: one row per API item
  (``ok`` or ``failed``); payload is the answer's needed fields as JSON.
* ``list_photos`` and ``favorites``: what the favourites pages returned.
* ``images(photo_id, status, path, sha256, reason)``: the download stage.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Iterable

from interest.errors import InterestError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS crawl_users (user_id TEXT PRIMARY KEY, depth INTEGER NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS calls (
    method TEXT NOT NULL, key TEXT NOT NULL, status TEXT NOT NULL,
    payload TEXT, reason TEXT, detail TEXT, PRIMARY KEY (method, key));
CREATE TABLE IF NOT EXISTS list_photos (
    photo_id TEXT PRIMARY KEY, owner_id TEXT, secret TEXT, server TEXT, url TEXT,
    views INTEGER, upload_date INTEGER, title TEXT, owner_name TEXT, date_taken TEXT);
CREATE TABLE IF NOT EXISTS favorites (
    user_id TEXT NOT NULL, photo_id TEXT NOT NULL, fave_date INTEGER, pos INTEGER NOT NULL,
    PRIMARY KEY (user_id, photo_id));
CREATE TABLE IF NOT EXISTS images (
    photo_id TEXT PRIMARY KEY, status TEXT NOT NULL, path TEXT, sha256 TEXT, reason TEXT);
"""

LIST_METHOD = "flickr.favorites.getPublicList"


class CrawlState:
    """The SQLite crawl state of one output directory (``<out>/.collect/state.sqlite``)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable against a killed process (not a power cut), which is the promise here
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise InterestError(f"{self.path}: unreadable crawl state ({exc}); delete it to start over") from None

    @staticmethod
    def for_output(out: str | os.PathLike) -> Path:
        """Where the state of output directory ``out`` lives."""
        return Path(out) / ".collect" / "state.sqlite"

    def close(self) -> None:
        """Close the database (the WAL is checkpointed)."""
        self.db.close()

    def _tx(self, statements: Iterable[tuple[str, tuple | list]]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                if isinstance(params, list):
                    if params:
                        self.db.executemany(sql, params)
                else:
                    self.db.execute(sql, params)
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------ meta

    def get_meta(self, key: str) -> object | None:
        """A JSON value stored under ``key`` (None when absent)."""
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: object) -> None:
        """Store a JSON value under ``key``."""
        self._tx([("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))])

    # ------------------------------------------------------------ crawl users

    def add_users(self, user_ids: list[str], depth: int) -> int:
        """Add users to the crawl at ``depth`` (already-present ones are ignored); return how many are new."""
        start = self.db.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM crawl_users").fetchone()[0]
        before = self.count_users()
        rows = [(u, depth, start + i) for i, u in enumerate(user_ids)]
        self._tx([("INSERT OR IGNORE INTO crawl_users VALUES (?, ?, ?)", rows)] if rows else [])
        return self.count_users() - before

    def count_users(self) -> int:
        """Number of users in the crawl."""
        return self.db.execute("SELECT COUNT(*) FROM crawl_users").fetchone()[0]

    def users(self, depth: int | None = None) -> list[str]:
        """Crawl users in their fixed order (of one depth when given)."""
        if depth is None:
            rows = self.db.execute("SELECT user_id FROM crawl_users ORDER BY seq")
        else:
            rows = self.db.execute("SELECT user_id FROM crawl_users WHERE depth=? ORDER BY seq", (depth,))
        return [r[0] for r in rows]

    def max_depth(self) -> int:
        """The deepest snowball round in the crawl (-1 when empty)."""
        return self.db.execute("SELECT COALESCE(MAX(depth), -1) FROM crawl_users").fetchone()[0]

    # ------------------------------------------------------------ calls

    def done_keys(self, method: str) -> set[str]:
        """Keys of ``method`` answered (ok or failed for good)."""
        return {r[0] for r in self.db.execute("SELECT key FROM calls WHERE method=?", (method,))}

    def payloads(self, method: str) -> dict[str, dict]:
        """Payloads of ``method``'s successful calls, by key."""
        rows = self.db.execute("SELECT key, payload FROM calls WHERE method=? AND status='ok'", (method,))
        return {k: json.loads(p) for k, p in rows}

    def record_ok(self, method: str, key: str, payload: dict, extra: list[tuple[str, tuple | list]] = ()) -> None:
        """Record a successful call with its payload and the rows it implies, in one transaction."""
        self._tx(
            [
                *extra,
                (
                    "INSERT OR REPLACE INTO calls VALUES (?, ?, 'ok', ?, NULL, NULL)",
                    (method, key, json.dumps(payload, sort_keys=True)),
                ),
            ]
        )

    def record_failed(self, method: str, key: str, reason: str, detail: str) -> None:
        """Record a call that failed for good."""
        self._tx([("INSERT OR REPLACE INTO calls VALUES (?, ?, 'failed', NULL, ?, ?)", (method, key, reason, detail))])

    def record_page(self, user_id: str, page: int, per_page: int, payload: dict, photos: list[tuple], faves: list[tuple]) -> None:
        """Record one favourites page: its totals, its photos and the user's favourites on it."""
        self.record_ok(
            LIST_METHOD,
            f"{user_id}:{page}",
            payload,
            [
                ("INSERT OR IGNORE INTO list_photos VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", photos),
                ("INSERT OR IGNORE INTO favorites VALUES (?, ?, ?, ?)", faves),
            ],
        )

    def failures(self) -> dict[str, int]:
        """Failed items by ``method:reason`` (calls) and ``image:reason`` (downloads)."""
        out: dict[str, int] = {}
        for method, reason, n in self.db.execute(
            "SELECT method, reason, COUNT(*) FROM calls WHERE status='failed' GROUP BY method, reason"
        ):
            out[f"{method.removeprefix('flickr.')}:{reason}"] = n
        for status, reason, n in self.db.execute(
            "SELECT status, reason, COUNT(*) FROM images WHERE status!='ok' GROUP BY status, reason"
        ):
            out[f"image:{reason or status}"] = n
        return out

    # ------------------------------------------------------------ images

    def image_rows(self) -> dict[str, tuple[str, str | None, str | None]]:
        """photo_id -> (status, path, sha256) of every image the download stage settled."""
        return {p: (s, path, h) for p, s, path, h in self.db.execute("SELECT photo_id, status, path, sha256 FROM images")}

    def record_image(self, photo_id: str, status: str, path: str | None, sha256: str | None, reason: str | None) -> None:
        """Record the outcome of one download."""
        self._tx([("INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?)", (photo_id, status, path, sha256, reason))])
