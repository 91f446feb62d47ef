"""The service's API types (the OpenAPI schema), the user id it accepts, and :class:`Limits`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel, Field

# Flickr NSIDs look like 12345678@N00; matched with fullmatch: "$" would also match before a final newline
USER_ID = re.compile(r"[A-Za-z0-9_.@-]{1,128}")
# What one number and one id of a JSON embeddings request may take (Limits.max_json_bytes)
JSON_NUMBER_BYTES = 26
JSON_ID_BYTES = 160


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the service.

    ``max_upload_bytes`` bounds each image file, ``max_pixels`` its decoded
    size (width × height, checked from the header before decoding),
    ``max_batch`` the images in one request, ``timeout_s`` the time a request
    may wait and compute, and ``max_concurrent`` how many model calls run at
    once (more only oversubscribes the cores: one call already uses them all).
    Scoring requests are micro-batched: a batch takes every request waiting,
    and waits up to ``batch_wait_s`` for more, up to ``batch_images`` images.
    ``max_rows`` bounds the precomputed embeddings of one JSON request; its
    body is bounded by :meth:`max_json_bytes`, sized from the rows and the
    model's dimension.
    """

    max_upload_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000
    max_batch: int = 32
    timeout_s: float = 60.0
    max_concurrent: int = 1
    batch_wait_s: float = 0.005
    batch_images: int = 64
    max_rows: int = 1024

    @property
    def max_body_bytes(self) -> int:
        """The largest request body accepted: a full batch plus room for the form's headers."""
        return self.max_batch * self.max_upload_bytes + 2**20

    def max_json_bytes(self, dim: int) -> int:
        """The largest JSON body accepted: ``max_rows`` rows of ``dim`` numbers, a norm and an id each, and slack.

        A number as JSON writes it takes at most about 25 bytes (``-1.2345678901234567e-05, ``).
        """
        return self.max_rows * ((dim + 1) * JSON_NUMBER_BYTES + JSON_ID_BYTES) + 2**16

    def max_json_values(self, dim: int) -> int:
        """The most JSON values (numbers, strings, lists) a JSON body of ``max_rows`` rows of ``dim`` may hold."""
        return self.max_rows * (dim + 4) + 4096


# ------------------------------------------------------------------ the API's types (the OpenAPI schema)


class ScoreResult(BaseModel):
    """One scored image (or embedding); ``error`` instead of scores when it could not be read."""

    filename: str | None = Field(None, description="The upload's file name (image requests).")
    id: str | None = Field(None, description="The embedding's id (embeddings requests).")
    ci_score: float | None = Field(None, description="Common interestingness score.")
    trend_group: int | None = Field(None, description="0 common, 1 interplay, 2 subjective (when the model has groups).")
    trend_group_name: str | None = None
    p_common: float | None = None
    p_interplay: float | None = None
    p_subjective: float | None = None
    user_score: float | None = Field(None, description="The user's personal score (with `user`).")
    deviation: float | None = Field(None, description="user_score - ci_score.")
    error: str | None = Field(None, description="Why this image was not scored.")


class ScoreResponse(BaseModel):
    backbone_id: str
    user: str | None = None
    results: list[ScoreResult]


class EmbeddingsRequest(BaseModel):
    """Precomputed embeddings of the model's backbone, one row per photo."""

    embeddings: list[list[float]] = Field(..., description="Rows of the backbone's dimension.")
    ids: list[str] | None = Field(None, description="A name per row, echoed as `id`.")
    norms: list[float] | None = Field(
        None, description="Each row's L2 norm before normalisation (the embeddings table's `norm` column), "
                          "for a model whose head reads raw features."
    )
    user: str | None = Field(None, description="A user with a head: adds user_score and deviation.")


class HealthResponse(BaseModel):
    status: str
    backbone_id: str


class ReadyResponse(BaseModel):
    ready: bool
    model_loaded: bool
    backbone_loaded: bool = Field(..., description="Whether the image backbone is in memory (image requests wait for it otherwise).")
    backbone_id: str


class PersonalizeError(BaseModel):
    filename: str | None
    error: str


class PersonalizeResponse(BaseModel):
    user: str
    liked: int
    disliked: int
    errors: list[PersonalizeError]


class ModelCard(BaseModel):
    backbone_id: str
    n_users: int
    capabilities: list[str]
    trend_groups: list[str]
    metadata: dict[str, Any]
    limits: dict[str, Any]


def check_user_id(user: str) -> None:
    """Refuse (422) a user id that is not a Flickr-like NSID or name."""
    if not USER_ID.fullmatch(user):
        raise HTTPException(422, f"user id {user!r}: use 1-128 letters, digits or _ . @ -")
