"""A JSON embeddings request (:class:`~interest.apps.service.schemas.EmbeddingsRequest`) read and parsed, memory bounded first."""

from __future__ import annotations

import json

import numpy as np
from fastapi import HTTPException, Request

from interest.apps.service.schemas import Limits
from interest.core.errors import InterestError, one_line


async def json_body(request: Request, max_bytes: int, max_rows: int, dim: int) -> bytearray:
    """The request's body, refused with 413 as soon as it is known to be over ``max_bytes`` (Content-Length, or while it arrives)."""
    over = HTTPException(
        413, f"embeddings request: JSON body over the limit of {max_bytes} bytes ({max_rows} rows of {dim} numbers); "
             "send fewer rows per request"
    )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise over
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise over
    return body


def parse_embeddings_request(
    body: bytes | bytearray, *, dim: int, limits: Limits
) -> tuple[np.ndarray, list[str] | None, np.ndarray | None, str | None]:
    """An :class:`EmbeddingsRequest` body as (embeddings float32 (n, d), ids, norms, user), memory bounded first.

    Before anything is parsed, the body's commas and brackets bound how many
    values and rows it can hold: a body with more than ``limits.max_rows`` rows
    of ``dim`` numbers (plus ids and norms) can hold is refused (413) before a
    Python object is made for it, so the parse costs a small multiple of the
    body, whatever its layout (``0,0,0,...`` included). Then the rows, their
    lengths and types, the ids and the norms are checked (422); a row length
    other than ``dim`` is the model's 400.
    """
    max_rows = limits.max_rows
    values, lists = body.count(b",") + 1, body.count(b"[")
    if values > limits.max_json_values(dim) or lists > max_rows + 64:
        raise HTTPException(
            413, f"embeddings request: {values} values in {lists} lists, more than {max_rows} rows of {dim} numbers "
                 f"hold; send at most {max_rows} rows of this model's {dim} dimensions"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "embeddings request: the body is not UTF-8 JSON") from None
    del body
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise HTTPException(400, f"embeddings request: not valid JSON ({one_line(exc, 120)})") from None
    del text
    if not isinstance(data, dict):
        raise HTTPException(422, "embeddings request: the body must be a JSON object with `embeddings`")
    rows = data.get("embeddings")
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise HTTPException(422, "embeddings request: embeddings: give a list of rows, each a list of numbers")
    n = len(rows)
    if n == 0 or n > max_rows:
        raise HTTPException(422, f"embeddings request: give 1 to {max_rows} rows, not {n}")
    if len({len(row) for row in rows}) != 1:
        raise HTTPException(422, "embeddings request: rows of different lengths")
    emb = _numbers(rows, "embeddings", 2)
    del rows, data["embeddings"]
    ids, norms, user = data.get("ids"), data.get("norms"), data.get("user")
    for name, given in (("ids", ids), ("norms", norms)):
        if given is None:
            continue
        if not isinstance(given, list):
            raise HTTPException(422, f"embeddings request: {name}: give a list, one per row")
        if len(given) != n:
            raise HTTPException(422, f"embeddings request: {len(given)} {name} for {n} embeddings; give one per row")
    if ids is not None and not all(isinstance(i, str) for i in ids):
        raise HTTPException(422, "embeddings request: ids: give a string per row")
    if norms is not None:
        norms = _numbers(norms, "norms", 1)
        if not (np.isfinite(norms).all() and (norms > 0).all()):
            raise HTTPException(422, "embeddings request: norms must be positive numbers")
    if user is not None and not isinstance(user, str):
        raise HTTPException(422, "embeddings request: user: give a string")
    if emb.shape[1] != dim:
        raise InterestError(f"embeddings of shape {emb.shape} cannot be scored by this model: it expects (n, {dim}) "
                            "(the backbone's dimension); embed the photos with the model's backbone")
    return emb, ids, norms, user


def _numbers(values: list, name: str, ndim: int) -> np.ndarray:
    """A list (``ndim`` 1) or list of rows (2) of JSON numbers as float32; 422 for text, null or other nesting."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError, OverflowError):
        array = None
    if array is None or array.ndim != ndim or array.dtype.kind not in "fi":
        raise HTTPException(422, f"embeddings request: {name}: give numbers only"
                                 + (", in rows of equal length" if ndim == 2 else ""))
    return array.astype(np.float32)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")
