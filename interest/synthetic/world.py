"""A seeded Flickr-like world with known ground truth, written as a collection.

The world has topics (a few broadly appealing, most niche), photos (each with
a topic, a quality and a *common appeal* = topic appeal + quality), owners
whose popularity inflates their photos' views, and favouriting users whose
activity is heavy-tailed and whose taste mixes the common appeal with a
personal love for a few niche topics:

    P(u favourites p) ∝ exp(alpha * common_appeal[p] + beta[u] * taste[u, topic[p]])

sampled without replacement per user (Gumbel top-k). The collection tables
follow the contract in :mod:`interest.core.collection`; the truth the generator
used is written to ``ground_truth/`` and is never read by the pipeline, only by
tests, evaluation on synthetic worlds and benchmarks.

A :class:`WorldStructure` adds what real Flickr has and the default world
lacks: sub-topics of very different appeal inside each topic, communities of
users who share niche interests, crawl-like sampling (the collection holds only
the photos some collected user favourited), favourites that follow the
owner's popularity, and heavier-tailed activity. Every world's truth includes
each photo's *true commonality* — the expected number of distinct users of a
population (the collected users and fresh ones drawn alike) who would
favourite it — and held-out photos the collection never held, with their
embeddings and truth (``ground_truth/heldout/``). :mod:`interest.synthetic.family`
names the worlds benchmarks and defaults are judged on.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from interest.core.collection import (
    atomic_path,
    embeddings_path,
    embeddings_to_arrow,
    l2_normalize,
    update_manifest,
    write_json_atomic,
    write_parquet_atomic,
    write_table,
)
from interest.core.errors import InterestError
from interest.core.progress import progress_bar

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
ACTIVITY_SIGMA = 0.6  # lognormal spread of ordinary users' activity
POPULATION_FACTOR = 4  # truth's population: the collected users and three times as many drawn alike
HELDOUT_PHOTOS = 1000  # photos the collection never held, drawn like its photos, for scoring
SUBTOPIC_SCALE = 0.7  # how far a sub-topic's centroid sits from its topic's (topic centroids have norm 1)
_TRUTH_BINS = 32  # pool photos per unit summarised in this many appeal bins when solving users' thresholds
_TRUTH_GRID = 256  # appeal grid points per unit on which the true commonality is evaluated


@dataclass(frozen=True)
class WorldStructure:
    """Structure options beyond the default world (all off by default).

    * ``subtopics`` — sub-topics per topic (1: none). Each sub-topic's appeal is
      its topic's broad appeal plus an offset of SD ``subtopic_spread``
      (centred per topic), so one broad topic holds both common and niche
      content; users' tastes and communities are over sub-topics.
    * ``communities`` — groups of users sharing ``community_niches`` niche
      sub-topics; a ``community_share`` of users belongs to one, and their taste
      is the community's plus half their personal quirks.
    * ``crawl_pool`` — > 0: photos are drawn from a pool of ``crawl_pool ×
      n_photos`` and the collection keeps only those some collected user
      favourited (so most have one or two favourites, and ``n_photos`` is the
      collection's approximate size); 0: every photo is kept (the default world).
    * ``faves_per_photo`` — sampled favourites per (intended) collection photo.
    * ``exposure`` — logit boost per unit of the owner's log-popularity when a
      user picks favourites: popular owners' photos collect favourites beyond
      their appeal, as their views and fave counts already do.
    * ``activity_sigma``, ``heavy_share`` — spread of ordinary users' activity
      and share of heavy users (about ten times the usual activity).
    * ``community_niches_max`` — > 0: each community loves between
      ``community_niches`` and this many niche sub-topics (drawn per
      community); 0: every community loves ``community_niches``.
    * ``common_sensitivity`` — ratio of the most to the least sensitive user's
      weight on common appeal (1: everyone weighs it ``ALPHA``). Above 1, each
      user's weight is ``ALPHA`` times one of five levels spaced geometrically
      from ``1/sqrt(ratio)`` to ``sqrt(ratio)``: some users follow the crowd,
      some ignore it.
    """

    subtopics: int = 1
    subtopic_spread: float = 0.0
    communities: int = 0
    community_niches: int = 2
    community_share: float = 0.0
    crawl_pool: float = 0.0
    faves_per_photo: float = FAVES_PER_PHOTO
    exposure: float = 0.0
    activity_sigma: float = ACTIVITY_SIGMA
    heavy_share: float = HEAVY_SHARE
    community_niches_max: int = 0
    common_sensitivity: float = 1.0

    def is_default(self) -> bool:
        """True when every option is off: the default world."""
        return self == WorldStructure()


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
    structure: WorldStructure | None = None,
    heldout_photos: int = HELDOUT_PHOTOS,
) -> dict:
    """Generate a synthetic Flickr world into collection directory ``out``.

    Writes ``users``, ``photos`` and ``favorites`` tables, ``images/<photo_id>.jpg``
    when ``render`` (``image_size`` is (width, height)), embeddings under backbone
    id ``synthetic/d<embed_dim>`` when ``embed_dim`` is given, and the generator's
    truth in ``ground_truth/``. ``out`` must be new or empty; with ``overwrite``
    an earlier synthetic world there (one with ``ground_truth/world.json``) is
    removed first. The same arguments give the same tables and images.
    ``structure`` (a :class:`WorldStructure`) adds sub-topics, communities,
    crawl-like sampling, owner exposure and heavier tails; without it the world
    is the default one, draw for draw. ``heldout_photos`` photos the collection
    never held are drawn alike and written, with their truth (and embeddings
    when ``embed_dim`` is given), to ``ground_truth/heldout/``.

    Returns a summary: counts and seconds per stage.
    """
    started = time.perf_counter()
    out = Path(out)
    structure = structure or WorldStructure()
    _check_arguments(n_users, n_photos, n_topics, image_size, embed_dim, seed)
    _check_structure(structure, heldout_photos)
    _prepare_out(out, overwrite)
    rng = np.random.default_rng(seed)
    # Structure draws come from their own stream, so the default world stays draw-for-draw the same.
    srng = np.random.default_rng([seed, 0x57C])
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    n_owners = max(1, n_photos // 8)
    # One draw of NSIDs so that no owner shares an id with a favouriting user.
    nsids = _nsids(n_owners + n_users, rng)
    topics = make_topics(n_topics, rng)
    units = make_units(topics, structure.subtopics, structure.subtopic_spread, srng)
    owners = make_owners(nsids[:n_owners], rng)
    crawl = structure.crawl_pool > 0
    n_pool = max(n_topics, int(round(structure.crawl_pool * n_photos))) if crawl else n_photos
    pool = make_photos(n_pool, topics, owners, rng, units=None if structure.subtopics <= 1 else units, unit_rng=srng)
    communities = make_communities(units, structure, srng)
    activity_options = dict(
        sigma=structure.activity_sigma, heavy_share=structure.heavy_share, faves_per_photo=structure.faves_per_photo
    )
    users = make_users(
        nsids[n_owners:], n_photos, units, rng,
        communities=communities, community_share=structure.community_share, community_rng=srng, **activity_options,
        common_sensitivity=structure.common_sensitivity, sensitivity_rng=np.random.default_rng([seed, 0xA1FA]),
    )
    exposure = structure.exposure * pool["owner_popularity"].to_numpy() if structure.exposure else None
    fav_user, fav_photo, n_orphans = sample_favorites(
        pool, users, rng, progress=progress, extra_logit=exposure, top_up=not crawl
    )
    if crawl:
        # A crawl sees only the photos its users favourited.
        kept = np.unique(fav_photo)
        photos = pool.iloc[kept].reset_index(drop=True)
        fav_photo = np.searchsorted(kept, fav_photo)
    else:
        photos = pool
    seconds["world"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    n_photos_kept = len(photos)
    fave_counts = np.bincount(fav_photo, minlength=n_photos_kept)
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
    hrng = np.random.default_rng([seed, 0x4E1D])
    heldout = make_photos(
        heldout_photos, topics, owners, hrng, units=None if structure.subtopics <= 1 else units, unit_rng=hrng,
        id_base=int(photos["photo_id"].astype(np.int64).max()) + 1 if heldout_photos else 0,
    ) if heldout_photos else None
    population = make_population(users, n_users, n_photos, units, communities, structure, seed, activity_options)
    thresholds = user_thresholds(pool, population, structure.exposure)
    photos["true_commonality"] = true_commonality(photos, population, thresholds)
    if heldout is not None:
        heldout["true_commonality"] = true_commonality(heldout, population, thresholds)
    seconds["truth"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    backbone_id = None
    if embed_dim is not None:
        backbone_id = f"synthetic/d{embed_dim}"
        _write_embeddings(out, backbone_id, photos, topics, units, embed_dim, seed, progress, heldout=heldout)
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
        "structure": asdict(structure),
        "heldout_photos": int(heldout_photos),
        "population": int(len(population["beta"])),
    }
    summary = {
        "out": str(out),
        "n_users": n_users,
        "n_photos": int(n_photos_kept),
        "n_topics": n_topics,
        "n_units": int(len(units)),
        "n_owners": len(owners),
        "n_pool_photos": int(n_pool),
        "n_favorites": int(len(fav_user)),
        "n_orphans_assigned": int(n_orphans),
        "n_heldout_photos": int(heldout_photos),
        "backbone_id": backbone_id,
        "rendered": render,
    }
    _write_ground_truth(out, photos, users, topics, units, params, summary, heldout)
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


def _check_structure(structure: WorldStructure, heldout_photos: int) -> None:
    if not isinstance(structure, WorldStructure):
        raise InterestError(f"structure={structure!r}: give an interest.synthetic.world.WorldStructure or None")
    for name, low in (("subtopics", 1), ("communities", 0), ("community_niches", 1), ("community_niches_max", 0)):
        value = getattr(structure, name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise InterestError(f"structure.{name}={value!r}: must be an integer of at least {low}")
    for name in ("subtopic_spread", "crawl_pool", "exposure", "activity_sigma"):
        if not float(getattr(structure, name)) >= 0:
            raise InterestError(f"structure.{name}={getattr(structure, name)!r}: must be a number of at least 0")
    if 0 < structure.crawl_pool < 1:
        raise InterestError(f"structure.crawl_pool={structure.crawl_pool!r}: give 0 (no crawl) or at least 1")
    for name in ("community_share", "heavy_share"):
        if not 0.0 <= float(getattr(structure, name)) <= 1.0:
            raise InterestError(f"structure.{name}={getattr(structure, name)!r}: must be in [0, 1]")
    if not float(structure.common_sensitivity) >= 1:
        raise InterestError(
            f"structure.common_sensitivity={structure.common_sensitivity!r}: must be at least 1 (1: every user alike)"
        )
    if not float(structure.faves_per_photo) > 0:
        raise InterestError(f"structure.faves_per_photo={structure.faves_per_photo!r}: must be above 0")
    if not isinstance(heldout_photos, (int, np.integer)) or isinstance(heldout_photos, bool) or heldout_photos < 0:
        raise InterestError(f"heldout_photos={heldout_photos!r}: must be a non-negative integer")


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InterestError(f"{out}: exists and is not a directory; choose a new output directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InterestError(
                f"{out}: directory is not empty; generate into a new or empty directory "
                "(or replace an earlier synthetic world: --overwrite, overwrite=True in Python)"
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


def make_units(topics: pd.DataFrame, subtopics: int, spread: float, rng: np.random.Generator) -> pd.DataFrame:
    """The units of taste and content: one per topic, or ``subtopics`` per topic with spread-out appeal.

    Columns: ``unit``, ``topic``, ``name``, ``appeal_offset`` (added to the
    topic's broad appeal), ``broad_appeal`` (the unit's: topic's + offset) and
    ``share`` (of its topic's photos).
    """
    n_topics = len(topics)
    if subtopics <= 1:
        return pd.DataFrame(
            {
                "unit": np.arange(n_topics),
                "topic": np.arange(n_topics),
                "name": topics["name"].to_numpy(dtype=object),
                "appeal_offset": np.zeros(n_topics),
                "broad_appeal": topics["broad_appeal"].to_numpy(dtype=float),
                "share": np.ones(n_topics),
            }
        )
    offset = rng.normal(0.0, spread, (n_topics, subtopics))
    # centred per topic: the topic's broad appeal stays its sub-topics' mean
    offset -= offset.mean(axis=1, keepdims=True)
    share = rng.dirichlet(np.full(subtopics, 3.0), n_topics)
    topic = np.repeat(np.arange(n_topics), subtopics)
    names = topics["name"].to_numpy(dtype=object)[topic] + np.tile(
        np.array([f"/{k}" for k in range(subtopics)], dtype=object), n_topics
    )
    return pd.DataFrame(
        {
            "unit": np.arange(n_topics * subtopics),
            "topic": topic,
            "name": names,
            "appeal_offset": offset.ravel(),
            "broad_appeal": topics["broad_appeal"].to_numpy(dtype=float)[topic] + offset.ravel(),
            "share": share.ravel(),
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


def make_photos(
    n_photos: int,
    topics: pd.DataFrame,
    owners: pd.DataFrame,
    rng: np.random.Generator,
    *,
    units: pd.DataFrame | None = None,
    unit_rng: np.random.Generator | None = None,
    id_base: int = 5_000_000_000,
) -> pd.DataFrame:
    """Photos with topic (and unit), quality, common appeal, owner and Flickr metadata.

    With ``units`` (sub-topics, see :func:`make_units`) each photo also draws a
    sub-topic of its topic from ``unit_rng`` by the sub-topics' shares, and
    its appeal includes the sub-topic's offset; without, the unit is the topic.
    Photo ids start above ``id_base``.
    """
    n_topics = len(topics)
    # Every topic gets at least one photo, the rest follow the topic shares.
    if n_photos >= n_topics:
        topic = np.concatenate([np.arange(n_topics), rng.choice(n_topics, n_photos - n_topics, p=topics["share"])])
    else:  # a handful of held-out photos need not cover every topic
        topic = rng.choice(n_topics, n_photos, p=topics["share"])
    topic = rng.permutation(topic)
    owner = rng.choice(len(owners), n_photos, p=_normalise(owners["weight"].to_numpy()))
    quality = rng.normal(0.0, 0.6, n_photos) + owners["skill"].to_numpy()[owner]
    appeal = topics["broad_appeal"].to_numpy()[topic] + quality
    unit = topic
    if units is not None:
        per_topic = int(len(units) // n_topics)
        share = units["share"].to_numpy().reshape(n_topics, per_topic)
        cdf = np.cumsum(share, axis=1)
        pick = (unit_rng.random(n_photos)[:, None] > cdf[topic]).sum(axis=1)
        unit = topic * per_topic + np.minimum(pick, per_topic - 1)
        appeal = appeal + units["appeal_offset"].to_numpy()[unit]
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
    ids[order] = id_base + np.cumsum(rng.integers(1, 60_000, n_photos))
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
            "unit": unit,
            "quality": quality,
            "common_appeal": appeal,
            "owner_popularity": log_pop,
        }
    )


# ---------------------------------------------------------------- users and favourites


def user_activity(
    n_users: int,
    n_photos: int,
    rng: np.random.Generator,
    *,
    sigma: float = ACTIVITY_SIGMA,
    heavy_share: float = HEAVY_SHARE,
    faves_per_photo: float = FAVES_PER_PHOTO,
) -> np.ndarray:
    """Planned favourites per user: 20% a handful, most a median, a few about ten times that.

    ``sigma`` is the lognormal spread of ordinary users, ``heavy_share`` the
    share of heavy users; all favourites total ``faves_per_photo × n_photos``.
    """
    kind = rng.random(n_users)
    handful = kind < HANDFUL_SHARE
    heavy = kind > 1 - heavy_share
    shape = np.where(heavy, rng.lognormal(np.log(10.0), 0.4, n_users), rng.lognormal(0.0, sigma, n_users))
    small = rng.integers(1, 11, n_users)
    # Scale the others so that the sampled favourites total faves_per_photo per photo.
    rest = max(faves_per_photo * n_photos - small[handful].sum(), 0.0)
    scaled = shape * rest / max(shape[~handful].sum(), 1e-9)
    activity = np.where(handful, small, np.maximum(np.round(scaled), 11))
    return np.minimum(activity, max(1, n_photos // 2)).astype(np.int64)


def make_communities(units: pd.DataFrame, structure: WorldStructure, rng: np.random.Generator) -> np.ndarray | None:
    """(communities, units) taste of each community: ``community_niches`` niche units at 1 (None without)."""
    if structure.communities == 0:
        return None
    appeal = units["broad_appeal"].to_numpy()
    niche = np.flatnonzero(appeal < 1.0)
    if len(niche) == 0:
        niche = np.arange(len(units))
    k = min(structure.community_niches, len(niche))
    taste = np.zeros((structure.communities, len(units)))
    for c in range(structure.communities):
        if structure.community_niches_max > structure.community_niches:
            k = min(int(rng.integers(structure.community_niches, structure.community_niches_max + 1)), len(niche))
        taste[c, rng.choice(niche, k, replace=False)] = 1.0
    return taste


def sensitivity_levels(ratio: float) -> np.ndarray:
    """The five weights on common appeal (multiples of ALPHA) of a world with ``common_sensitivity`` ``ratio``."""
    return np.geomspace(1.0 / np.sqrt(ratio), np.sqrt(ratio), 5)


def common_weights(n_users: int, ratio: float, rng: np.random.Generator | None) -> np.ndarray:
    """Each user's weight on common appeal as a multiple of ALPHA: all 1 unless ``ratio`` > 1 (see WorldStructure)."""
    if ratio <= 1 or rng is None:
        return np.ones(n_users)
    return sensitivity_levels(ratio)[rng.integers(0, 5, n_users)]


def make_users(
    user_ids: np.ndarray,
    n_photos: int,
    topics: pd.DataFrame,
    rng: np.random.Generator,
    *,
    communities: np.ndarray | None = None,
    community_share: float = 0.0,
    community_rng: np.random.Generator | None = None,
    sigma: float = ACTIVITY_SIGMA,
    heavy_share: float = HEAVY_SHARE,
    faves_per_photo: float = FAVES_PER_PHOTO,
    common_sensitivity: float = 1.0,
    sensitivity_rng: np.random.Generator | None = None,
) -> pd.DataFrame:
    """Favouriting users: profile fields, planned activity and personal taste over topics (or units).

    ``topics`` may be the units of :func:`make_units` (taste is then over
    sub-topics). With ``communities`` (see :func:`make_communities`) a
    ``community_share`` of users joins one, drawn from ``community_rng``: their
    taste becomes the community's plus half their personal one. With
    ``common_sensitivity`` > 1 each user's weight on common appeal
    (``common_weight``, a multiple of ALPHA) is drawn from ``sensitivity_rng``.
    """
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

    activity = user_activity(
        n_users, n_photos, rng, sigma=sigma, heavy_share=heavy_share, faves_per_photo=faves_per_photo
    )
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
    community = np.full(n_users, -1, dtype=np.int64)
    if communities is not None and len(communities):
        member = community_rng.random(n_users) < community_share
        community = np.where(member, community_rng.integers(0, len(communities), n_users), -1)
        shared = np.where(member[:, None], communities[np.maximum(community, 0)], 0.0)
        taste = np.where(member[:, None], 0.5 * taste + shared, taste)
        taste /= taste.max(axis=1, keepdims=True)
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
            "community": community,
            "common_weight": common_weights(n_users, common_sensitivity, sensitivity_rng),
        }
    )


def sample_favorites(
    photos: pd.DataFrame,
    users: pd.DataFrame,
    rng: np.random.Generator,
    progress: bool = True,
    *,
    extra_logit: np.ndarray | None = None,
    top_up: bool = True,
) -> tuple[np.ndarray, np.ndarray, int]:
    """(user index, photo index) of every favourite, and how many photos needed a top-up.

    Each user draws ``planned_activity`` photos without replacement with
    probability ∝ exp(w_u * ALPHA * appeal + beta_u * taste_u[unit] + extra_logit)
    (``w_u`` the user's ``common_weight``, 1 when the table has none)
    (Gumbel top-k, exact; the unit is the topic unless the world has
    sub-topics). With ``top_up``, a photo nobody drew is then given to one
    user, picked ∝ activity × taste for its unit, so every photo is somebody's
    favourite; a crawl (``top_up=False``) drops such photos instead.
    """
    n_photos = len(photos)
    topic = photos["unit"].to_numpy() if "unit" in photos else photos["topic"].to_numpy()
    taste = np.stack(users["taste"].to_numpy())
    beta = BETA_MAX * users["taste_strength"].to_numpy()
    activity = users["planned_activity"].to_numpy()
    # Photos grouped by topic, so a user's taste is one add per topic block;
    # float32 keys: this loop is most of the paper-scale world's time.
    by_topic = np.argsort(topic, kind="stable")
    bounds = np.searchsorted(topic[by_topic], np.arange(taste.shape[1] + 1))
    logit = ALPHA * photos["common_appeal"].to_numpy()
    weight = users["common_weight"].to_numpy() if "common_weight" in users else np.ones(len(users))
    varied = not (weight == 1.0).all()
    if varied:  # each user weighs common appeal their own way: the appeal and the rest of the logit kept apart
        appeal_sorted = logit[by_topic]
        rest_sorted = extra_logit[by_topic] if extra_logit is not None else 0.0
    if extra_logit is not None:
        logit = logit + extra_logit
    base = logit[by_topic].astype(np.float32)
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
        np.subtract(base if not varied else (weight[u] * appeal_sorted + rest_sorted).astype(np.float32), keys, out=keys)
        offset = (beta[u] * taste[u]).astype(np.float32)
        for t in np.flatnonzero(offset):
            keys[bounds[t] : bounds[t + 1]] += offset[t]
        chosen = np.argpartition(keys, n_photos - k)[n_photos - k :] if k < n_photos else np.arange(n_photos)
        fav_user.append(np.full(k, u, dtype=np.int64))
        fav_photo.append(np.sort(by_topic[chosen]))
    fav_user = np.concatenate(fav_user)
    fav_photo = np.concatenate(fav_photo)

    orphans = np.flatnonzero(np.bincount(fav_photo, minlength=n_photos) == 0)
    if len(orphans) and top_up:
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
    return fav_user[order], fav_photo[order], len(orphans) if top_up else 0


# ---------------------------------------------------------------- truth


def make_population(
    users: pd.DataFrame,
    n_users: int,
    n_photos: int,
    units: pd.DataFrame,
    communities: np.ndarray | None,
    structure: WorldStructure,
    seed: int,
    activity_options: dict,
) -> dict:
    """The population truth is measured on: the collected users and (POPULATION_FACTOR - 1) × as many drawn alike.

    Returns ``taste`` (people, units), ``beta`` (people,), ``activity``
    (planned favourites, people,) and ``common_weight`` (people,). The fresh people come from their own
    seeded stream, batch by batch of ``n_users``, so their activity follows
    the collected users' scale.
    """
    tastes = [np.stack(users["taste"].to_numpy())]
    betas = [BETA_MAX * users["taste_strength"].to_numpy()]
    activity = [users["planned_activity"].to_numpy()]
    weights = [users["common_weight"].to_numpy()]
    for batch in range(POPULATION_FACTOR - 1):
        prng = np.random.default_rng([seed, 0x909, batch])
        ids = np.array([f"p{batch}-{i}" for i in range(n_users)], dtype=object)
        extra = make_users(
            ids, n_photos, units, prng, communities=communities, community_share=structure.community_share,
            community_rng=prng, **activity_options,
            common_sensitivity=structure.common_sensitivity, sensitivity_rng=prng,
        )
        tastes.append(np.stack(extra["taste"].to_numpy()))
        betas.append(BETA_MAX * extra["taste_strength"].to_numpy())
        activity.append(extra["planned_activity"].to_numpy())
        weights.append(extra["common_weight"].to_numpy())
    return {
        "taste": np.concatenate(tastes),
        "beta": np.concatenate(betas),
        "activity": np.concatenate(activity).astype(np.float64),
        "common_weight": np.concatenate(weights),
    }


def user_thresholds(pool: pd.DataFrame, population: dict, exposure: float) -> np.ndarray:
    """Each person's log-threshold ``tau`` such that their inclusion probabilities sum to their activity.

    Top-k sampling by Gumbel keys is a race of exponential clocks: a photo of
    weight ``w`` is among a person's ``k`` favourites with probability close
    to ``1 - exp(-w e^tau)``, ``tau`` solving ``sum_p 1 - exp(-w_p e^tau) = k``
    over the pool (the conditional-Poisson approximation). Pool photos are
    summarised per unit in ``_TRUTH_BINS`` bins of weight, then ``tau`` is
    found by bisection for everybody at once.
    """
    unit = pool["unit"].to_numpy()
    appeal = ALPHA * pool["common_appeal"].to_numpy()
    extra = exposure * pool["owner_popularity"].to_numpy() if exposure else None
    taste, beta, k = population["taste"], population["beta"], population["activity"]
    weight = population.get("common_weight", np.ones(len(beta)))
    n_units = taste.shape[1]
    k = np.minimum(k, 0.999 * len(pool))
    tau = np.empty(len(k))
    for level in np.unique(weight):  # one summary of the pool per weight on common appeal (one level by default)
        logit = appeal if level == 1.0 else level * appeal
        if extra is not None:
            logit = logit + extra
        reps = np.zeros((n_units, _TRUTH_BINS))
        counts = np.zeros((n_units, _TRUTH_BINS))
        for j in range(n_units):
            values = np.sort(logit[unit == j])
            for b, chunk in enumerate(np.array_split(values, min(_TRUTH_BINS, len(values))) if len(values) else []):
                peak = chunk.max()
                reps[j, b] = peak + np.log(np.mean(np.exp(chunk - peak)))  # log-mean-exp: exact while w e^tau is small
                counts[j, b] = len(chunk)
        people = np.flatnonzero(weight == level)
        for start in range(0, len(people), 2048):
            block = people[start : start + 2048]
            s = (beta[block, None] * taste[block])[:, :, None] + reps[None]
            lo, hi = np.full(len(s), -60.0), np.full(len(s), 60.0)
            for _ in range(48):
                mid = 0.5 * (lo + hi)
                reached = (-np.expm1(-np.exp(np.minimum(s + mid[:, None, None], 50.0))) * counts).sum(axis=(1, 2))
                above = reached > k[block]
                hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
            tau[block] = 0.5 * (lo + hi)
    return tau


def true_commonality(photos: pd.DataFrame, population: dict, tau: np.ndarray) -> np.ndarray:
    """Expected number of distinct people of the population who would favourite each photo.

    ``sum_u 1 - exp(-exp(w_u * ALPHA * appeal + beta_u taste_u[unit] + tau_u))``
    (``w_u`` the person's weight on common appeal, 1 unless the world varies it),
    with the owner's exposure left out: what the photo collects from an owner
    of average popularity. Evaluated per unit on a fine grid of appeal and
    interpolated (the function is smooth and increasing in appeal).
    """
    if len(photos) == 0:
        return np.zeros(0)
    unit = photos["unit"].to_numpy()
    x = ALPHA * photos["common_appeal"].to_numpy()
    grid = np.linspace(x.min() - 1e-6, x.max() + 1e-6, _TRUTH_GRID)
    offset = population["beta"][:, None] * population["taste"] + tau[:, None]  # (people, units)
    weight = population.get("common_weight", np.ones(len(offset)))
    # each person sees the grid through their own weight on common appeal (everyone the same by default)
    scaled = grid[:, None] if (weight == 1.0).all() else grid[:, None] * weight[None, :]
    out = np.empty(len(photos))
    for j in np.unique(unit):
        sel = unit == j
        curve = -np.expm1(-np.exp(np.minimum(scaled + offset[None, :, j], 50.0))).sum(axis=1)
        out[sel] = np.interp(x[sel], grid, curve)
    return out


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
    truth_cols = ["topic", "unit", "quality", "common_appeal", "owner_popularity", "true_commonality"]
    extras = {c: "string" for c in ("secret", "server", "title", "owner_name")}
    write_table(out, "photos", photos.drop(columns=truth_cols, errors="ignore").astype(extras), **info)
    favorites = pd.DataFrame(
        {
            "user_id": users["user_id"].to_numpy()[fav_user],
            "photo_id": photos["photo_id"].to_numpy()[fav_photo],
            "fave_date": pd.to_datetime(fave_date, utc=True),
        }
    )
    write_table(out, "favorites", favorites, **info)


def _truth_photos(photos: pd.DataFrame, topics: pd.DataFrame, units: pd.DataFrame) -> pd.DataFrame:
    names = topics["name"].to_numpy()
    return pd.DataFrame(
        {
            "photo_id": photos["photo_id"].astype("string"),
            "topic": photos["topic"].astype("int64"),
            "topic_name": pd.array(names[photos["topic"].to_numpy()], dtype="string"),
            "unit": photos["unit"].astype("int64"),
            "unit_name": pd.array(units["name"].to_numpy()[photos["unit"].to_numpy()], dtype="string"),
            "common_appeal": photos["common_appeal"].astype("float64"),
            "quality": photos["quality"].astype("float64"),
            "owner_id": photos["owner_id"].astype("string"),
            "owner_popularity": photos["owner_popularity"].astype("float64"),
            "true_commonality": photos["true_commonality"].astype("float64"),
        }
    )


def _write_ground_truth(out, photos, users, topics, units, params, summary, heldout) -> None:
    gt = Path(out) / "ground_truth"
    write_parquet_atomic(gt / "photos.parquet", _truth_photos(photos, topics, units))
    if heldout is not None:
        # The held-out photos as a collection's photos table would hold them, plus their truth.
        extras = {c: "string" for c in ("secret", "server", "title", "owner_name")}
        table = heldout.drop(columns=["topic", "unit", "quality", "common_appeal", "owner_popularity", "true_commonality"])
        table = table.astype(extras).merge(_truth_photos(heldout, topics, units).drop(columns=["owner_id"]), on="photo_id")
        write_parquet_atomic(gt / "heldout" / "photos.parquet", table)
    names = units["name"].to_numpy()
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
            # the oracle: P(u favourites p) ∝ exp(common_weight[u] * ALPHA * common_appeal[p]
            #                                       + beta[u] * taste[u][unit[p]] + exposure)
            "taste": [row.astype(np.float64) for row in taste],
            "community": users["community"].astype("int64"),
            # the user's weight on common appeal, a multiple of ALPHA (1 unless the world varies it)
            "common_weight": users["common_weight"].astype("float64"),
        }
    )
    write_parquet_atomic(gt / "users.parquet", truth_users)
    write_parquet_atomic(gt / "units.parquet", units.astype({"name": "string"}))
    truth_topics = topics.assign(
        pattern_kind=np.array(PATTERN_KINDS, dtype=object)[topics["pattern"].to_numpy()],
        n_photos=np.bincount(photos["topic"].to_numpy(), minlength=len(topics)),
    ).astype({"name": "string", "pattern_kind": "string"})
    write_parquet_atomic(gt / "topics.parquet", truth_topics)
    write_json_atomic(gt / "world.json", {"parameters": params, "summary": summary})


