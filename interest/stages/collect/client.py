"""The Flickr client: signed API calls and image requests with deadlines, size caps and error sorting.

Each instance has its own ``requests`` sessions, signs API calls with OAuth1
(the key travels only in the signed header, never in a URL), and sorts every
failure into one of three kinds:

* transient (HTTP 429/5xx, timeouts, connection errors, ``stat: fail`` code
  105, an answer that is not whole JSON, a truncated body): an API call is
  retried here with exponential backoff and seeded jitter, honouring
  ``Retry-After`` on the API limiter, up to ``retries`` tries; an image request
  is tried once and the downloader reschedules it (see download.py), so no
  worker ever sleeps on a bad image;
* permanent (code 1 not found, other codes, a ``stat: fail`` without a code,
  HTTP 4xx, an oversize body, a host that is not allowed): :class:`CallFailed` at once;
* fatal (code 100, invalid API key): :class:`InterestError`, which stops the crawl.

Every request has a wall-clock deadline (``timeout`` seconds for the whole
request, however slowly the bytes trickle in: a watchdog thread shuts the
socket when it passes) and a body cap (``max_json_bytes`` / ``max_image_bytes``,
read in chunks, never more than the cap held). Image requests follow at most
``max_redirects`` redirects, only to allowed hosts (Flickr's static hosts, or
``image_host`` when one is configured); a redirect to Flickr's "photo
unavailable" image is reported as ``placeholder`` and not followed.

Every message this module keeps or logs goes through :meth:`FlickrClient.scrub`
so that neither the key nor the secret can leak.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import logging
import os
import random
import re
import socket
import threading
import time
from collections import Counter
from typing import Callable, Iterator
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import urllib3.connection
import urllib3.connectionpool
from requests.adapters import HTTPAdapter
from requests_oauthlib import OAuth1

from interest.stages.collect.limiter import RateLimiter
from interest.core.errors import InterestError, one_line

log = logging.getLogger(__name__)

REST_URL = "https://api.flickr.com/services/rest/"
#: Packages whose loggers may see request details (oauthlib logs the client key at DEBUG)
_LOGGER_ROOTS = ("oauthlib", "requests_oauthlib", "requests", "urllib3", "interest")
#: reasons worth another try later (what ``--retry-failed`` retries)
TRANSIENT_REASONS = frozenset({"http_429", "timeout", "connection", "truncated", "unavailable", "bad_json"})
#: Flickr's "This photo is no longer available" image is named like this on every host it used
_PLACEHOLDER_NAME = re.compile(r"(^|/)photo_unavailable[^/]*\.(gif|png|jpe?g)$", re.IGNORECASE)
_CHUNK = 64 * 1024


def is_transient(reason: str) -> bool:
    """Whether a failure ``reason`` may go away by itself (HTTP 5xx/429, timeouts, connection, truncation)."""
    return reason in TRANSIENT_REASONS or bool(re.fullmatch(r"http_5\d\d", reason))


class CallFailed(Exception):
    """A call or download that gave up: ``reason`` is a short machine-readable word.

    ``transient`` says whether trying again later may succeed; ``retry_after``
    is the server's ``Retry-After`` (seconds), ``host`` the host that failed
    and ``url`` the URL a redirect pointed at (for ``placeholder``).
    """

    def __init__(
        self, reason: str, detail: str = "", *, retry_after: float | None = None, host: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.transient = is_transient(reason)
        self.retry_after = retry_after
        self.host = host
        self.url = url


class HTTPStatusError(Exception):
    """A non-200, non-redirect HTTP answer, raised from the session's response hook."""

    def __init__(self, status: int, retry_after: float | None, url: str = "") -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after
        self.url = url


