"""Hostile answers and files for the collector and the importer: a clean refusal or a correct result.

Each probe sends one hostile thing (through the local Flickr-compatible
server's answer hooks, a tiny raw HTTP server, or a crafted CSV), asserts what
must hold, and returns its row of the "Hostile inputs: collector and importer"
table in BENCHMARKS.md; ``test_the_benchmarks_table_is_current`` keeps that
table in step with what the code does.
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from apps_helpers import assert_benchmarks_rows
from PIL import Image

from interest.stages.collect import CollectConfig, collect, import_flickruser
from interest.stages.collect.client import CallFailed, FlickrClient
from interest.core.collection import image_relpath, read_table
from interest.core.errors import InterestError
from interest.synthetic.server import serve_world

TABLE_HEADING = "## Hostile inputs: collector and importer"
KEY = "hostile-key-7a0f"
LIST = "flickr.favorites.getPublicList"
PERSON = "flickr.people.getInfo"


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
    monkeypatch.setenv("FLICKR_API_KEY", KEY)


def _crawl(world, out, seeds, *, tamper_api=None, tamper_image=None, resume=False, **settings):
    with serve_world(world, api_key=KEY) as srv:
        srv.tamper_api, srv.tamper_image = tamper_api, tamper_image
        config = CollectConfig(rest_url=srv.rest_url, image_host=srv.image_host, rate=0, users=seeds, enrich="none",
                               backoff=0.001, timeout=3.0, retries=2, **settings)
        summary = collect(out, config, progress=False, resume=resume)
        return summary, dict(srv.stats)


def _first_photo(reply: dict) -> dict | None:
    photos = reply.get("photos", {}).get("photo") or []
    return photos[0] if photos else None


@contextmanager
def raw_server(handle):
    """A one-connection-at-a-time raw HTTP server: ``handle(conn)`` writes whatever it likes."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=_serve_one, args=(conn, handle), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        stop.set()
        sock.close()


def _serve_one(conn, handle):
    with conn:
        try:
            conn.recv(65536)
            handle(conn)
        except OSError:
            pass  # the client hung up: what the probe wants


