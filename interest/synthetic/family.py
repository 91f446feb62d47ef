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
on two cores. Its truth (``ground_truth/``, never read by the pipeline) holds
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

from interest.errors import InterestError
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


WORLDS: dict[str, FamilyWorld] = {
    f"{structure}-s{seed}": FamilyWorld(f"{structure}-s{seed}", structure, seed)
    for structure in STRUCTURES
    for seed in SEEDS
}
FAMILY: list[str] = list(WORLDS)


def make_family_world(name: str, out: str | os.PathLike, *, progress: bool = False, **overrides) -> dict:
    """Generate family world ``name`` (one of :data:`FAMILY`) into ``out``; returns generate_world's summary.

    ``overrides`` replace generate_world arguments (e.g. ``n_photos=600`` for a
    smaller world of the same structure in a test).
    """
    if name not in WORLDS:
        raise InterestError(f"family world {name!r}: choose one of {', '.join(FAMILY)}")
    kwargs = {**WORLDS[name].generate_kwargs(), **overrides}
    return generate_world(out, progress=progress, **kwargs)


def heldout_photos(root: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray]:
    """The held-out photos of a synthetic world: (photos table with truth, embeddings in the same row order).

    The table has the contract's photo columns plus ``true_commonality``,
    ``common_appeal``, ``unit``, ...; the embeddings are float32 (n, dim).
    """
    from interest.collection import read_parquet_checked

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

    ``ALPHA * common_appeal + beta_u * taste_u[unit] + exposure * owner_popularity``,
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
    base = ALPHA * truth_photos["common_appeal"].to_numpy() + exposure * truth_photos["owner_popularity"].to_numpy()
    return base[None, :] + rows["beta"].to_numpy()[:, None] * taste[:, unit]