def resolve_credentials(
    api_key: str | None = None, api_secret: str | None = None, *, environment: bool = True
) -> tuple[str, str]:
    """The API key and secret: ``FLICKR_API_KEY`` / ``FLICKR_API_SECRET``, else the config's values.

    ``environment=False`` takes the given values whatever the environment holds
    (the demo's local server has its own key).
    """
    env = os.environ if environment else {}
    key = env.get("FLICKR_API_KEY") or api_key
    secret = env.get("FLICKR_API_SECRET") or api_secret or ""
    if not key:
        raise InterestError(
            "no Flickr API key: set FLICKR_API_KEY (and FLICKR_API_SECRET) in the environment, "
            "or api_key in the collect config file"
        )
    return key, secret


# ---------------------------------------------------------------- secrets in logs


class _ScrubFilter(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.secrets: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a library's bad format string: the handler reports it, not us
            return True
        if any(s in text for s in self.secrets):
            record.msg = _scrub(text, self.secrets)
            record.args = None
        return True


_SCRUBBER = _ScrubFilter()


def _install_scrubber(secrets: list[str]) -> None:
    """Scrub ``secrets`` from every record of the loggers that see requests.

    A logger's filter only sees records made by that very logger, not by its
    children, so it goes on each existing logger of those packages (they are
    all created when ``requests_oauthlib`` is imported, which this module does first).
    """
    _SCRUBBER.secrets = sorted(set(_SCRUBBER.secrets) | set(secrets), key=len, reverse=True)
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in _LOGGER_ROOTS]
    for name in {*names, *_LOGGER_ROOTS}:
        logging.getLogger(name).addFilter(_SCRUBBER)  # adding the same filter twice is a no-op


def _scrub(text: str, secrets: list[str]) -> str:
    for s in secrets:
        text = text.replace(s, "***")
    return text


# ---------------------------------------------------------------- hosts and URLs


def rewrite_host(url: str, image_host: str | None) -> str:
    """``url`` with its scheme and host replaced by ``image_host`` (e.g. ``http://127.0.0.1:8000``)."""
    if not image_host:
        return url
    host = urlsplit(image_host if "//" in image_host else f"http://{image_host}")
    parts = urlsplit(url)
    return urlunsplit((host.scheme, host.netloc, host.path.rstrip("/") + parts.path, parts.query, ""))


def is_flickr_static_host(host: str) -> bool:
    """Whether ``host`` is one of Flickr's static image hosts (live., farmN., cN.staticflickr.com, …)."""
    host = host.lower().rstrip(".")
    return host == "staticflickr.com" or host.endswith((".staticflickr.com", ".static.flickr.com"))


def is_placeholder_url(url: str) -> bool:
    """Whether ``url`` names Flickr's "This photo is no longer available" image (``photo_unavailable*``)."""
    return bool(_PLACEHOLDER_NAME.search(urlsplit(url).path))


# ---------------------------------------------------------------- deadlines


class _Request:
    """One request's deadline and the connections it used (for the watchdog to cut)."""

    __slots__ = ("deadline", "seconds", "conns", "expired", "done")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.conns: list[urllib3.connection.HTTPConnection] = []
        self.expired = False
        self.done = False


