"""The Flickr client: ``flickrapi`` with retries, backoff, error mapping and a shared rate limit.

``flickrapi`` 2.4 has no retry, backoff or 429 handling of its own and hides
HTTP status codes behind one message, so this module gives each instance its
own ``requests`` session whose response hook turns a non-200 answer into
:class:`HTTPStatusError` (keeping ``Retry-After``), points the instance (not
the class: several servers may run side by side in one test process) at the
configured REST endpoint, and sorts every failure into one of three kinds:

* transient (HTTP 429/5xx, timeouts, connection errors, ``stat: fail`` code
  105, malformed JSON, a truncated image): retried with exponential backoff and
  seeded jitter, honouring ``Retry-After``, up to ``retries`` tries, then
  :class:`CallFailed` with the last reason;
* permanent (code 1 not found, other codes, HTTP 4xx): :class:`CallFailed` at once;
* fatal (code 100, invalid API key): :class:`InterestError`, which stops the crawl.

The API key travels only in the OAuth header that ``flickrapi`` signs, never in
a URL; every message this module keeps or logs still goes through
:meth:`FlickrClient.scrub` so that neither the key nor the secret can leak.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections import Counter
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import flickrapi
import requests
from flickrapi.exceptions import FlickrError
from requests.adapters import HTTPAdapter

from interest.collect.limiter import RateLimiter
from interest.errors import InterestError

log = logging.getLogger(__name__)

#: Packages whose loggers may see request details (oauthlib logs the client key at DEBUG)
_LOGGER_ROOTS = ("flickrapi", "oauthlib", "requests_oauthlib", "requests", "urllib3", "interest")


class CallFailed(Exception):
    """A call or download that gave up: ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class HTTPStatusError(Exception):
    """A non-200 HTTP answer, raised from the session's response hook."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class _Transient(Exception):
    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


def resolve_credentials(api_key: str | None = None, api_secret: str | None = None) -> tuple[str, str]:
    """The API key and secret: ``FLICKR_API_KEY`` / ``FLICKR_API_SECRET``, else the config's values."""
    key = os.environ.get("FLICKR_API_KEY") or api_key
    secret = os.environ.get("FLICKR_API_SECRET") or api_secret or ""
    if not key:
        raise InterestError(
            "no Flickr API key: set FLICKR_API_KEY (and FLICKR_API_SECRET) in the environment, "
            "or api_key in the collect config file"
        )
    return key, secret


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
    all created when ``flickrapi`` is imported, which this module does first).
    """
    _SCRUBBER.secrets = sorted(set(_SCRUBBER.secrets) | set(secrets), key=len, reverse=True)
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in _LOGGER_ROOTS]
    for name in {*names, *_LOGGER_ROOTS}:
        logging.getLogger(name).addFilter(_SCRUBBER)  # adding the same filter twice is a no-op


def _scrub(text: str, secrets: list[str]) -> str:
    for s in secrets:
        text = text.replace(s, "***")
    return text


def rewrite_host(url: str, image_host: str | None) -> str:
    """``url`` with its scheme and host replaced by ``image_host`` (e.g. ``http://127.0.0.1:8000``)."""
    if not image_host:
        return url
    host = urlsplit(image_host if "//" in image_host else f"http://{image_host}")
    parts = urlsplit(url)
    return urlunsplit((host.scheme, host.netloc, host.path.rstrip("/") + parts.path, parts.query, ""))


class FlickrClient:
    """Thread-safe Flickr API and image client with retries over one shared limiter.

    ``call`` returns the parsed JSON of a successful call; ``fetch`` returns the
    bytes of an image. Both raise :class:`CallFailed` when they give up and
    :class:`InterestError` on an invalid API key. ``calls`` counts every HTTP
    request made, per method (retries included); ``images`` counts image requests.
    """

    def __init__(
        self,
        api_key: str,
        api_secret: str = "",
        *,
        rest_url: str = flickrapi.FlickrAPI.REST_URL,
        image_host: str | None = None,
        limiter: RateLimiter | None = None,
        image_limiter: RateLimiter | None = None,
        retries: int = 6,
        backoff: float = 1.0,
        max_backoff: float = 300.0,
        timeout: float = 30.0,
        threads: int = 8,
        seed: int = 0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._secrets = [s for s in (api_key, api_secret) if s]
        self._api = flickrapi.FlickrAPI(api_key, api_secret, format="parsed-json", store_token=False)
        self._api.REST_URL = rest_url  # per instance: the class attribute stays Flickr's
        self._api.flickr_oauth.session = self._session(threads)
        self._images = self._session(threads)
        self.image_host = image_host
        self.limiter = limiter or RateLimiter(0)
        self.image_limiter = image_limiter or RateLimiter(0)
        self.retries = max(1, int(retries))
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.retried: Counter[str] = Counter()
        _install_scrubber(self._secrets)

    @staticmethod
    def _session(threads: int) -> requests.Session:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(10, threads + 2), max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.hooks["response"].append(_raise_for_status)
        return session

    def scrub(self, text: str) -> str:
        """``text`` with the API key and secret replaced by ``***``."""
        return _scrub(str(text), self._secrets)

    # ------------------------------------------------------------ API calls

    def call(self, method: str, *, expect: str | None = None, **params: object) -> dict:
        """Call ``method`` (e.g. ``flickr.people.getInfo``); ``expect`` is the key the answer must hold."""

        def attempt() -> dict:
            self.limiter.acquire()
            with self._lock:
                self.calls[method] += 1
            try:
                reply = self._api.do_flickr_call(method, timeout=self.timeout, **params)
            except FlickrError as exc:
                code = exc.code
                if code == 100:
                    raise InterestError(
                        "Flickr rejected the API key (stat fail, code 100: invalid API key); "
                        "check FLICKR_API_KEY or api_key in the collect config"
                    ) from None
                if code == 105:
                    raise _Transient("unavailable", "code 105: service unavailable") from None
                if code == 1:
                    raise CallFailed("not_found", f"{method}: code 1") from None
                raise CallFailed(f"flickr_{code}", self.scrub(exc)) from None
            except (ValueError, AttributeError, TypeError) as exc:  # json.loads or a non-object answer
                raise _Transient("malformed", self.scrub(exc)) from None
            if not isinstance(reply, dict) or (expect is not None and not isinstance(reply.get(expect), dict)):
                raise _Transient("malformed", f"{method}: answer without '{expect}'")
            return reply

        return self._with_retries(attempt, method)

    # ------------------------------------------------------------ images

    def fetch(self, url: str, verify: Callable[[bytes], None] | None = None) -> bytes:
        """The bytes at ``url`` (host rewritten to ``image_host``), checked by ``verify`` when given.

        ``verify`` raises ``ValueError`` for a body that is not a whole image;
        that counts as a transient failure (a truncated transfer) and the
        last one gives reason ``bad_image``.
        """
        target = rewrite_host(url, self.image_host)

        def attempt() -> bytes:
            self.image_limiter.acquire()
            with self._lock:
                self.calls["image"] += 1
            response = self._images.get(target, timeout=self.timeout)
            body = response.content
            if verify is not None:
                try:
                    verify(body)
                except ValueError as exc:
                    raise _Transient("bad_image", str(exc)) from None
            return body

        return self._with_retries(attempt, "image", missing_on_404=True)

    # ------------------------------------------------------------ retry loop

    def _with_retries(self, attempt: Callable[[], object], what: str, missing_on_404: bool = False):
        last: _Transient | None = None
        for n in range(1, self.retries + 1):
            try:
                try:
                    return attempt()
                except HTTPStatusError as exc:
                    if exc.status == 429 or exc.status >= 500:
                        raise _Transient(f"http_{exc.status}", str(exc), exc.retry_after) from None
                    if missing_on_404 and exc.status in (404, 410):
                        raise CallFailed("missing", f"HTTP {exc.status}") from None
                    raise CallFailed(f"http_{exc.status}", str(exc)) from None
                except requests.Timeout as exc:
                    raise _Transient("timeout", self.scrub(exc)) from None
                except requests.RequestException as exc:  # connection refused/reset, broken chunked body
                    raise _Transient("connection", self.scrub(exc)) from None
            except _Transient as exc:
                last = exc
                if n == self.retries:
                    break
                with self._lock:
                    self.retried[exc.reason] += 1
                    jitter = 0.5 + self._rng.random()
                delay = min(self.max_backoff, self.backoff * 2 ** (n - 1)) * jitter
                if exc.retry_after is not None:
                    # a 429 throttles the whole key, so every thread waits, not only this one
                    self.limiter.hold(exc.retry_after)
                    delay = max(delay, exc.retry_after)
                log.debug("%s: %s, retry %d in %.2fs", what, exc.reason, n, delay)
                self._sleep(delay)
        assert last is not None
        raise CallFailed(last.reason, f"{what}: gave up after {self.retries} tries ({self.scrub(last.detail)})")


def _raise_for_status(response: requests.Response, *args: object, **kwargs: object) -> None:
    if response.status_code != 200:
        retry_after = response.headers.get("Retry-After")
        seconds = float(retry_after) if retry_after and re.fullmatch(r"\d+(\.\d+)?", retry_after) else None
        response.close()
        raise HTTPStatusError(response.status_code, seconds)
