"""The family of synthetic worlds that defaults and benchmarks are judged on.

One world is one guess at what Flickr looks like; a default chosen on it may
only fit that guess. The family crosses four structures with two seeds (eight
worlds): today's default world (``flat``), and three that add what real
Flickr has (see :class:`~interest.synthetic.world.WorldStructure`):

* ``hierarchical`` — four sub-topics per topic with very different appeal,
  crawl-like sampling (the collection holds only favourited photos, most of
  them favourited by one or two collected users);
* ``communities`` — as above, plus eight communities of users sharing two niche
  sub-topics each and heavier-tailed activity;
* ``confounded`` — all of it, plus favourites that follow the owner's
  popularity (exposure) and more heavy users.

Every world is small (300 users, about 3,000 photos, 64-d embeddings written
directly), so the whole family labels, trains and evaluates in a few minutes
on two cores.

Personal taste (user heads) is judged on four more worlds, :data:`TASTE_WORLDS`
(``taste-dense`` and ``taste-crawl``, seeds 0 and 1: 800-1,000 users, 256-d and
512-d, communities sharing one to three niche sub-topics, users whose weight on
common appeal differs five-fold, heavy-tailed activity), and reported apart on
two worlds no default was chosen on, :data:`ASIDE_WORLDS`. Its truth (``ground_truth/``, never read by the pipeline) holds
each photo's true commonality, each user's taste, and 1,000 held-out photos
the collection never held, with embeddings::

    from interest.synthetic.family import FAMILY, make_family_world, heldout_photos
    for name in FAMILY:
        make_family_world(name, f"worlds/{name}")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from interest.core.errors import InterestError
from interest.synthetic.world import ALPHA, WorldStructure, generate_world

EMBED_DIM = 64
SEEDS = (0, 1)

_CRAWL = dict(crawl_pool=3.0, faves_per_photo=1.5)
STRUCTURES: dict[str, WorldStructure] = {
    "flat": WorldStructure(),
    "hierarchical": WorldStructure(subtopics=4, subtopic_spread=1.0, **_CRAWL),
    "communities": WorldStructure(
        subtopics=3, subtopic_spread=0.8, communities=8, community_share=0.6, activity_sigma=1.0, **_CRAWL
    ),
    "confounded": WorldStructure(
        subtopics=4,
        subtopic_spread=1.0,
        communities=6,
        community_share=0.5,
        exposure=0.6,
        activity_sigma=1.1,
        heavy_share=0.05,
        **_CRAWL,
    ),
}


@dataclass(frozen=True)
class FamilyWorld:
    """One member of the family: a structure, a seed and the world's size."""

    name: str
    structure: str
    seed: int
    options: dict = field(default_factory=dict)

    def generate_kwargs(self) -> dict:
        """The keyword arguments of :func:`~interest.synthetic.world.generate_world` for this world."""
        return {
            "n_users": 300,
            "n_photos": 3000,
            "n_topics": 24,
            "render": False,
            "embed_dim": EMBED_DIM,
            "seed": self.seed,
            "structure": STRUCTURES[self.structure],
            **self.options,
        }


# Worlds for personal taste (user heads), larger and built where real Flickr differs from the eight above:
# communities of many users sharing one to three niche sub-topics, users whose weight on common appeal
# differs five-fold, heavy-tailed activity (a handful to over a thousand favourites), 256-d and 512-d
# embeddings, dense and crawl-like (favourited-only) collections.
_TASTE = dict(
    subtopics=3, subtopic_spread=0.8, communities=12, community_niches=1, community_niches_max=3,
    community_share=0.7, common_sensitivity=5.0, activity_sigma=1.2, heavy_share=0.05,
)
STRUCTURES.update({
    "taste-dense": WorldStructure(**_TASTE, faves_per_photo=4.0),
    "taste-crawl": WorldStructure(**_TASTE, crawl_pool=3.0, faves_per_photo=2.0),
    # set aside: no default was chosen on these (other parameters too: more communities, exposure, 4 sub-topics)
    "aside-dense": WorldStructure(
        subtopics=4, subtopic_spread=1.0, communities=20, community_niches=1, community_niches_max=3,
        community_share=0.5, common_sensitivity=5.0, activity_sigma=1.3, heavy_share=0.04, faves_per_photo=3.0,
        exposure=0.3,
    ),
    "aside-crawl": WorldStructure(
        subtopics=2, subtopic_spread=1.2, communities=8, community_niches=2, community_niches_max=3,
        community_share=0.6, common_sensitivity=5.0, activity_sigma=1.0, heavy_share=0.05, crawl_pool=4.0,
        faves_per_photo=2.0,
    ),
})
_DENSE_SIZE = {"n_users": 800, "n_photos": 8000, "embed_dim": 256}
_CRAWL_SIZE = {"n_users": 1000, "n_photos": 6000, "embed_dim": 512}

