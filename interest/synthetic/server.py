"""A local Flickr-compatible server over a synthetic world, with fault injection.

It answers the REST methods the collector uses in Flickr's own JSON format
(failures are HTTP 200 with ``{"stat": "fail", "code": N, "message": ...}``)
and serves image files at ``/{server}/{id}_{secret}_{size}.jpg`` like the
static hosts do, so the real collector runs end to end on a loopback port::

    with serve_world("worlds/demo", faults=FaultConfig.uniform(0.15, seed=1)) as srv:
        config = CollectConfig(rest_url=srv.rest_url, image_host=srv.image_host, rate=0)
        ...
        srv.stats["flickr.favorites.getPublicList"]   # requests answered, per method

The key is read like Flickr reads it: the ``api_key`` parameter or the
``oauth_consumer_key`` of an OAuth header (what ``flickrapi`` sends). A wrong
or missing key is code 100. Owners of photos are Flickr users too: they answer
``people.getInfo`` and ``profile.getProfile`` (PRO status, occupation) and have
an empty favourites list unless they also favourite.

Faults (:class:`FaultConfig`) are drawn per request from a seeded generator:
HTTP 429 with ``Retry-After``, HTTP 500, ``stat: fail`` 105, slow answers,
answers slower than the client's timeout, malformed JSON, and truncated image
bodies (sent with a matching Content-Length, as a broken upstream would).

Damage is drawn per photo instead (a seeded hash of the id, so the same photos
every request and every run), in disjoint shares of the photos: images always
cut in half (``truncated_photos``), moved behind a 301 (``moved_photos``),
deleted and answered with Flickr-style "photo unavailable" placeholder bytes
directly (``placeholder_photos``) or after a 302 to ``/images/photo_unavailable_z.png``
(``placeholder_redirect_photos``), and down with HTTP 503 (``outage_photos``:
set it to 0 mid-run to heal the outage). :meth:`RunningServer.damaged` names them.

``RunningServer.tamper_api`` / ``tamper_image`` let a test rewrite answers
(hostile values, oversize bodies) on their way out. The answers themselves
come from :mod:`interest.synthetic.flickr_api`.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import re
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

from interest.synthetic.flickr_api import Fail, World, answer

REST_PATH = "/services/rest/"
PLACEHOLDER_PATH = "/images/photo_unavailable_z.png"
_MOVED = "/moved"
_IMAGE_PATH = re.compile(r"^/(?P<server>[^/]+)/(?P<id>\d+)_(?P<secret>[0-9a-zA-Z]+)(?:_(?P<size>[a-z0-9]+))?\.jpg$")
_OAUTH_KEY = re.compile(r'oauth_consumer_key="([^"]*)"')
#: url_* extra -> static size suffix (Flickr's "url_l" is the "_b" file)
_API_FAULTS = ("http_429", "http_500", "unavailable", "slow", "timeout", "malformed")
_IMAGE_FAULTS = ("http_429", "http_500", "slow", "timeout", "truncated")
_DAMAGE = ("truncated_photos", "moved_photos", "placeholder_photos", "placeholder_redirect_photos", "outage_photos")


def placeholder_image() -> bytes:
    """The local server's "This photo is no longer available" image (a fixed PNG)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (320, 240), (230, 230, 230))
    ImageDraw.Draw(img).text((70, 110), "This photo is no longer available", fill=(90, 90, 90))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class FaultConfig:
    """Per-request fault rates (each 0..1; they must add up to at most 1) and their settings."""

    http_429: float = 0.0
    http_500: float = 0.0
    unavailable: float = 0.0  # stat fail, code 105
    slow: float = 0.0
    timeout: float = 0.0  # an answer held for timeout_seconds: set it above the client's timeout
    malformed: float = 0.0  # API answers cut in the middle of the JSON
    truncated: float = 0.0  # image bodies cut in half
    slow_seconds: float = 0.2
    timeout_seconds: float = 3.0
    retry_after: int = 0  # the Retry-After header of a 429, in seconds
    seed: int = 0
    # per-photo damage: disjoint shares of the photos, the same ones on every request
    truncated_photos: float = 0.0  # image always cut in half
    moved_photos: float = 0.0  # 301 to /moved/<path>, which serves the image
    placeholder_photos: float = 0.0  # deleted: the placeholder image served at the photo's URL
    placeholder_redirect_photos: float = 0.0  # deleted: 302 to PLACEHOLDER_PATH
    outage_photos: float = 0.0  # HTTP 503 until this is set back to 0

    def damage(self, photo_id: str) -> str | None:
        """The damage of one photo, if any (a seeded hash of the id, so the same on every request)."""
        digest = hashlib.sha256(f"{self.seed}:{photo_id}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        edge = 0.0
        for kind in _DAMAGE:
            edge += getattr(self, kind)
            if u < edge:
                return kind
        return None

    @classmethod
    def uniform(cls, rate: float, *, seed: int = 0, **settings: float) -> "FaultConfig":
        """Every fault kind at an equal share of ``rate`` (e.g. 0.15 = 15% of requests fail somehow)."""
        kinds = set(_API_FAULTS) | set(_IMAGE_FAULTS)
        return cls(**{k: rate / 6 for k in kinds}, seed=seed, **settings)


class FlickrWorldServer(ThreadingHTTPServer):
    """The HTTP server; see :func:`serve_world` for the usual way to run one."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, world: World, port: int, faults: FaultConfig | None, api_key: str) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        host, bound = self.server_address[:2]
        self.image_host = f"http://{host}:{bound}"
        self.world = world
        self.faults = faults or FaultConfig()
        self.api_key = api_key
        self.stats: Counter[str] = Counter()
        self.stopping = threading.Event()
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()
        self.placeholder = placeholder_image()
        self.tamper_api: Callable[[dict, dict], dict | bytes | Iterable[bytes]] | None = None
        self.tamper_image: Callable[[str, bytes], bytes | Iterable[bytes]] | None = None

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up (its deadline passed) is normal here, not an error to print."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def count(self, what: str) -> None:
        with self._lock:
            self.stats[what] += 1

    def draw_fault(self, kinds: tuple[str, ...]) -> str | None:
        """The fault this request gets, if any (one seeded draw per request)."""
        with self._lock:
            r = self._rng.random()
        edge = 0.0
        for kind in kinds:
            edge += getattr(self.faults, kind)
            if r < edge:
                self.count(f"fault:{kind}")
                return kind
        return None

    # ------------------------------------------------------------ methods

    def answer(self, params: dict[str, str]) -> dict:
        """The API's answer to one request's parameters (:func:`interest.synthetic.flickr_api.answer`)."""
        return answer(self.world, params)


class _Handler(BaseHTTPRequestHandler):
    server: FlickrWorldServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the real hosts do

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass  # a busy crawl would flood stderr

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        parts = urlsplit(self.path)
        if parts.path == REST_PATH:
            self._api(dict(parse_qsl(parts.query)))
        else:
            self._image(parts.path)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        parts = urlsplit(self.path)
        if parts.path != REST_PATH:
            self._send(404, b"not found", "text/plain")
            return
        self._api({**dict(parse_qsl(parts.query)), **dict(parse_qsl(body))})

    def _api(self, params: dict[str, str]) -> None:
        srv = self.server
        srv.count(params.get("method", "?"))
        fault = srv.draw_fault(_API_FAULTS)
        if self._http_fault(fault):
            return
        try:
            if self._key(params) != srv.api_key:
                raise Fail(100, "Invalid API Key (Key has invalid format)")
            if fault == "unavailable":
                raise Fail(105, "Service currently unavailable")
            reply = srv.answer(params)
        except Fail as exc:
            reply = {"stat": "fail", "code": exc.code, "message": exc.message}
        except (TypeError, ValueError):  # e.g. per_page=abc
            reply = {"stat": "fail", "code": 116, "message": "Bad URL found"}
        if srv.tamper_api is not None:
            reply = srv.tamper_api(params, reply)
        if not isinstance(reply, (dict, bytes)):
            self._stream(reply, "application/json")
            return
        text = reply if isinstance(reply, bytes) else json.dumps(reply, default=str).encode("utf-8")
        if fault == "malformed":
            text = text[: len(text) // 2]
        self._send(200, text, "application/json")

    def _key(self, params: dict[str, str]) -> str | None:
        if "api_key" in params:
            return params["api_key"]
        found = _OAUTH_KEY.search(self.headers.get("Authorization") or "")
        return unquote(found.group(1)) if found else None

    def _image(self, path: str) -> None:
        srv = self.server
        srv.count("image")
        if path == PLACEHOLDER_PATH:
            self._send(200, srv.placeholder, "image/png")
            return
        moved = path.startswith(_MOVED + "/")
        fault = srv.draw_fault(_IMAGE_FAULTS)
        if self._http_fault(fault):
            return
        m = _IMAGE_PATH.match(path[len(_MOVED):] if moved else path)
        p = srv.world.photos.get(m.group("id")) if m else None
        if p is None or str(p.get("secret")) != m.group("secret") or str(p.get("server")) != m.group("server"):
            self._send(404, b"not found", "text/plain")
            return
        damage = srv.faults.damage(p["photo_id"])
        if damage:
            srv.count(f"damage:{damage}")
        if damage == "outage_photos":
            self._send(503, b"Service Unavailable", "text/plain")
            return
        if damage == "placeholder_redirect_photos":
            self._send(302, b"", "text/plain", {"Location": f"{srv.image_host}{PLACEHOLDER_PATH}"})
            return
        if damage == "placeholder_photos":
            self._send(200, srv.placeholder, "image/png")
            return
        if damage == "moved_photos" and not moved:
            self._send(301, b"", "text/plain", {"Location": f"{srv.image_host}{_MOVED}{path}"})
            return
        file = srv.world.image_file(p["photo_id"])
        if not file.is_file():
            self._send(404, b"not found", "text/plain")
            return
        body = file.read_bytes()
        if fault == "truncated" or damage == "truncated_photos":
            body = body[: len(body) // 2]
        if srv.tamper_image is not None:
            body = srv.tamper_image(p["photo_id"], body)
            if not isinstance(body, bytes):
                self._stream(body, "image/jpeg")
                return
        self._send(200, body, "image/jpeg")

    def _http_fault(self, fault: str | None) -> bool:
        """Answer the HTTP-level faults; True when the request is answered."""
        if fault == "slow":
            self.server.stopping.wait(self.server.faults.slow_seconds)
        elif fault == "timeout":
            self.server.stopping.wait(self.server.faults.timeout_seconds)
        elif fault == "http_429":
            self._send(429, b"Too Many Requests", "text/plain", {"Retry-After": str(self.server.faults.retry_after)})
            return True
        elif fault == "http_500":
            self._send(500, b"Internal Server Error", "text/plain")
            return True
        return False

    def _stream(self, chunks: Iterable[bytes], content_type: str) -> None:
        """Send a body of unannounced length (no Content-Length; the connection closes at its end)."""
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Connection", "close")
            self.end_headers()
            for chunk in chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its cap or deadline): nothing more to send

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout fault): nothing to answer


class RunningServer:
    """A started server: ``rest_url``, ``image_host``, ``stats``; ``close()`` or use as a context manager."""

    def __init__(self, server: FlickrWorldServer) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="flickr-world", daemon=True)
        self._thread.start()
        host, port = server.server_address[:2]
        self.port: int = port
        self.rest_url = f"http://{host}:{port}{REST_PATH}"
        self.image_host = f"http://{host}:{port}"

    @property
    def stats(self) -> Counter[str]:
        """Requests answered per API method, ``image`` for image files, ``fault:<kind>`` per fault."""
        return self._server.stats

    @property
    def tamper_api(self) -> Callable[[dict, dict], dict | bytes | Iterable[bytes]] | None:
        """A hook ``(params, reply) -> reply``: a JSON object, raw bytes, or chunks sent with no length."""
        return self._server.tamper_api

    @tamper_api.setter
    def tamper_api(self, hook: Callable[[dict, dict], dict | bytes | Iterable[bytes]] | None) -> None:
        self._server.tamper_api = hook

    @property
    def tamper_image(self) -> Callable[[str, bytes], bytes | Iterable[bytes]] | None:
        """A hook ``(photo_id, body) -> body`` on image answers (chunks are sent with no length)."""
        return self._server.tamper_image

    @tamper_image.setter
    def tamper_image(self, hook: Callable[[str, bytes], bytes | Iterable[bytes]] | None) -> None:
        self._server.tamper_image = hook

    def damaged(self, kind: str) -> set[str]:
        """The photo ids with per-photo damage ``kind`` (e.g. ``truncated_photos``) under the current faults."""
        return {pid for pid in self._server.world.photos if self.faults.damage(pid) == kind}

    @property
    def placeholder_sha256(self) -> str:
        """SHA-256 of this server's placeholder image."""
        return hashlib.sha256(self._server.placeholder).hexdigest()

    @property
    def faults(self) -> FaultConfig:
        """The fault settings (mutable: a test may switch faults on or off mid-run)."""
        return self._server.faults

    def api_calls(self) -> int:
        """API requests answered so far (image requests not counted)."""
        return sum(v for k, v in self.stats.items() if k.startswith("flickr."))

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_world(
    root: str | Path, *, port: int = 0, faults: FaultConfig | None = None, api_key: str = "test-key"
) -> RunningServer:
    """Serve collection ``root`` as Flickr on 127.0.0.1 (``port=0`` picks a free port)."""
    return RunningServer(FlickrWorldServer(World(root), port, faults, api_key))


def main() -> None:
    """``python -m interest.synthetic.server WORLD [--port N] [--fault-rate R] [--damage K=S,...]``: serve until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Serve a synthetic world as a local Flickr API.")
    parser.add_argument("world")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--damage", default="", help="per-photo damage, e.g. truncated_photos=0.03,placeholder_photos=0.03")
    args = parser.parse_args()
    faults = FaultConfig.uniform(args.fault_rate, seed=args.seed) if args.fault_rate else FaultConfig(seed=args.seed)
    for item in filter(None, args.damage.split(",")):
        kind, _, share = item.partition("=")
        if kind.strip() not in _DAMAGE:
            parser.error(f"--damage {kind.strip()!r}: use {', '.join(_DAMAGE)}")
        setattr(faults, kind.strip(), float(share))
    with serve_world(args.world, port=args.port, faults=faults, api_key=args.api_key) as srv:
        print(f"rest_url: {srv.rest_url}\nimage_host: {srv.image_host}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()

