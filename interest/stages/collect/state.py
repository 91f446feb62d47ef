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
* ``retrying(kind, key)``: what the last ``--retry-failed`` put back to be tried again.

:class:`CrawlLock` keeps a second crawl off a collection being crawled.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from interest.stages.collect.client import is_transient
from interest.core.errors import InterestError

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
CREATE TABLE IF NOT EXISTS retrying (kind TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (kind, key));
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
        # BEGIN inside the try: a Ctrl-C landing right after it must still roll back,
        # or the next transaction (the call counters in a finally) cannot start
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self.db.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                if isinstance(params, list):
                    if params:
                        self.db.executemany(sql, params)
                else:
                    self.db.execute(sql, params)
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
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

    def record_page(
        self, user_id: str, page: int, per_page: int, payload: dict, photos: list[tuple], faves: list[tuple],
        malformed: list[tuple[str, str]] = (),
    ) -> None:
        """Record one favourites page: its totals, its photos, the user's favourites on it, and entries left out."""
        self.record_ok(
            LIST_METHOD,
            f"{user_id}:{page}",
            payload,
            [
                ("INSERT OR IGNORE INTO list_photos VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", photos),
                ("INSERT OR IGNORE INTO favorites VALUES (?, ?, ?, ?)", faves),
                (
                    "INSERT OR REPLACE INTO calls VALUES ('list_entry', ?, 'failed', NULL, 'malformed', ?)",
                    [(key, why) for key, why in malformed],
                ),
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

    def image_rows(self) -> dict[str, tuple[str, str | None, str | None, str | None]]:
        """photo_id -> (status, path, sha256, reason) of every image the download stage settled."""
        return {p: (s, path, h, r) for p, s, path, h, r in self.db.execute("SELECT photo_id, status, path, sha256, reason FROM images")}

    def record_image(self, photo_id: str, status: str, path: str | None, sha256: str | None, reason: str | None) -> None:
        """Record the outcome of one download."""
        self._tx([("INSERT OR REPLACE INTO images VALUES (?, ?, ?, ?, ?)", (photo_id, status, path, sha256, reason))])

    # ------------------------------------------------------------ --retry-failed

    def retry_transient_failures(self, *, calls: bool = True) -> dict[str, int]:
        """Put back every item that failed for a transient reason (HTTP 5xx/429, timeout, connection, truncated).

        Their rows are deleted, so the next stages ask for them again, and they
        are remembered in ``retrying`` (one transaction: a kill leaves either
        all or none put back). Returns how many, by kind.
        """
        images = [(p,) for p, r in self.db.execute("SELECT photo_id, reason FROM images WHERE status!='ok'") if is_transient(r or "")]
        failed = [(m, k) for m, k, r in self.db.execute("SELECT method, key, reason FROM calls WHERE status='failed'") if is_transient(r or "")] if calls else []
        self._tx(
            [
                ("DELETE FROM retrying", ()),
                ("DELETE FROM images WHERE photo_id=?", images),
                ("DELETE FROM calls WHERE method=? AND key=?", failed),
                ("INSERT INTO retrying VALUES ('image', ?)", images),
                ("INSERT INTO retrying VALUES (?, ?)", [(f"call:{m}", k) for m, k in failed]),
            ]
        )
        return {"images": len(images), "calls": len(failed)}

    def retried_outcome(self) -> dict[str, int]:
        """Of what the last ``--retry-failed`` put back: how many, and how many came back (now ok)."""
        retried = self.db.execute("SELECT COUNT(*) FROM retrying").fetchone()[0]
        back = self.db.execute(
            """SELECT (SELECT COUNT(*) FROM retrying r JOIN images i ON r.kind='image' AND i.photo_id=r.key AND i.status='ok')
                    + (SELECT COUNT(*) FROM retrying r JOIN calls c
                       ON r.kind='call:' || c.method AND c.key=r.key AND c.status='ok')"""
        ).fetchone()[0]
        return {"retried": retried, "came_back": back}


class CrawlLock:
    """One crawl per collection: an exclusive ``flock`` on ``<out>/.collect/lock``.

    The kernel drops the lock when its process ends, however it ends, so a
    lock file left by a killed run never blocks ``--resume``; the file only
    names the last holder, for the message a second crawl gets.
    """

    def __init__(self, out: str | os.PathLike, command: str = "interest collect") -> None:
        self.out = Path(out)
        self.path = self.out / ".collect" / "lock"
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> "CrawlLock":
        """Take the lock or raise InterestError naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if not isinstance(exc, BlockingIOError):  # a filesystem without locks, not a second crawl
                os.close(fd)
                raise InterestError(
                    f"{self.path}: cannot lock the collection ({exc.strerror}); put it on a local filesystem"
                ) from None
            holder = os.pread(fd, 400, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise InterestError(
                f"{self.out}: another crawl is writing this collection ({holder}); "
                "wait for it to finish or stop it, then re-run with --resume"
            ) from None
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        text = f"pid {os.getpid()} on {socket.gethostname()}, {self.command}, started {started}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode("utf-8"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays: removing it would race with a process about to take it)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "CrawlLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