def _embedding_space(topics, units, dim, seed) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """(centroid of each unit, appeal direction, the noise stream) of a world's embedding space."""
    rng = np.random.default_rng([seed, dim, 0xE3B])
    centroids = l2_normalize(rng.standard_normal((len(topics), dim)))
    appeal_dir = rng.standard_normal(dim)
    if len(units) > len(topics):
        # a sub-topic sits near its topic: a coarse clustering fuses siblings of very different appeal
        spread = l2_normalize(rng.standard_normal((len(units), dim)))
        centroids = l2_normalize(centroids[units["topic"].to_numpy()] + SUBTOPIC_SCALE * spread)
    if dim > len(centroids):
        # Keep appeal apart from topic identity: orthogonal to every centroid.
        basis, _ = np.linalg.qr(centroids.T.astype(np.float64))
        appeal_dir -= basis @ (basis.T @ appeal_dir)
    appeal_dir = (appeal_dir / np.linalg.norm(appeal_dir)).astype(np.float32)
    return centroids, appeal_dir, rng


def _write_embeddings(out, backbone_id, photos, topics, units, dim, seed, progress, *, heldout=None, chunk=65_536) -> None:
    """Embeddings = unit centroid + appeal direction × z(appeal) + noise, L2-normalised.

    Written in row groups, so memory stays near one float32 matrix at paper
    scale. Held-out photos get embeddings in the same space (their own noise
    stream, the collection's appeal scale) in ``ground_truth/heldout/``.
    """
    centroids, appeal_dir, rng = _embedding_space(topics, units, dim, seed)
    appeal = photos["common_appeal"].to_numpy()
    mean, sd = appeal.mean(), appeal.std()
    _write_embedding_rows(embeddings_path(out, backbone_id), photos, centroids, appeal_dir, mean, sd, rng, progress, chunk)
    update_manifest(
        out, f"features/{backbone_id}", rows=len(photos), dim=dim, producer="interest.synthetic.generate_world", seed=seed
    )
    if heldout is not None and len(heldout):
        hrng = np.random.default_rng([seed, dim, 0x4E1D])
        path = Path(out) / "ground_truth" / "heldout" / "embeddings.parquet"
        _write_embedding_rows(path, heldout, centroids, appeal_dir, mean, sd, hrng, False, chunk)


