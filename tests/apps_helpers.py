"""Shared by the photo-app tests (curate, service, ONNX): a small model that can score real image files."""

from __future__ import annotations

from pathlib import Path


def train_image_model(
    root: Path, *, backbone_id: str = "perceptual/v1", n_users: int = 40, n_photos: int = 240, n_topics: int = 6,
    clusters: int = 19, seed: int = 5,
):
    """Render a small world into ``root``, embed it with ``backbone_id``, label it, train; returns the model.

    The bundle is at ``root / "model"``; the images under ``root / "images"``. With the defaults the
    user heads are not zero (smaller worlds may give heads too weak to keep).
    """
    from interest.features.embed import embed_collection
    from interest.labels import label_collection
    from interest.models.train import train_model
    from interest.synthetic.world import generate_world

    generate_world(root, n_users=n_users, n_photos=n_photos, n_topics=n_topics, render=True, seed=seed, progress=False)
    embed_collection(root, backbone_id=backbone_id, workers=0, progress=False)
    label_collection(root, clusters=clusters, progress=False)
    return train_model(root, root / "model", progress=False)