class _Watchdog:
    """One daemon thread that shuts the sockets of requests past their deadline.

    A per-read timeout never fires on a server that sends a byte a second;
    shutting the socket makes the blocked read return at once, in whatever
    phase (headers or body) the request is.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Request]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, req: _Request) -> None:
        with self._cond:
            heapq.heappush(self._heap, (req.deadline, next(self._seq), req))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="collect-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()

    def attach(self, req: _Request, conn: urllib3.connection.HTTPConnection) -> bool:
        """Remember ``conn`` as used by ``req``; False when ``req`` is already past its deadline."""
        with self._cond:
            req.conns.append(conn)
            return not req.expired

    def expire(self, req: _Request) -> None:
        """Cut ``req`` now (its deadline passed, or the crawl is stopping)."""
        with self._cond:
            if req.done or req.expired:
                return
            req.expired = True
            conns = list(req.conns)
        for conn in conns:
            sock = getattr(conn, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                _, _, req = heapq.heappop(self._heap)
            self.expire(req)


_WATCHDOG = _Watchdog()
_current = threading.local()


class _DeadlineMixin:
    """Registers the connection with the current request's deadline before sending (in the caller's thread)."""

    def request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        req = getattr(_current, "request", None)
        if req is not None and not _WATCHDOG.attach(req, self):  # type: ignore[arg-type]
            raise socket.timeout("deadline passed")
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _DeadlineHTTPConnection(_DeadlineMixin, urllib3.connection.HTTPConnection):
    pass


class _DeadlineHTTPSConnection(_DeadlineMixin, urllib3.connection.HTTPSConnection):
    pass


class _DeadlineHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _DeadlineHTTPConnection


class _DeadlineHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _DeadlineHTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:  # type: ignore[override]
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _DeadlineHTTPPool, "https": _DeadlineHTTPSPool}


# ---------------------------------------------------------------- the client


class FlickrClient:
    """Thread-safe Flickr API and image client over one API limiter and one image limiter.

    ``call`` returns the parsed JSON of a successful call (retrying transient
    failures); ``fetch`` returns the bytes of an image (one try, redirects
    followed). Both raise :class:`CallFailed` when they give up and
    :class:`InterestError` on an invalid API key. ``calls`` counts every HTTP
    request made, per method (retries included); ``image`` counts image requests.
    """

    def __init__(
        self,
        api_key: str,
        api_secret: str = "",
        *,
        rest_url: str = REST_URL,
        image_host: str | None = None,
        limiter: RateLimiter | None = None,
        image_limiter: RateLimiter | None = None,
        retries: int = 6,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
        timeout: float = 30.0,
        max_json_bytes: int = 16 * 2**20,
        max_image_bytes: int = 32 * 2**20,
        max_redirects: int = 3,
        threads: int = 8,
        seed: int = 0,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._secrets = [s for s in (api_key, api_secret) if s]
        self._oauth = OAuth1(api_key, api_secret or None, signature_type="auth_header") if api_key else None
        self._api_session = self._session(threads)
        self._images = self._session(threads)
        self.rest_url = rest_url
        self.image_host = image_host
        self.limiter = limiter or RateLimiter(0)
        self.image_limiter = image_limiter or RateLimiter(0)
        self.retries = max(1, int(retries))
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.max_json_bytes = int(max_json_bytes)
        self.max_image_bytes = int(max_image_bytes)
        self.max_redirects = int(max_redirects)
        self._stopping = threading.Event()
        self._sleep = sleep or self._stopping.wait
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._active: set[_Request] = set()
        self.calls: Counter[str] = Counter()
        self.retried: Counter[str] = Counter()
        _install_scrubber(self._secrets)

    @staticmethod
    def _session(threads: int) -> requests.Session:
        session = requests.Session()
        adapter = _DeadlineAdapter(pool_connections=4, pool_maxsize=max(10, threads + 2), max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.hooks["response"].append(_raise_for_status)
        return session

    def scrub(self, text: str) -> str:
        """``text`` with the API key and secret replaced by ``***``."""
        return _scrub(str(text), self._secrets)

    def allowed_host(self, url: str) -> bool:
        """Whether images may come from ``url``'s host: ``image_host``'s when set, else Flickr's static hosts."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        if self.image_host:
            own = urlsplit(self.image_host if "//" in self.image_host else f"http://{self.image_host}")
            return parts.netloc.lower() == own.netloc.lower()
        return is_flickr_static_host(parts.hostname)

    def count_retry(self, reason: str) -> None:
        """Count one retry of ``reason`` (the downloader reschedules its own)."""
        with self._lock:
            self.retried[reason] += 1

    def stop(self) -> None:
        """Cut every request in flight and end every backoff wait (the crawl is being interrupted)."""
        self._stopping.set()
        with self._lock:
            active = list(self._active)
        for req in active:
            _WATCHDOG.expire(req)

    # ------------------------------------------------------------ one HTTP exchange

    @contextlib.contextmanager
    def _deadline(self) -> Iterator[_Request]:
        req = _Request(self.timeout)
        with self._lock:
            self._active.add(req)
        _WATCHDOG.add(req)
        _current.request = req
        try:
            yield req
        finally:
            req.done = True
            _current.request = None
            with self._lock:
                self._active.discard(req)

    def _read(self, response: requests.Response, cap: int, what: str, req: _Request) -> bytes:
        """The body, in chunks, refused past ``cap`` bytes (announced or received)."""
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > cap:
            raise CallFailed("too_large", f"{what}: body of {int(length)} bytes is over the cap of {cap}")
        # chunks joined once at the end: a growing buffer would be copied on every resize
        chunks, size = [], 0
        for chunk in response.iter_content(_CHUNK):
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                raise CallFailed("too_large", f"{what}: body over the cap of {cap} bytes")
        if req.expired:
            raise _Expired()
        return b"".join(chunks)

    def _exchange(self, send: Callable[[], requests.Response], cap: int, what: str) -> tuple[requests.Response, bytes]:
        """Send one request under the deadline; (response, body), the body empty for a redirect."""
        if self._stopping.is_set():
            raise CallFailed("interrupted", what)
        with self._deadline() as req:
            try:
                response = send()
                try:
                    body = b"" if 300 <= response.status_code < 400 else self._read(response, cap, what, req)
                finally:
                    response.close()
                return response, body
            except HTTPStatusError as exc:
                host = urlsplit(exc.url).netloc or None
                raise CallFailed(f"http_{exc.status}", f"{what}: HTTP {exc.status}", retry_after=exc.retry_after,
                                 host=host) from None
            except CallFailed:
                raise
            except (_Expired, requests.RequestException, OSError) as exc:
                if req.expired:
                    raise CallFailed("timeout", f"{what}: no whole answer within the deadline of {self.timeout:g} s") from None
                if isinstance(exc, requests.Timeout):
                    raise CallFailed("timeout", f"{what}: {self.scrub(one_line(exc, 300))}") from None
                if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
                    raise CallFailed("truncated", f"{what}: the body ended early") from None
                raise CallFailed("connection", f"{what}: {self.scrub(one_line(exc, 300))}") from None

    # ------------------------------------------------------------ API calls

    def call(self, method: str, *, expect: str | None = None, **params: object) -> dict:
        """Call ``method`` (e.g. ``flickr.people.getInfo``); ``expect`` is the key the answer must hold.

        Transient failures are retried with backoff (``Retry-After`` holds the
        API limiter, which only API calls use); the last one is raised as
        :class:`CallFailed`.
        """
        data = {"method": method, "format": "json", "nojsoncallback": 1, **params}
        last: CallFailed | None = None
        for n in range(1, self.retries + 1):
            self.limiter.acquire()
            with self._lock:
                self.calls[method] += 1
            try:
                _, body = self._exchange(
                    lambda: self._api_session.post(self.rest_url, data=data, auth=self._oauth, timeout=self.timeout, stream=True),
                    self.max_json_bytes,
                    method,
                )
                return self._parse(method, body, expect)
            except CallFailed as exc:
                if not exc.transient or self._stopping.is_set():
                    raise
                last = exc
            if n == self.retries:
                break
            with self._lock:
                self.retried[last.reason] += 1
                jitter = 0.5 + self._rng.random()
            delay = min(self.max_backoff, self.backoff * 2 ** (n - 1)) * jitter
            if last.retry_after is not None:
                self.limiter.hold(last.retry_after)  # a 429 from the API throttles the whole key
                delay = max(delay, last.retry_after)
            log.debug("%s: %s, retry %d in %.2fs", method, last.reason, n, delay)
            self._sleep(delay)
        assert last is not None
        raise CallFailed(last.reason, f"{method}: gave up after {self.retries} tries ({self.scrub(last.detail)})")

    def _parse(self, method: str, body: bytes, expect: str | None) -> dict:
        try:
            reply = json.loads(body)
        except (ValueError, RecursionError):  # cut JSON, bad UTF-8, absurd nesting or a 5000-digit number
            raise CallFailed("bad_json", f"{method}: the answer is not whole JSON") from None
        if not isinstance(reply, dict):
            raise CallFailed("bad_json", f"{method}: the answer is not a JSON object")
        stat = reply.get("stat")
        if stat == "fail":
            code = reply.get("code")
            if isinstance(code, str) and code.isdigit() and len(code) < 6:
                code = int(code)
            if not isinstance(code, int) or isinstance(code, bool) or not 0 <= code < 100_000:
                raise CallFailed("flickr_fail", f"{method}: stat fail without a usable error code")
            if code == 100:
                raise InterestError(
                    "Flickr rejected the API key (stat fail, code 100: invalid API key); "
                    "check FLICKR_API_KEY or api_key in the collect config"
                )
            if code == 105:
                raise CallFailed("unavailable", f"{method}: code 105: service unavailable")
            if code == 1:
                raise CallFailed("not_found", f"{method}: code 1")
            message = reply.get("message")
            text = self.scrub(message)[:200] if isinstance(message, str) else ""
            raise CallFailed(f"flickr_{code}", f"{method}: code {code} {text}".rstrip())
        if stat != "ok":
            raise CallFailed("malformed", f"{method}: answer without stat ok or fail")
        if expect is not None and not isinstance(reply.get(expect), dict):
            raise CallFailed("malformed", f"{method}: answer without '{expect}'")
        return reply

    # ------------------------------------------------------------ images

    def fetch(self, url: str) -> bytes:
        """The bytes at ``url`` (host rewritten to ``image_host``): one try, redirects followed.

        Raises :class:`CallFailed`: ``http_404``/``http_410`` (gone), ``placeholder``
        (a redirect to Flickr's unavailable-photo image), ``host_not_allowed``,
        ``too_many_redirects``, ``too_large``, or a transient reason
        (``http_429`` with ``retry_after`` and ``host``, ``http_5xx``,
        ``timeout``, ``connection``, ``truncated``) for the caller to reschedule.
        """
        target = rewrite_host(url, self.image_host)
        if not self.allowed_host(target):
            raise CallFailed("host_not_allowed", f"image URL host {urlsplit(target).netloc or target[:80]!r} is not an allowed image host")
        for _ in range(self.max_redirects + 1):
            self.image_limiter.acquire()
            with self._lock:
                self.calls["image"] += 1
            host = urlsplit(target).netloc
            try:
                response, body = self._exchange(
                    lambda: self._images.get(target, timeout=self.timeout, stream=True, allow_redirects=False),
                    self.max_image_bytes,
                    "image",
                )
            except CallFailed as exc:
                exc.host = exc.host or host
                raise
            if not 300 <= response.status_code < 400:
                return body
            location = response.headers.get("Location")
            if not location:
                raise CallFailed(f"http_{response.status_code}", "a redirect without a Location", host=host)
            target = urljoin(target, location)
            if is_placeholder_url(target):
                raise CallFailed("placeholder", "redirected to Flickr's unavailable-photo image", host=host, url=target)
            if not self.allowed_host(target):
                raise CallFailed("host_not_allowed", f"redirected to {urlsplit(target).netloc!r}, not an allowed image host")
        raise CallFailed("too_many_redirects", f"more than {self.max_redirects} redirects")


class _Expired(Exception):
    """The watchdog cut a request whose body had seemed to end cleanly."""




def _raise_for_status(response: requests.Response, *args: object, **kwargs: object) -> None:
    if response.status_code != 200 and not (300 <= response.status_code < 400 and "Location" in response.headers):
        retry_after = response.headers.get("Retry-After")
        seconds = float(retry_after) if retry_after and re.fullmatch(r"\d{1,6}(\.\d+)?", retry_after) else None
        response.close()
        raise HTTPStatusError(response.status_code, seconds, response.url or "")
