"""The baselines every headline figure stands beside: a seeded random score and the study's recipe done plainly."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from interest.core.collection import read_embeddings
from interest.stages.labels import partition_commonality, read_user_split


def baseline_scores(
    root: str | os.PathLike, labels: pd.DataFrame, favorites: pd.DataFrame, backbone_id: str, test_emb: np.ndarray, seed: int
) -> dict:
    """Scores no better model should lose to, for the test photos and a scorer for other embeddings.

    * ``random`` — seeded uniform scores;
    * ``study_recipe`` — the study's recipe done plainly: k-means 200 (at most
      one cluster per 10) of the definition photos, each cluster's distinct
      definition users over all of them, no merge, a ridge from the embedding
      to that CI.
    """
    from interest.stages.labels.ci import fit_clusters
    from interest.learn.linear import Ridge

    rng = np.random.default_rng([seed, 0xBA5E])
    train_ids = labels.loc[labels["set"] == "train", "photo_id"].astype(str).to_numpy()
    _, emb_ids, emb = read_embeddings(root, backbone_id)
    train_emb = emb[pd.Index(emb_ids).get_indexer(train_ids)]
    del emb
    split = read_user_split(root)
    favs = favorites
    if split is not None:
        favs = favs[~favs["user_id"].astype(str).isin(set(split.loc[split["set"] == "test", "user_id"]))]
    fav_photo = pd.Index(train_ids).get_indexer(favs["photo_id"].astype(str))
    on_train = fav_photo >= 0
    k = max(2, min(200, len(train_ids) // 10))
    cluster, _ = fit_clusters(train_emb, k, seed)
    users = pd.factorize(favs["user_id"].astype(str).to_numpy()[on_train])[0]
    c = partition_commonality(cluster, k, users, fav_photo[on_train])
    ridge = Ridge(seed=seed).fit(train_emb, c.ci_users[cluster])
    return {
        "study_recipe": {"test": ridge.predict(test_emb).astype(float), "score": ridge.predict},
        "random": {"test": rng.random(len(test_emb)), "score": lambda e: np.random.default_rng([seed, 0xBA5E, 1]).random(len(e))},
    }
