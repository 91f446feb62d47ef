"""A seeded Flickr-like world with known ground truth, written as a collection.

The world has topics (a few broadly appealing, most niche), photos (each with
a topic, a quality and a *common appeal* = topic appeal + quality), owners
whose popularity inflates their photos' views, and favouriting users whose
activity is heavy-tailed and whose taste mixes the common appeal with a
personal love for a few niche topics:

    P(u favourites p) ∝ exp(alpha * common_appeal[p] + beta[u] * taste[u, topic[p]])

sampled without replacement per user (Gumbel top-k). The collection tables
follow the contract in :mod:`interest.collection`; the truth the generator
used is written to ``ground_truth/`` and is never read by the pipeline, only by
tests, evaluation on synthetic worlds and benchmarks.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from interest.collection import (
    atomic_path,
    embeddings_path,
    embeddings_to_arrow,
    l2_normalize,
    update_manifest,
    write_json_atomic,
    write_parquet_atomic,
    write_table,
)
from interest.errors import InterestError
from interest.progress import progress_bar

GENERATOR_VERSION = 1

# Broadly appealing topics come first: the first ``n_common`` topics of a world
# take their names from here, the rest from NICHE_TOPICS, then "niche-k".
COMMON_TOPICS = (
    "landscape", "sunset", "architecture", "night city", "waterfall", "mountains",
    "seascape", "wildlife", "aurora", "autumn forest",
)
NICHE_TOPICS = (
    "model trains", "toy figures", "birthday party", "game screenshot", "knitting",
    "vintage cars", "cosplay", "lego", "aquarium fish", "cat at home", "garden gnomes",
    "stamp collection", "selfie", "school concert", "miniature painting", "bus spotting",
    "cake decorating", "fishing trip", "dollhouse", "rock climbing gym", "tractors",
    "coin collection", "wedding guests", "baby photos",
)

PATTERN_KINDS = ("stripes", "checks", "rings", "waves")

# (timezone_label, timezone_id, country) as Flickr profiles show them.
TIMEZONES = (
    ("Pacific Time (US & Canada); Tijuana", "PST8PDT", "United States"),
    ("Eastern Time (US & Canada)", "EST5EDT", "United States"),
    ("Central Time (US & Canada)", "CST6CDT", "United States"),
    ("Mountain Time (US & Canada)", "MST7MDT", "United States"),
    ("GMT: Dublin, Edinburgh, Lisbon, London", "Europe/London", "United Kingdom"),
    ("Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna", "Europe/Berlin", "Germany"),
    ("Brussels, Copenhagen, Madrid, Paris", "Europe/Paris", "France"),
    ("Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna", "Europe/Rome", "Italy"),
    ("Brussels, Copenhagen, Madrid, Paris", "Europe/Madrid", "Spain"),
    ("Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna", "Europe/Amsterdam", "Netherlands"),
    ("Athens, Bucharest, Istanbul", "Europe/Istanbul", "Turkey"),
    ("Osaka, Sapporo, Tokyo", "Asia/Tokyo", "Japan"),
    ("Beijing, Chongqing, Hong Kong, Urumqi", "Asia/Hong_Kong", "Hong Kong"),
    ("Chennai, Kolkata, Mumbai, New Delhi", "Asia/Kolkata", "India"),
    ("Canberra, Melbourne, Sydney", "Australia/Sydney", "Australia"),
    ("Brasilia", "America/Sao_Paulo", "Brazil"),
    ("Atlantic Time (Canada)", "America/Halifax", "Canada"),
    ("Auckland, Wellington", "Pacific/Auckland", "New Zealand"),
)
TIMEZONE_WEIGHTS = (16, 14, 8, 3, 12, 9, 6, 4, 4, 4, 2, 4, 2, 3, 3, 3, 2, 1)

FIRST_NAMES = (
    "Anna", "Ben", "Carla", "David", "Elena", "Felix", "Grace", "Hiro", "Ines", "Jonas",
    "Kim", "Lena", "Marco", "Nina", "Oscar", "Paula", "Quentin", "Rosa", "Sam", "Tara",
    "Umar", "Vera", "Will", "Xiao", "Yusuf", "Zoe",
)
LAST_NAMES = (
    "Smith", "Müller", "Rossi", "Garcia", "Tanaka", "Dubois", "Jansen", "Kowalski", "Silva",
    "Nguyen", "Brown", "Schmidt", "Larsen", "Ivanova", "Cohen", "Okafor", "Walsh", "Kaya",
)
HANDLE_WORDS = (
    "pixel", "lens", "shutter", "wander", "light", "frame", "focus", "north", "blue",
    "grain", "studio", "field", "urban", "tide", "fox", "moth", "echo", "vista",
)
TITLE_WORDS = ("Morning", "Evening", "Quiet", "Golden", "Old", "Little", "Blue", "Last", "First", "Wild")
PHOTOGRAPHER_JOBS = (
    "Photographer", "Professional photographer", "Freelance photographer",
    "Wedding photographer", "Photographer and designer",
)
OTHER_JOBS = (
    "Engineer", "Teacher", "Student", "Retired", "Software developer", "Nurse",
    "Architect", "Accountant", "Designer", "Sales", "Doctor", "Writer",
)

# The platform's time frame: uploads over ten years, crawled shortly after.
UPLOAD_START = np.datetime64("2012-01-01T00:00:00", "s")
UPLOAD_END = np.datetime64("2021-12-31T23:59:59", "s")
CRAWL_DATE = np.datetime64("2022-03-31T00:00:00", "s")

# The mix of common appeal and personal taste. Tuned so that common topics reach
# most users, niche topics only their fans, and an active user's favourites are
# dominated by the niche topics they love (see docs/synthetic.md).
ALPHA = 1.2  # weight of common appeal in every user's choice
BETA_MAX = 7.0  # logit boost of a fully committed user's favourite topic
ACTIVITY_RAMP = 15.0  # users with far fewer favourites than this follow the common taste
FAVES_PER_PHOTO = 1.1  # sampled favourites per photo before every photo gets one
HANDFUL_SHARE = 0.2  # users with only 1-10 favourites
HEAVY_SHARE = 0.03  # users with about ten times the usual activity


def generate_world(
    out: str | os.PathLike,
    *,
    n_users: int = 300,
    n_photos: int = 3000,
    n_topics: int = 24,
    render: bool = True,
    image_size: tuple[int, int] = (192, 144),
    embed_dim: int | None = None,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Generate a synthetic Flickr world into collection directory ``out``.

    Writes ``users``, ``photos`` and ``favorites`` tables, ``images/<photo_id>.jpg``
    when ``render`` (``image_size`` is (width, height)), embeddings under backbone
    id ``synthetic/d<embed_dim>`` when ``embed_dim`` is given, and the generator's
    truth in ``ground_truth/``. ``out`` must be new or empty; with ``overwrite``
    an earlier synthetic world there (one with ``ground_truth/world.json``) is
    removed first. The same arguments give the same tables and images.

    Returns a summary: counts and seconds per stage.
    """
    started = time.perf_counter()
    out = Path(out)
    _check_arguments(n_users, n_photos, n_topics, image_size, embed_dim, seed)
    _prepare_out(out, overwrite)
    rng = np.random.default_rng(seed)
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    n_owners = max(1, n_photos // 8)
    # One draw of NSIDs so that no owner shares an id with a favouriting user.
    nsids = _nsids(n_owners + n_users, rng)
    topics = make_topics(n_topics, rng)
    owners = make_owners(nsids[:n_owners], rng)
    photos = make_photos(n_photos, topics, owners, rng)
    users = make_users(nsids[n_owners:], n_photos, topics, rng)
    fav_user, fav_photo, n_orphans = sample_favorites(photos, users, rng, progress=progress)
    seconds["world"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fave_counts = np.bincount(fav_photo, minlength=n_photos)
    photos["faves"] = np.maximum(photos["faves"].to_numpy(), fave_counts)
    users["activity"] = np.bincount(fav_user, minlength=n_users)
    upload = photos["upload_date"].dt.tz_convert(None).to_numpy().astype("datetime64[s]")
    fave_date = _fave_dates(upload[fav_photo], rng)
    seconds["metadata"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if render:
        from interest.synthetic.render import render_photos

        photos["path"] = "images/" + photos["photo_id"] + ".jpg"
        photos["sha256"] = render_photos(
            out,
            photos["path"].tolist(),
            topics=topics,
            topic=photos["topic"].to_numpy(),
            appeal=photos["common_appeal"].to_numpy(),
            image_size=image_size,
            seed=seed,
            progress=progress,
        )
    seconds["render"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _write_collection(out, photos, users, fav_user, fav_photo, fave_date, seed)
    seconds["tables"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    backbone_id = None
    if embed_dim is not None:
        backbone_id = f"synthetic/d{embed_dim}"
        _write_embeddings(out, backbone_id, photos, topics, embed_dim, seed, progress)
    seconds["embeddings"] = time.perf_counter() - t0

    params = {
        "generator_version": GENERATOR_VERSION,
        "n_users": n_users,
        "n_photos": n_photos,
        "n_topics": n_topics,
        "render": render,
        "image_size": list(image_size),
        "embed_dim": embed_dim,
        "seed": seed,
        "alpha": ALPHA,
        "beta_max": BETA_MAX,
        "activity_ramp": ACTIVITY_RAMP,
        "faves_per_photo": FAVES_PER_PHOTO,
        "handful_share": HANDFUL_SHARE,
        "heavy_share": HEAVY_SHARE,
        "upload_start": str(UPLOAD_START),
        "upload_end": str(UPLOAD_END),
        "crawl_date": str(CRAWL_DATE),
    }
    summary = {
        "out": str(out),
        "n_users": n_users,
        "n_photos": n_photos,
        "n_topics": n_topics,
        "n_owners": len(owners),
        "n_favorites": int(len(fav_user)),
        "n_orphans_assigned": int(n_orphans),
        "backbone_id": backbone_id,
        "rendered": render,
    }
    _write_ground_truth(out, photos, users, topics, params, summary)
    seconds["total"] = time.perf_counter() - started
    summary["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return summary


# ---------------------------------------------------------------- checks


def _check_arguments(n_users, n_photos, n_topics, image_size, embed_dim, seed) -> None:
    for name, value, low in (("n_users", n_users, 1), ("n_topics", n_topics, 2), ("n_photos", n_photos, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise InterestError(f"{name}={value!r}: must be an integer of at least {low}")
    if n_photos < n_topics:
        raise InterestError(f"n_photos={n_photos} is less than n_topics={n_topics}; every topic needs a photo")
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(s, (int, np.integer)) and 16 <= s <= 4096 for s in image_size)
    ):
        raise InterestError(f"image_size={image_size!r}: must be (width, height), each 16..4096 pixels")
    if embed_dim is not None and (
        not isinstance(embed_dim, (int, np.integer)) or isinstance(embed_dim, bool) or embed_dim < 2
    ):
        raise InterestError(f"embed_dim={embed_dim!r}: must be None or an integer of at least 2")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InterestError(f"seed={seed!r}: must be a non-negative integer")


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InterestError(f"{out}: exists and is not a directory; choose a new output directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InterestError(
                f"{out}: directory is not empty; generate into a new or empty directory "
                "(or pass overwrite=True to replace an earlier synthetic world)"
            )
        if not (out / "ground_truth" / "world.json").is_file():
            raise InterestError(
                f"{out}: not a synthetic world (no ground_truth/world.json); refusing to overwrite it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


# ---------------------------------------------------------------- topics, owners, photos


def topic_names(n_topics: int, n_common: int) -> list[str]:
    """Names of a world's topics: the first ``n_common`` broadly appealing, then niche ones."""
    common = [COMMON_TOPICS[i] if i < len(COMMON_TOPICS) else f"common-{i}" for i in range(n_common)]
    n_niche = n_topics - n_common
    niche = [NICHE_TOPICS[i] if i < len(NICHE_TOPICS) else f"niche-{i}" for i in range(n_niche)]
    return common + niche


def make_topics(n_topics: int, rng: np.random.Generator) -> pd.DataFrame:
    """Topics with broad appeal, photo share and visual parameters (one row per topic)."""
    n_common = max(1, round(n_topics / 4))
    broad = np.concatenate(
        [np.sort(rng.uniform(1.0, 2.0, n_common))[::-1], np.sort(rng.uniform(-1.0, 0.2, n_topics - n_common))[::-1]]
    )
    # Spread the dominant hues around the wheel so topics stay tell-apart by colour.
    hue1 = (rng.permutation(n_topics) / n_topics + rng.uniform(0, 0.5 / n_topics, n_topics)) % 1.0
    hue2 = (hue1 + rng.uniform(0.15, 0.5, n_topics)) % 1.0
    return pd.DataFrame(
        {
            "topic": np.arange(n_topics),
            "name": topic_names(n_topics, n_common),
            "broad_appeal": broad,
            # A crawl of favourites holds more photos of what many people like.
            "share": _normalise(np.exp(0.4 * broad) * rng.gamma(6.0, 1 / 6.0, n_topics)),
            "hue1": hue1,
            "hue2": hue2,
            "orientation": rng.uniform(0, np.pi, n_topics),
            "frequency": np.exp(rng.uniform(np.log(2.0), np.log(18.0), n_topics)),
            "pattern": rng.integers(0, len(PATTERN_KINDS), n_topics),
        }
    )


def make_owners(owner_ids: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """Photo owners: NSID, name, heavy-tailed popularity, PRO status, occupation, skill."""
    n_owners = len(owner_ids)
    photographer = rng.random(n_owners) < 0.3
    ispro = rng.random(n_owners) < np.where(photographer, 0.6, 0.15)
    jobs = np.where(
        photographer,
        np.array(PHOTOGRAPHER_JOBS, dtype=object)[rng.integers(0, len(PHOTOGRAPHER_JOBS), n_owners)],
        np.array(OTHER_JOBS, dtype=object)[rng.integers(0, len(OTHER_JOBS), n_owners)],
    )
    # Many Flickr profiles leave the occupation empty.
    jobs = np.where(rng.random(n_owners) < np.where(photographer, 0.1, 0.4), None, jobs)
    first = np.array(FIRST_NAMES, dtype=object)[rng.integers(0, len(FIRST_NAMES), n_owners)]
    last = np.array(LAST_NAMES, dtype=object)[rng.integers(0, len(LAST_NAMES), n_owners)]
    return pd.DataFrame(
        {
            "owner_id": owner_ids,
            "owner_name": first + " " + last,
            # log-popularity: followers, groups, explore: drives views independently of appeal.
            "log_popularity": rng.normal(0.0, 1.0, n_owners) + 0.4 * photographer + 0.3 * ispro,
            "ispro": ispro,
            "occupation": jobs,
            "skill": rng.normal(0.0, 0.25, n_owners) + 0.35 * photographer,
            # how many of the crawl's photos an owner has: heavy-tailed as well
            "weight": rng.lognormal(0.0, 1.0, n_owners),
        }
    )


def make_photos(n_photos: int, topics: pd.DataFrame, owners: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Photos with topic, quality, common appeal, owner and Flickr metadata."""
    n_topics = len(topics)
    # Every topic gets at least one photo, the rest follow the topic shares.
    topic = np.concatenate([np.arange(n_topics), rng.choice(n_topics, n_photos - n_topics, p=topics["share"])])
    topic = rng.permutation(topic)
    owner = rng.choice(len(owners), n_photos, p=_normalise(owners["weight"].to_numpy()))
    quality = rng.normal(0.0, 0.6, n_photos) + owners["skill"].to_numpy()[owner]
    appeal = topics["broad_appeal"].to_numpy()[topic] + quality
    z = (appeal - appeal.mean()) / appeal.std()
    log_pop = owners["log_popularity"].to_numpy()[owner]

    span = (UPLOAD_END - UPLOAD_START).astype(np.int64)
    upload = UPLOAD_START + rng.integers(0, span, n_photos).astype("timedelta64[s]")
    age_years = (CRAWL_DATE - upload).astype(np.int64) / (365.25 * 86400)
    taken = upload - rng.exponential(20 * 86400, n_photos).astype("timedelta64[s]")
    # Views follow the owner's audience at least as much as the photo: the
    # platform's confound. Faves per view and comments follow the photo more.
    log_views = 4.5 + 1.0 * log_pop + 0.5 * z + 0.4 * np.log1p(age_years) + rng.normal(0, 0.6, n_photos)
    views = np.round(np.exp(log_views)).astype(np.int64) + 1
    fave_rate = np.clip(0.01 * np.exp(0.6 * z + rng.normal(0, 0.3, n_photos)), 0, 0.5)
    faves = rng.binomial(views, fave_rate)
    comments = rng.poisson(faves * 0.25 * np.exp(0.2 * log_pop))

    # Flickr ids grow with upload time.
    order = np.argsort(upload, kind="stable")
    ids = np.empty(n_photos, dtype=np.int64)
    ids[order] = 5_000_000_000 + np.cumsum(rng.integers(1, 60_000, n_photos))
    photo_id = ids.astype(str).astype(object)
    secret = np.array([f"{s:010x}" for s in rng.integers(0, 16**10, n_photos)], dtype=object)
    server = rng.integers(1000, 10000, n_photos).astype(str).astype(object)
    names = topics["name"].to_numpy(dtype=object)[topic]
    words = np.array(TITLE_WORDS, dtype=object)[rng.integers(0, len(TITLE_WORDS), n_photos)]
    camera_title = "DSC_" + rng.integers(0, 10000, n_photos).astype(str).astype(object)
    title = np.where(rng.random(n_photos) < 0.3, camera_title, words + " " + names)

    return pd.DataFrame(
        {
            "photo_id": photo_id,
            "owner_id": owners["owner_id"].to_numpy()[owner],
            "url": "https://live.staticflickr.com/" + server + "/" + photo_id + "_" + secret + "_z.jpg",
            "path": None,
            "views": views,
            "faves": faves,
            "comments": comments,
            "upload_date": pd.to_datetime(upload, utc=True),
            "owner_ispro": owners["ispro"].to_numpy()[owner],
            "owner_occupation": owners["occupation"].to_numpy()[owner],
            "sha256": None,
            "status": "ok",
            "secret": secret,
            "server": server,
            "title": title,
            "owner_name": owners["owner_name"].to_numpy()[owner],
            # Flickr's date taken is the camera's wall clock, without a time zone.
            "date_taken": pd.to_datetime(taken).astype("datetime64[ns]"),
            # truth, split off before the tables are written
            "topic": topic,
            "quality": quality,
            "common_appeal": appeal,
            "owner_popularity": log_pop,
        }
    )


# ---------------------------------------------------------------- users and favourites


def user_activity(n_users: int, n_photos: int, rng: np.random.Generator) -> np.ndarray:
    """Planned favourites per user: 20% a handful, most a median, a few about ten times that."""
    kind = rng.random(n_users)
    handful = kind < HANDFUL_SHARE
    heavy = kind > 1 - HEAVY_SHARE
    shape = np.where(heavy, rng.lognormal(np.log(10.0), 0.4, n_users), rng.lognormal(0.0, 0.6, n_users))
    small = rng.integers(1, 11, n_users)
    # Scale the others so that the sampled favourites total FAVES_PER_PHOTO per photo.
    rest = max(FAVES_PER_PHOTO * n_photos - small[handful].sum(), 0.0)
    scaled = shape * rest / max(shape[~handful].sum(), 1e-9)
    activity = np.where(handful, small, np.maximum(np.round(scaled), 11))
    return np.minimum(activity, max(1, n_photos // 2)).astype(np.int64)


def make_users(user_ids: np.ndarray, n_photos: int, topics: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Favouriting users: profile fields, planned activity and personal taste over topics."""
    n_users, n_topics = len(user_ids), len(topics)
    tz = rng.choice(len(TIMEZONES), n_users, p=_normalise(np.array(TIMEZONE_WEIGHTS, float)))
    tz_label = np.array([TIMEZONES[i][0] for i in tz], dtype=object)
    tz_id = np.array([TIMEZONES[i][1] for i in tz], dtype=object)
    country = np.array([TIMEZONES[i][2] for i in tz], dtype=object)
    # Profiles are often incomplete.
    country = np.where(rng.random(n_users) < 0.15, None, country)
    no_tz = rng.random(n_users) < 0.1
    tz_label = np.where(no_tz, None, tz_label)
    tz_id = np.where(no_tz, None, tz_id)
    gender = np.array(["female", "male", None], dtype=object)[rng.choice(3, n_users, p=[0.38, 0.5, 0.12])]
    first = np.array(FIRST_NAMES, dtype=object)[rng.integers(0, len(FIRST_NAMES), n_users)]
    last = np.array(LAST_NAMES, dtype=object)[rng.integers(0, len(LAST_NAMES), n_users)]
    handle = np.array(HANDLE_WORDS, dtype=object)[rng.integers(0, len(HANDLE_WORDS), n_users)]
    number = rng.integers(1, 100, n_users).astype(str).astype(object)
    username = handle + "_" + np.char.lower(first.astype(str)).astype(object) + number
    realname = np.where(rng.random(n_users) < 0.3, None, first + " " + last)

    activity = user_activity(n_users, n_photos, rng)
    # Each user loves 1-3 topics, mostly niche ones; weights scaled so the best is 1.
    is_common = topics["broad_appeal"].to_numpy() >= 1.0
    prior = np.where(is_common, 0.15, 1.0)
    n_loved = np.minimum(1 + rng.binomial(2, 0.35, n_users), n_topics)
    keys = np.log(prior)[None, :] + rng.gumbel(size=(n_users, n_topics))
    ranks = np.argsort(np.argsort(-keys, axis=1), axis=1)
    weights = rng.dirichlet(np.ones(3), n_users)
    taste = np.zeros((n_users, n_topics))
    for r in range(3):
        taste += (ranks == r) * (r < n_loved)[:, None] * weights[:, [r]]
    taste /= taste.max(axis=1, keepdims=True)
    # Commitment to that taste grows with activity: people with a handful of
    # favourites mostly favourite what everyone likes.
    strength = rng.beta(6.0, 2.0, n_users) * (1 - np.exp(-activity / ACTIVITY_RAMP))
    return pd.DataFrame(
        {
            "user_id": user_ids,
            "gender": gender,
            "timezone_label": tz_label,
            "timezone_id": tz_id,
            "country": country,
            "username": username,
            "realname": realname,
            "planned_activity": activity,
            "taste_strength": strength,
            "taste": list(taste),
        }
    )


def sample_favorites(
    photos: pd.DataFrame,
    users: pd.DataFrame,
    rng: np.random.Generator,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(user index, photo index) of every favourite, and how many photos needed a top-up.

    Each user draws ``planned_activity`` photos without replacement with
    probability ∝ exp(ALPHA * appeal + beta_u * taste_u[topic]) (Gumbel top-k,
    exact). A real collection is crawled from favourites lists, so a photo
    nobody drew is then given to one user, picked ∝ activity × taste for its topic.
    """
    n_photos = len(photos)
    topic = photos["topic"].to_numpy()
    taste = np.stack(users["taste"].to_numpy())
    beta = BETA_MAX * users["taste_strength"].to_numpy()
    activity = users["planned_activity"].to_numpy()
    # Photos grouped by topic, so a user's taste is one add per topic block;
    # float32 keys: this loop is most of the paper-scale world's time.
    by_topic = np.argsort(topic, kind="stable")
    bounds = np.searchsorted(topic[by_topic], np.arange(taste.shape[1] + 1))
    base = (ALPHA * photos["common_appeal"].to_numpy()[by_topic]).astype(np.float32)
    keys = np.empty(n_photos, dtype=np.float32)
    fav_user, fav_photo = [], []
    for u in progress_bar(range(len(users)), desc="favourites", unit="user", enabled=progress):
        k = int(activity[u])
        # Gumbel noise -log(-log U), U kept inside (0, 1)
        rng.random(out=keys, dtype=np.float32)
        np.clip(keys, np.float32(1e-7), None, out=keys)
        np.log(keys, out=keys)
        np.negative(keys, out=keys)
        np.log(keys, out=keys)
        np.subtract(base, keys, out=keys)
        offset = (beta[u] * taste[u]).astype(np.float32)
        for t in np.flatnonzero(offset):
            keys[bounds[t] : bounds[t + 1]] += offset[t]
        chosen = np.argpartition(keys, n_photos - k)[n_photos - k :] if k < n_photos else np.arange(n_photos)
        fav_user.append(np.full(k, u, dtype=np.int64))
        fav_photo.append(np.sort(by_topic[chosen]))
    fav_user = np.concatenate(fav_user)
    fav_photo = np.concatenate(fav_photo)

    orphans = np.flatnonzero(np.bincount(fav_photo, minlength=n_photos) == 0)
    if len(orphans):
        # log P(u | topic t) ∝ log activity_u + beta_u * taste_u[t]
        logits = np.log(activity)[:, None] + beta[:, None] * taste  # (users, topics)
        probs = np.exp(logits - logits.max(axis=0))
        cdf = np.cumsum(probs / probs.sum(axis=0), axis=0)  # per topic, over users
        r = rng.random(len(orphans))
        picked = np.empty(len(orphans), dtype=np.int64)
        orphan_topic = topic[orphans]
        for t in np.unique(orphan_topic):
            sel = orphan_topic == t
            picked[sel] = np.minimum(np.searchsorted(cdf[:, t], r[sel], side="right"), len(users) - 1)
        fav_user = np.concatenate([fav_user, picked])
        fav_photo = np.concatenate([fav_photo, orphans])
    order = np.lexsort((fav_photo, fav_user))
    return fav_user[order], fav_photo[order], len(orphans)


def _fave_dates(upload: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A favourite comes after the upload (usually soon), and before the crawl (datetime64[s] in and out)."""
    room = (CRAWL_DATE - upload).astype(np.int64)
    delay = np.minimum(rng.exponential(200 * 86400, len(upload)), room * rng.random(len(upload)))
    return upload + np.maximum(delay, 60).astype("timedelta64[s]")


# ---------------------------------------------------------------- writing


def _write_collection(out, photos, users, fav_user, fav_photo, fave_date, seed) -> None:
    info = {"producer": "interest.synthetic.generate_world", "seed": seed}
    profile = ["user_id", "gender", "timezone_label", "timezone_id", "country", "username", "realname"]
    write_table(out, "users", users[profile].astype({"username": "string", "realname": "string"}), **info)
    truth_cols = ["topic", "quality", "common_appeal", "owner_popularity"]
    extras = {c: "string" for c in ("secret", "server", "title", "owner_name")}
    write_table(out, "photos", photos.drop(columns=truth_cols).astype(extras), **info)
    favorites = pd.DataFrame(
        {
            "user_id": users["user_id"].to_numpy()[fav_user],
            "photo_id": photos["photo_id"].to_numpy()[fav_photo],
            "fave_date": pd.to_datetime(fave_date, utc=True),
        }
    )
    write_table(out, "favorites", favorites, **info)


def _write_ground_truth(out, photos, users, topics, params, summary) -> None:
    gt = Path(out) / "ground_truth"
    names = topics["name"].to_numpy()
    truth_photos = pd.DataFrame(
        {
            "photo_id": photos["photo_id"].astype("string"),
            "topic": photos["topic"].astype("int64"),
            "topic_name": pd.array(names[photos["topic"].to_numpy()], dtype="string"),
            "common_appeal": photos["common_appeal"].astype("float64"),
            "quality": photos["quality"].astype("float64"),
            "owner_id": photos["owner_id"].astype("string"),
            "owner_popularity": photos["owner_popularity"].astype("float64"),
        }
    )
    write_parquet_atomic(gt / "photos.parquet", truth_photos)
    taste = np.stack(users["taste"].to_numpy())
    top = [
        ";".join(f"{names[t]}:{row[t]:.2f}" for t in np.argsort(-row, kind="stable") if row[t] > 0)
        for row in taste
    ]
    truth_users = pd.DataFrame(
        {
            "user_id": users["user_id"].astype("string"),
            "activity": users["activity"].astype("int64"),
            "planned_activity": users["planned_activity"].astype("int64"),
            "taste_strength": users["taste_strength"].astype("float64"),
            "beta": (BETA_MAX * users["taste_strength"]).astype("float64"),
            "top_topics": pd.array(top, dtype="string"),
        }
    )
    write_parquet_atomic(gt / "users.parquet", truth_users)
    truth_topics = topics.assign(
        pattern_kind=np.array(PATTERN_KINDS, dtype=object)[topics["pattern"].to_numpy()],
        n_photos=np.bincount(photos["topic"].to_numpy(), minlength=len(topics)),
    ).astype({"name": "string", "pattern_kind": "string"})
    write_parquet_atomic(gt / "topics.parquet", truth_topics)
    write_json_atomic(gt / "world.json", {"parameters": params, "summary": summary})


def _write_embeddings(out, backbone_id, photos, topics, dim, seed, progress, chunk=65_536) -> None:
    """Embeddings = topic centroid + appeal direction × z(appeal) + noise, L2-normalised.

    Written in row groups, so memory stays near one float32 matrix at paper scale.
    """
    rng = np.random.default_rng([seed, dim, 0xE3B])
    centroids = l2_normalize(rng.standard_normal((len(topics), dim)))
    appeal_dir = rng.standard_normal(dim)
    if dim > len(topics):
        # Keep appeal apart from topic identity: orthogonal to every centroid.
        basis, _ = np.linalg.qr(centroids.T.astype(np.float64))
        appeal_dir -= basis @ (basis.T @ appeal_dir)
    appeal_dir = (appeal_dir / np.linalg.norm(appeal_dir)).astype(np.float32)
    appeal = photos["common_appeal"].to_numpy()
    z = ((appeal - appeal.mean()) / appeal.std()).astype(np.float32)
    topic = photos["topic"].to_numpy()
    ids = photos["photo_id"].to_numpy()
    path = embeddings_path(out, backbone_id)
    n = len(photos)
    with atomic_path(path) as tmp:
        writer = None
        try:
            for start in progress_bar(range(0, n, chunk), desc="embeddings", unit="chunk", enabled=progress):
                stop = min(start + chunk, n)
                # uniform noise of the intended spread: several times cheaper than normal at this size
                noise = rng.random((stop - start, dim), dtype=np.float32) - np.float32(0.5)
                noise *= np.float32(0.9 * np.sqrt(12 / dim))
                emb = centroids[topic[start:stop]] + 0.35 * z[start:stop, None] * appeal_dir + noise
                table = embeddings_to_arrow(ids[start:stop], l2_normalize(emb))
                if writer is None:
                    # unique ids and random floats: dictionary pages would only cost time
                    writer = pq.ParquetWriter(tmp, table.schema, use_dictionary=False)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
    update_manifest(
        out, f"features/{backbone_id}", rows=n, dim=dim, producer="interest.synthetic.generate_world", seed=seed
    )


# ---------------------------------------------------------------- helpers


def _nsids(n: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct Flickr-style NSIDs such as ``12345678@N03``."""
    numbers = rng.choice(90_000_000, n, replace=False) + 10_000_000
    suffix = rng.choice(np.array(["@N00", "@N02", "@N03", "@N04", "@N05", "@N07", "@N08"], dtype=object), n)
    return numbers.astype(str).astype(object) + suffix


def _normalise(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=float)
    return w / w.sum()