def _write_embedding_rows(path, photos, centroids, appeal_dir, mean, sd, rng, progress, chunk) -> None:
    z = ((photos["common_appeal"].to_numpy() - mean) / sd).astype(np.float32)
    unit = photos["unit"].to_numpy()
    ids = photos["photo_id"].to_numpy()
    n, dim = len(photos), centroids.shape[1]
    with atomic_path(path) as tmp:
        writer = None
        try:
            for start in progress_bar(range(0, n, chunk), desc="embeddings", unit="chunk", enabled=progress):
                stop = min(start + chunk, n)
                # uniform noise of the intended spread: several times cheaper than normal at this size
                noise = rng.random((stop - start, dim), dtype=np.float32) - np.float32(0.5)
                noise *= np.float32(0.9 * np.sqrt(12 / dim))
                emb = centroids[unit[start:stop]] + 0.35 * z[start:stop, None] * appeal_dir + noise
                table = embeddings_to_arrow(ids[start:stop], l2_normalize(emb))
                if writer is None:
                    # unique ids and random floats: dictionary pages would only cost time
                    writer = pq.ParquetWriter(tmp, table.schema, use_dictionary=False)
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()


# ---------------------------------------------------------------- helpers


def _nsids(n: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct Flickr-style NSIDs such as ``12345678@N03``."""
    numbers = rng.choice(90_000_000, n, replace=False) + 10_000_000
    suffix = rng.choice(np.array(["@N00", "@N02", "@N03", "@N04", "@N05", "@N07", "@N08"], dtype=object), n)
    return numbers.astype(str).astype(object) + suffix


def _normalise(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=float)
    return w / w.sum()
