"""The settings of a crawl (:class:`CollectConfig`) and the Flickr client they make."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interest.stages.collect.client import FlickrClient, resolve_credentials
from interest.stages.collect.download import MAX_PIXELS
from interest.stages.collect.limiter import RateLimiter
from interest.core.errors import InterestError

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