def _trickle(text: bytes, every: float):
    def handle(conn):
        for i in range(len(text)):
            conn.sendall(text[i : i + 1])
            time.sleep(every)
    return handle


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (CRC fixed, so it opens)."""
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


# ---------------------------------------------------------------- the probes


def probe_id_paths(world, seeds, tmp):
    hostile = ["../../../escape_pwn", "/tmp/abs_pwn", "a/b/x"]

    def tamper(params, reply):
        first = _first_photo(reply)
        if params.get("method") == LIST and first and params.get("user_id") in seeds[:3]:
            first["id"] = hostile[seeds.index(params["user_id"])]
        return reply

    out = tmp / "deep" / "out"
    _crawl(world, out, seeds[:3], tamper_api=tamper)
    photos = read_table(out, "photos").set_index("photo_id")
    for pid in hostile:
        assert photos.loc[pid, "status"] == "ok" and photos.loc[pid, "path"] == image_relpath(pid, ".jpg")
        assert (out / photos.loc[pid, "path"]).is_file()
    assert all(p.is_file() for p in (out / "images").iterdir())  # no folders under images/
    assert not [p for p in tmp.rglob("*pwn*")] and not Path("/tmp/abs_pwn.jpg").exists()
    return ("photo ids `../../../escape_pwn`, `/tmp/abs_pwn`, `a/b/x` in a favourites answer",
            "saved inside the collection as `images/_<sha256 of the id>.jpg`; no folder made, nothing outside")


def probe_pages(world, seeds, tmp):
    def claim(pages, total=None):
        def tamper(params, reply):
            if params.get("method") == LIST:
                reply["photos"]["pages"] = pages
                if total is not None:
                    reply["photos"]["total"] = total
            return reply
        return tamper

    summary, stats = _crawl(world, tmp / "pages", seeds[:4], tamper_api=claim(10**12), download=False)
    assert stats[LIST] == 4 and summary["favorites"] == len(read_table(tmp / "pages", "favorites")) > 0
    assert summary["lists_capped"] == 4
    summary, stats = _crawl(world, tmp / "pages2", seeds[:4], tamper_api=claim(10**12, 10**12), download=False, max_list_pages=3)
    assert stats[LIST] == 4 * 3 and summary["lists_capped"] == 4
    return ("a favourites answer claiming `pages: 10**12` (and `total: 10**12`)",
            "read as the pages its total implies, at most `max_list_pages` (2,000; 3 in the probe); nothing allocated")


def probe_big_json(world, seeds, tmp):
    def tamper(params, reply):
        if params.get("method") == PERSON and params.get("user_id") == seeds[0]:
            return (b" " * 65536 for _ in range(300 * 16))  # 300 MB, no Content-Length
        return reply

    summary, stats = _crawl(world, tmp / "json", seeds[:3], tamper_api=tamper, download=False, max_json_bytes=2**20)
    assert summary["failures"] == {"people.getInfo:too_large": 1} and summary["users"] == 3
    assert stats[PERSON] == 3  # refused once, not retried
    return ("a 300 MB JSON answer (streamed, no Content-Length), cap 1 MiB",
            "`too_large` for that call after reading 1 MiB, not retried; the crawl goes on")


def probe_big_image(world, seeds, tmp):
    target = {}

    def tamper(photo_id, body):
        if not target:
            target["id"] = photo_id
        return (b"\0" * 65536 for _ in range(512 * 16)) if photo_id == target["id"] else body  # 512 MB

    summary, stats = _crawl(world, tmp / "img", seeds[:2], tamper_image=tamper, max_image_bytes=2**20)
    photos = read_table(tmp / "img", "photos").set_index("photo_id")
    assert (photos.loc[target["id"], "status"], photos.loc[target["id"], "status_reason"]) == ("bad_image", "too_large")
    assert summary["failures"] == {"image:too_large": 1} and stats["image"] == len(photos)  # asked once
    return ("an image body of 512 MB (streamed), cap 1 MiB",
            "`bad_image` / `too_large` after reading 1 MiB, asked once; the other images saved")


def probe_stat_fail(world, seeds, tmp):
    def tamper(params, reply):
        return {"stat": "fail"} if params.get("method") == PERSON and params.get("user_id") == seeds[0] else reply

    summary, stats = _crawl(world, tmp / "fail", seeds[:3], tamper_api=tamper, download=False)
    assert summary["failures"] == {"people.getInfo:flickr_fail": 1} and summary["users"] == 3 and stats[PERSON] == 3
    return ('`{"stat": "fail"}` without a code', "`flickr_fail` for that call, not retried; the crawl goes on")


def probe_values(world, seeds, tmp):
    hit = {}

    def tamper(params, reply):
        if params.get("method") == PERSON and params.get("user_id") == seeds[0]:
            reply["person"]["timezone"] = "Europe/Berlin"
        first = _first_photo(reply) if params.get("method") == LIST else None
        if first and params.get("user_id") == seeds[1]:
            first["views"], hit["views"] = str(10**30), first["id"]
        if first and params.get("user_id") == seeds[2]:
            first["dateupload"], hit["date"] = str(10**15), first["id"]
        return reply

    out = tmp / "values"
    summary, _ = _crawl(world, out, seeds[:4], tamper_api=tamper, download=False)
    assert summary["failures"] == {"people.getInfo:malformed": 1, "list_entry:malformed": 2}
    users = read_table(out, "users").set_index("user_id")
    assert len(users) == 4 and pd.isna(users.loc[seeds[0], "timezone_id"])
    favorites = read_table(out, "favorites")
    assert not favorites["photo_id"].isin([hit["views"], hit["date"]]).any() and len(favorites) > 0
    # --resume is not stuck on them: it asks nothing and writes the same tables
    before = {n: read_table(out, n) for n in ("users", "photos", "favorites")}
    again, stats = _crawl(world, out, seeds[:4], tamper_api=tamper, download=False, resume=True)
    assert not [k for k in stats if k.startswith("flickr.")] and again["failures"] == summary["failures"]
    for name, df in before.items():
        pd.testing.assert_frame_equal(read_table(out, name), df)
    return ("`timezone` as a string; views `10**30`; dateupload `10**15`",
            "that user / that favourite recorded `malformed`, the rest kept; `--resume` asks nothing and writes the same tables")


def probe_json_bombs(world, seeds, tmp):
    def tamper(params, reply):
        if params.get("method") == PERSON and params.get("user_id") == seeds[0]:
            return b'{"stat": "ok", "person": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        if params.get("method") == PERSON and params.get("user_id") == seeds[1]:
            return b'{"stat": "ok", "person": {"ispro": ' + b"9" * 5000 + b"}}"
        return reply

    summary, _ = _crawl(world, tmp / "bombs", seeds[:3], tamper_api=tamper, download=False)
    assert summary["failures"] == {"people.getInfo:bad_json": 2} and summary["users"] == 3
    return ("100,000 nested brackets; a 5000-digit number", "`bad_json` for that call after its retries; the crawl goes on")


def probe_trickle(world, seeds, tmp):
    client = FlickrClient(KEY, timeout=2.0, retries=1)
    body = b'{"stat": "ok", "person": {}}' * 20
    answers = {
        "headers": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"X-Slow: " + b"x" * 200 + b"\r\n\r\n",
        "body": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
    }
    for name, text in answers.items():
        with raw_server(_trickle(text, 0.25)) as url:
            client.rest_url = f"{url}/services/rest/"
            t0 = time.monotonic()
            with pytest.raises(CallFailed) as err:
                client.call(PERSON, user_id="1@N00")
            took = time.monotonic() - t0
        assert err.value.reason == "timeout" and 1.8 <= took < 4.5, (name, err.value, took)
    return ("a server sending one byte every 0.25 s (headers or body), `timeout: 2`",
            "`timeout` at the 2 s deadline (a watchdog shuts the socket; the per-read timeout never fires)")


def probe_hosts(world, seeds, tmp):
    row = read_table(world, "photos").iloc[0]
    with serve_world(world, api_key=KEY) as srv:
        local = FlickrClient("", timeout=2.0)  # no image_host: only Flickr's static hosts
        for url in (row["url"].replace("https://live.staticflickr.com", srv.image_host), "file:///etc/passwd",
                    "http://evil.example/x.jpg"):
            with pytest.raises(CallFailed, match="host_not_allowed"):
                local.fetch(url)
        assert srv.stats["image"] == 0  # refused before any request
    port = {}

    # the raw server closes every connection after one answer, so it says so: a client that
    # reused the connection for the next hop would otherwise race the close (a "connection" failure)
    def redirect_elsewhere(conn):
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://localhost:%d/x.jpg\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % port["n"])

    def redirect_loop(conn):
        conn.sendall(b"HTTP/1.1 301 Moved\r\nLocation: /again.jpg\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    for handle, reason in ((redirect_elsewhere, "host_not_allowed"), (redirect_loop, "too_many_redirects")):
        with raw_server(handle) as url:
            port["n"] = int(url.rsplit(":", 1)[1])
            with pytest.raises(CallFailed) as err:
                FlickrClient("", image_host=url, timeout=2.0).fetch("https://live.staticflickr.com/1/2_3_z.jpg")
            assert err.value.reason == reason and not err.value.transient
    return ("image URLs on another host, `file://`, a redirect to another host, a redirect loop",
            "`host_not_allowed` before any request (or at the redirect), `too_many_redirects` after 3 hops")


def probe_pixels(world, seeds, tmp):
    bomb = _png_claiming(30_000, 30_000)
    summary, _ = _crawl(world, tmp / "px", seeds[:2], tamper_image=lambda pid, body: bomb)
    photos = read_table(tmp / "px", "photos")
    assert (photos["status_reason"] == "too_many_pixels").all() and (photos["status"] == "bad_image").all()
    return ("an image whose header claims 30,000 × 30,000 pixels", "`bad_image` / `too_many_pixels`, never decoded")


HEAD_OLD = "user,img_id,img_url,views,favorites,comments,upload_date,set\n"
HEAD = ("user_id,user_gender,user_country,user_timezone_label,user_timezone_id,favimg_url,favimg_num_views,"
        "favimg_num_favorites,favimg_num_comments,favimg_upload_date,favimg_owner_ispro,favimg_owner_occupation\n")


def probe_import_ids(world, seeds, tmp):
    photos = read_table(world, "photos").head(2)
    rows = [f"9@N00,../../../x,{photos['url'].iloc[0]},1,1,1,2020-01-01,train",
            f"9@N00,/abs/y,{photos['url'].iloc[1]},1,1,1,2020-01-01,train"]
    csv = tmp / "FlickrUser.csv"
    csv.write_text(HEAD_OLD + "\n".join(rows) + "\n", encoding="utf-8")
    out = tmp / "imp" / "out"
    with serve_world(world) as srv:
        summary = import_flickruser([csv], out, download=True, image_host=srv.image_host, threads=2, progress=False)
    got = read_table(out, "photos").set_index("photo_id")
    assert summary["images"] == {"ok": 2}
    for pid in ("../../../x", "/abs/y"):
        assert got.loc[pid, "path"] == image_relpath(pid, ".jpg") and (out / got.loc[pid, "path"]).is_file()
    assert sorted(p.name for p in tmp.rglob("x.jpg")) == [] and not Path("/abs/y.jpg").exists()
    return ("`img_id=../../../x` (and `/abs/y`) in an older-schema FlickrUser CSV with `--download`",
            "saved inside the collection as `images/_<sha256 of the id>.jpg`")


def probe_import_values(world, seeds, tmp):
    rows = ["1@N00,,,,,https://live.staticflickr.com/1/11_aa_z.jpg,1e400,2,3,2019-05-01,1,",
            "1@N00,,,,,https://live.staticflickr.com/1/12_bb_z.jpg,12345678901234567890123,2,3,2019-05-01,1,",
            "1@N00,,,,,https://live.staticflickr.com/1/13_cc_z.jpg,7,2,3,99999999999,1,"]
    csv = tmp / "FlickrUser_definition.csv"
    csv.write_text(HEAD + "\n".join(rows) + "\n", encoding="utf-8")
    summary = import_flickruser([csv], tmp / "vals", progress=False)
    assert summary["out_of_range"] == {"views": ["FlickrUser_definition.csv:2", "FlickrUser_definition.csv:3"],
                                       "upload_date": ["FlickrUser_definition.csv:4"]}
    photos = read_table(tmp / "vals", "photos").set_index("photo_id")
    assert photos.loc[["11", "12"], "views"].isna().all() and photos.loc["13", "views"] == 7
    assert pd.isna(photos.loc["13", "upload_date"]) and photos.loc["11", "upload_date"] == pd.Timestamp("2019-05-01", tz="UTC")
    # nothing is written until every file is read and checked
    broken = tmp / "FlickrUser_additional.csv"
    broken.write_text("user_id,image\n1@N00,x\n", encoding="utf-8")
    with pytest.raises(InterestError, match="FlickrUser_additional.csv: missing column 'favimg_url'"):
        import_flickruser([csv, broken], tmp / "never", progress=False)
    assert not (tmp / "never").exists()
    return ("views `1e400`, a 23-digit number, upload_date `99999999999` in a FlickrUser CSV",
            "nulls, named by file:line in the summary (`views: FlickrUser_definition.csv:2, :3`); nothing written before every file is checked")


PROBES = [probe_id_paths, probe_pages, probe_big_json, probe_big_image, probe_stat_fail, probe_values,
          probe_json_bombs, probe_trickle, probe_hosts, probe_pixels, probe_import_ids, probe_import_values]


@pytest.fixture(scope="module")
def probe_rows(rendered_world, tmp_path_factory):
    seeds = sorted(read_table(rendered_world, "users")["user_id"])
    mp = pytest.MonkeyPatch()
    mp.setenv("FLICKR_API_KEY", KEY)
    try:
        return [probe(rendered_world, seeds, tmp_path_factory.mktemp(probe.__name__)) for probe in PROBES]
    finally:
        mp.undo()


def test_every_probe_is_refused_cleanly_or_handled(probe_rows):
    assert len(probe_rows) == len(PROBES)


def test_the_benchmarks_table_is_current(probe_rows):
    assert_benchmarks_rows(TABLE_HEADING, probe_rows, "collector")