WORLDS: dict[str, FamilyWorld] = {
    f"{structure}-s{seed}": FamilyWorld(f"{structure}-s{seed}", structure, seed)
    for structure in ("flat", "hierarchical", "communities", "confounded")
    for seed in SEEDS
}
FAMILY: list[str] = list(WORLDS)
WORLDS.update({
    f"taste-{kind}-s{seed}": FamilyWorld(f"taste-{kind}-s{seed}", f"taste-{kind}", seed, size)
    for kind, size in (("dense", _DENSE_SIZE), ("crawl", _CRAWL_SIZE))
    for seed in SEEDS
})
# the personal-taste worlds the heads' defaults were chosen on
TASTE_WORLDS: list[str] = [name for name in WORLDS if name.startswith("taste-")]
WORLDS.update({
    "aside-dense-s7": FamilyWorld("aside-dense-s7", "aside-dense", 7, {"n_users": 600, "n_photos": 6000, "embed_dim": 512}),
    "aside-crawl-s8": FamilyWorld("aside-crawl-s8", "aside-crawl", 8, {"n_users": 1200, "n_photos": 6000, "embed_dim": 256}),
})
# worlds kept aside: no default was chosen on them, their figures are reported apart
ASIDE_WORLDS: list[str] = [name for name in WORLDS if name.startswith("aside-")]


def make_family_world(name: str, out: str | os.PathLike, *, progress: bool = False, **overrides) -> dict:
    """Generate family world ``name`` (one of :data:`WORLDS`) into ``out``; returns generate_world's summary.

    ``overrides`` replace generate_world arguments (e.g. ``n_photos=600`` for a
    smaller world of the same structure in a test).
    """
    if name not in WORLDS:
        raise InterestError(f"family world {name!r}: choose one of {', '.join(WORLDS)}")
    kwargs = {**WORLDS[name].generate_kwargs(), **overrides}
    return generate_world(out, progress=progress, **kwargs)


def heldout_photos(root: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray]:
    """The held-out photos of a synthetic world: (photos table with truth, embeddings in the same row order).

    The table has the contract's photo columns plus ``true_commonality``,
    ``common_appeal``, ``unit``, ...; the embeddings are float32 (n, dim).
    """
    from interest.core.collection import read_parquet_checked

    gt = Path(root) / "ground_truth" / "heldout"
    photos = read_parquet_checked(gt / "photos.parquet", required=["photo_id", "true_commonality"])
    emb_file = gt / "embeddings.parquet"
    if not emb_file.is_file():
        raise InterestError(f"{emb_file}: no held-out embeddings; generate the world with embed_dim set")
    table = pd.read_parquet(emb_file)
    index = pd.Index(table["photo_id"].astype(str)).get_indexer(photos["photo_id"].astype(str))
    emb = np.stack(table["embedding"].to_numpy())[index].astype(np.float32)
    return photos, emb


def oracle_scores(root: str | os.PathLike, user_ids: np.ndarray, truth_photos: pd.DataFrame) -> np.ndarray:
    """The true log-odds of each user favouriting each photo: (users, photos).

    ``w_u * ALPHA * common_appeal + beta_u * taste_u[unit] + exposure * owner_popularity`` (``w_u`` the
    user's weight on common appeal, 1 in worlds that do not vary it),
    what the generator sampled by; the ceiling a model of taste can reach.
    ``truth_photos`` needs ``common_appeal``, ``unit`` and ``owner_popularity``.
    """
    import json

    gt = Path(root) / "ground_truth"
    users = pd.read_parquet(gt / "users.parquet").set_index("user_id")
    params = json.loads((gt / "world.json").read_text())["parameters"]
    exposure = float(params.get("structure", {}).get("exposure", 0.0))
    rows = users.reindex(pd.Index(np.asarray(user_ids, dtype=str)))
    if rows["beta"].isna().any():
        missing = np.asarray(user_ids)[rows["beta"].isna().to_numpy()][0]
        raise InterestError(f"{gt / 'users.parquet'}: user {missing} has no ground truth")
    taste = np.stack(rows["taste"].to_numpy())
    unit = truth_photos["unit"].to_numpy()
    appeal = ALPHA * truth_photos["common_appeal"].to_numpy()
    weight = rows["common_weight"].to_numpy() if "common_weight" in rows else np.ones(len(rows))
    exposed = exposure * truth_photos["owner_popularity"].to_numpy()
    return weight[:, None] * appeal[None, :] + exposed[None, :] + rows["beta"].to_numpy()[:, None] * taste[:, unit]
