"""The HTTP scoring service: a FastAPI app over one model bundle.

Meant to sit beside a photo app on the same host (it binds to loopback by
default) or behind the app's own gateway. Endpoints:

- ``POST /score``: multipart image uploads (``files``) and an optional ``user``;
  one result per upload, with a per-image ``error`` for an unreadable image
  (never a failed batch). Or a JSON body of precomputed embeddings
  (:class:`EmbeddingsRequest`). Concurrent requests are micro-batched: the
  images of requests that arrive while the model is busy (or within
  ``Limits.batch_wait_s`` of each other) are embedded in one backbone call.
- ``POST /users/{user}/personalize``: ``liked`` (and optional ``disliked``)
  uploads fit that user's head; it is saved atomically, so it survives a
  restart.
- ``GET /health`` (liveness), ``GET /ready`` (readiness: model and backbone
  loaded; 503 until they are), ``GET /model``; OpenAPI docs at ``/docs``, every
  answer a typed model in the schema.

Nothing here reads a path sent by a client: images arrive as uploads only.
Limits (:class:`Limits`) bound the request body (a JSON body by its own,
smaller limit, sized from its rows and the model's dimension, and its values
counted before it is parsed), each upload, the decoded pixel count
(decompression bombs are rejected from the image header, before decoding),
the batch size and the time a request may take. The model, and
the backbone inside it, is loaded once per process and shared by all
requests; model work runs in a thread pool so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from interest import __version__
from interest.errors import InterestError, not_a_model_bundle, one_line, require
from interest.numeric import l2_normalize
from interest.vocabulary import TREND_GROUPS

require("fastapi", "serve", "the scoring service")
from fastapi import FastAPI, File, HTTPException, Request, UploadFile  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from PIL import Image  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402

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


class _ImageRejected(Exception):
    """An upload over a limit: the whole request is refused with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _BodyLimit:
    """ASGI middleware refusing request bodies over ``max_bytes`` with 413, before they are spooled.

    Checks Content-Length up front and counts the bytes of a chunked body as
    they arrive, so an oversize upload never fills the disk or memory.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await _too_large(send, self.max_bytes)
            return
        seen = 0
        refused = False
        answered = False

        async def counting_receive() -> dict:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: dict) -> None:
            # The framework turns our exception into some error response while
            # parsing the form; once the body was refused, answer 413 instead.
            nonlocal answered
            if refused:
                if not answered:
                    answered = True
                    await _too_large(send, self.max_bytes)
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            if not answered:
                answered = True
                await _too_large(send, self.max_bytes)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Any, max_bytes: int) -> None:
    body = json.dumps({"detail": f"request body over the service's limit of {max_bytes} bytes; send fewer or smaller images"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(
    model_path: str | os.PathLike,
    *,
    limits: Limits | None = None,
    warm_up: bool = True,
    backbone: dict | None = None,
) -> FastAPI:
    """A FastAPI app scoring images with the model bundle at ``model_path``.

    The bundle is loaded now (a missing or broken bundle fails here, not on
    the first request); with ``warm_up`` one blank image is scored so that the
    backbone is loaded before the first request arrives (``/ready`` says so).
    ``backbone`` holds :func:`interest.load`'s device, precision, cache_dir
    and weights. Personalised heads are saved back into the bundle,
    atomically, so the bundle directory must be writable for
    ``/users/{user}/personalize``.
    """
    import interest

    limits = limits or Limits()
    model_path = Path(model_path)
    model = interest.load(model_path, **(backbone or {}))
    if warm_up:
        model.score([Image.new("RGB", (64, 64), (128, 128, 128))], progress=False)

    state = _State(model=model, model_path=model_path, limits=limits)
    app = FastAPI(
        title="interest scoring service",
        summary="Common and personal interestingness of images, from a model trained on Flickr favourites.",
        version=__version__,
    )
    app.state.interest = state

    # the bundle's place on this disk stays here: an error names it by its folder's name
    local = sorted({str(model_path), str(model_path.absolute()), str(model_path.resolve())}, key=len, reverse=True)

    def public(message: str) -> str:
        for path in local:
            message = message.replace(path, model_path.name)
        return message

    @app.exception_handler(InterestError)
    async def _interest_error(request: Request, exc: InterestError) -> JSONResponse:
        return JSONResponse({"detail": public(str(exc))}, status_code=400)

    @app.exception_handler(_ImageRejected)
    async def _image_rejected(request: Request, exc: _ImageRejected) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.get("/health", summary="Liveness: the process answers.", response_model=HealthResponse)
    async def health() -> HealthResponse:
        return HealthResponse(status="ok", backbone_id=state.model.backbone_id)  # no disk access: liveness only

    @app.get("/ready", summary="Readiness: the model and its image backbone are loaded (503 until they are).",
             response_model=ReadyResponse, responses={503: {"model": ReadyResponse}})
    async def ready() -> Any:
        loaded = bool(state.model.backbone_loaded)
        answer = ReadyResponse(ready=loaded, model_loaded=True, backbone_loaded=loaded,
                               backbone_id=state.model.backbone_id)
        return answer if loaded else JSONResponse(answer.model_dump(), status_code=503)

    @app.get("/model", summary="The model card: backbone, preprocessing, users with heads, evaluation, limits.",
             response_model=ModelCard)
    async def model_card() -> ModelCard:
        from interest.bundle.io import without_local_paths

        model = await run_in_threadpool(state.current)
        meta = without_local_paths(model.metadata or {})  # older bundles hold the collection's path on the trainer's disk
        return ModelCard(
            backbone_id=model.backbone_id,
            n_users=len(model.users),
            capabilities=sorted(model.capabilities),
            trend_groups=list(TREND_GROUPS),
            metadata=_json_ready(meta),
            limits={**asdict(limits), "max_json_bytes": limits.max_json_bytes(model.dim)},
        )

    @app.post(
        "/score",
        summary="Score uploaded images (multipart `files`, optional `user`) or precomputed embeddings "
                "(a JSON EmbeddingsRequest): CI score, trend group, group probabilities; personal score with `user`.",
        response_model=ScoreResponse,
        response_model_exclude_none=True,
        openapi_extra={"requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
                "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                          "description": "Image files (JPEG, PNG, WebP, ...)."},
                "user": {"type": "string", "description": "A user with a head: adds user_score and deviation."},
            }}},
            "application/json": {"schema": {"$ref": "#/components/schemas/EmbeddingsRequest"}},
        }}},
    )
    async def score(request: Request) -> ScoreResponse:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json":
            return await _score_json(request, state)
        async with request.form(max_files=limits.max_batch + 1, max_fields=16) as form:
            files = [f for f in form.getlist("files") if hasattr(f, "read")]
            user = form.get("user")
            if not files:
                raise HTTPException(422, "no images: upload them as multipart `files`, or POST embeddings as JSON")
            if user is not None and not isinstance(user, str):
                raise HTTPException(422, "`user` must be a form field, not a file")
            _check_batch(files, limits)
            if user is not None:
                _check_user_id(user)
            images, errors = await _decode_uploads(files, limits)
        results = iter(await state.batcher.submit(images, user))
        out = []
        for upload, image_error in zip(files, errors):
            out.append(ScoreResult(filename=upload.filename, error=image_error) if image_error is not None
                       else ScoreResult(filename=upload.filename, **next(results)))
        return ScoreResponse(backbone_id=state.model.backbone_id, user=user, results=out)

    # the JSON body's schema is referenced from /score's openapi_extra: register it with the app's schema
    app.openapi_schema = None
    _openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = _openapi()
            schema.setdefault("components", {}).setdefault("schemas", {})["EmbeddingsRequest"] = \
                EmbeddingsRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.post("/users/{user}/personalize", summary="Fit (or replace) a user's head from liked and disliked images; kept across restarts.",
              response_model=PersonalizeResponse)
    async def personalize(
        user: str,
        liked: list[UploadFile] = File(..., description="Images the user likes."),
        disliked: list[UploadFile] = File([], description="Images the user does not like (optional)."),
    ) -> dict:
        _check_user_id(user)
        _check_batch([*liked, *disliked], limits)
        liked_images, liked_errors = await _decode_uploads(liked, limits)
        disliked_images, disliked_errors = await _decode_uploads(disliked, limits)
        if not liked_images:
            raise HTTPException(422, "none of the liked images could be read; upload at least one readable image")
        await state.call(state.personalize, user, liked_images, disliked_images or None)
        errors = [
            {"filename": u.filename, "error": e}
            for u, e in [*zip(liked, liked_errors), *zip(disliked, disliked_errors)]
            if e is not None
        ]
        return {"user": user, "liked": len(liked_images), "disliked": len(disliked_images), "errors": errors}

    app.add_middleware(_BodyLimit, max_bytes=limits.max_body_bytes)
    return app


class _State:
    """The loaded model and what guards it.

    The bundle on disk is the truth: when its model.json changes (another
    worker process, or `interest personalize`, saved new heads), the next
    request reloads it, keeping the backbone already in memory.

    Read your writes: once a personalisation has answered (here, in another
    worker, or through the library under the bundle's lock), every later
    request sees that head or a newer one. Hence three rules. The model is
    swapped only under ``_write``, and the bundle's stamp is read under it,
    before the reload, so a reload never installs a version older than one
    already seen. A writer holds ``_write`` from its reload to its save, so no
    reload can swap in, meanwhile, a model without the head it is adding (the
    race a soak found: a request that had read the stamp before the writer
    reloaded it swapped in the bundle as it was before the save, and the
    acknowledged head was missing until the next save). And a reload that keeps
    racing other saves is done again while holding the bundle's lock, instead
    of answering from the model we had. Lock order: the bundle's lock, then
    ``_write``.
    """

    def __init__(self, model: Any, model_path: Path, limits: Limits) -> None:
        self.model = model
        self.model_path = model_path
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.max_concurrent)
        self._write = threading.Lock()
        self._stamp = self._bundle_stamp()
        self.batcher = _Batcher(self)

    def _bundle_stamp(self) -> tuple[int, ...] | None:
        """Which version of the bundle is on disk: its directory and model.json, as stat sees them."""
        try:
            folder = os.stat(self.model_path)
            st = os.stat(self.model_path / "model.json")
        except OSError:
            return None
        # inode numbers are reused once an old version is removed: the times and size tell such twins apart
        return folder.st_ino, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size

    def current(self) -> Any:
        """The model, reloaded first if the bundle changed on disk since it was loaded.

        A bundle that fails to reload even with writers held off (damaged on
        disk) keeps the model we have.
        """
        stamp = self._bundle_stamp()
        if stamp is not None and stamp == self._stamp:
            return self.model
        with self._write:
            try:
                return self._catch_up()
            except InterestError:
                pass
        # every lock-free read raced a save (or the bundle is damaged): once more with writers held off
        from interest.bundle.storage import bundle_lock

        try:
            with bundle_lock(self.model_path), self._write:
                return self._catch_up()
        except InterestError:
            return self.model

    def _catch_up(self) -> Any:
        """Reload the bundle if its stamp differs from the model's (call with ``_write`` held)."""
        stamp = self._bundle_stamp()  # read before the load: the model loaded is this version or a newer one
        if stamp is not None and stamp == self._stamp:
            return self.model
        self.model = self.model.reloaded(self.model_path)
        self._stamp = stamp
        return self.model

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run blocking model work in the thread pool, within the request timeout (waiting included)."""

        async def run() -> Any:
            async with self._slots:
                return await run_in_threadpool(fn, *args)

        try:
            return await asyncio.wait_for(run(), self.limits.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(503, f"the request took over {self.limits.timeout_s:g} s; retry later or send fewer images") from None

    def personalize(self, user: str, liked: list, disliked: list | None) -> None:
        """Fit ``user``'s head on the newest bundle and save it, before the request answers."""
        from interest.bundle.io import editing

        # One writer at a time across threads *and* worker processes, each starting from the bundle
        # on disk as the previous writer left it (or not at all: a damaged bundle): two heads saved at
        # once must not lose either.
        def saved() -> None:
            self._stamp = self._bundle_stamp()

        try:
            with editing(self.model_path, self._catch_up, hold=self._write, saved=saved) as model:
                model.personalize(user, liked, disliked)
        except BaseException:
            self._stamp = None  # the model in memory may hold a head the disk lacks: reload it next time
            raise


class _Batcher:
    """Micro-batching of scoring requests: one backbone call embeds the images of several requests.

    One task takes the first waiting request, then every request already
    queued and, for up to ``Limits.batch_wait_s``, those that arrive, up to
    ``Limits.batch_images`` images; embeds them together in the thread pool,
    and scores each request's rows on its own (its user, its errors). A lone
    request waits only ``batch_wait_s``; under load, requests queue while the
    model is busy and the next batch takes them all.
    """

    def __init__(self, state: "_State") -> None:
        self.state = state
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    async def submit(self, images: list, user: str | None) -> list[dict]:
        """Scores of ``images`` (one dict per image), within the request timeout (waiting included)."""
        if not images:
            return []
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run())
        done = loop.create_future()
        await self._queue.put((images, user, done))
        try:
            return await asyncio.wait_for(done, self.state.limits.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(
                503, f"the request took over {self.state.limits.timeout_s:g} s; retry later or send fewer images"
            ) from None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        limits = self.state.limits
        while True:
            batch = [await self._queue.get()]
            n = len(batch[0][0])
            deadline = loop.time() + limits.batch_wait_s
            while n < limits.batch_images:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), left)
                    except asyncio.TimeoutError:
                        break
                batch.append(item)
                n += len(item[0])
            batch = [item for item in batch if not item[2].done()]  # a request that timed out is gone
            if not batch:
                continue
            try:
                answers = await run_in_threadpool(_score_batch, self.state, [(i, u) for i, u, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the batch's failure is each request's answer
                answers = [exc] * len(batch)
            for (_, _, done), answer in zip(batch, answers):
                if done.done():
                    continue
                if isinstance(answer, BaseException):
                    done.set_exception(answer)
                else:
                    done.set_result(answer)


def _score_batch(state: "_State", requests: list[tuple[list, str | None]]) -> list[Any]:
    """Embed every request's images in one call, then score each request apart: its rows, or its exception."""
    model = state.current()
    answers: list[Any] = [None] * len(requests)
    for k, (_, user) in enumerate(requests):
        if user is not None and user not in model.users:
            answers[k] = HTTPException(404, f"user {user}: no head in this model; POST /users/{user}/personalize first")
    todo = [k for k in range(len(requests)) if answers[k] is None]
    images = [image for k in todo for image in requests[k][0]]
    emb = model.embed_images(images) if images else None
    start = 0
    for k in todo:
        n = len(requests[k][0])
        try:
            answers[k] = _rows(model.score_embeddings(emb[start : start + n], user=requests[k][1]))
        except InterestError as exc:
            answers[k] = exc
        start += n
    return answers


def _rows(table: Any) -> list[dict]:
    """A score table as the API's rows (JSON values, group names added)."""
    keep = [c for c in ("ci_score", "trend_group", "p_common", "p_interplay", "p_subjective", "user_score",
                        "deviation", "error") if c in table]
    rows = []
    for record in table[keep].to_dict(orient="records"):
        row = {k: _plain(v) for k, v in record.items()}
        if row.get("error") is None:
            row.pop("error", None)
        if row.get("trend_group") is not None:
            row["trend_group_name"] = TREND_GROUPS[int(row["trend_group"])]
        rows.append(row)
    return rows


async def _score_json(request: Request, state: "_State") -> "ScoreResponse":
    """``POST /score`` with a JSON :class:`EmbeddingsRequest`: scored directly (no backbone, no batching)."""
    dim = state.model.dim
    # the body is handed over, not kept here: the parser drops it once it has the JSON text
    emb, ids, norms, user = parse_embeddings_request(
        await _json_body(request, state.limits.max_json_bytes(dim), state.limits.max_rows, dim), dim=dim, limits=state.limits
    )
    if user is not None:
        _check_user_id(user)
    if norms is not None:
        emb = l2_normalize(emb) * norms[:, None]

    def run() -> list[dict]:
        model = state.current()
        if user is not None and user not in model.users:
            raise HTTPException(404, f"user {user}: no head in this model; POST /users/{user}/personalize first")
        return _rows(model.score_embeddings(emb, user=user))

    rows = await state.call(run)
    ids = ids or [str(i) for i in range(len(emb))]
    results = [ScoreResult(id=i, **row) for i, row in zip(ids, rows)]
    return ScoreResponse(backbone_id=state.model.backbone_id, user=user, results=results)


async def _json_body(request: Request, max_bytes: int, max_rows: int, dim: int) -> bytearray:
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


async def _decode_uploads(files: list[UploadFile], limits: Limits) -> tuple[list[Image.Image], list[str | None]]:
    """Decode uploads into RGB images; a bad image gives an error string, an over-limit one refuses the request."""
    images, errors = [], []
    for upload in files:
        if upload.size is not None and upload.size > limits.max_upload_bytes:
            raise _ImageRejected(413, f"{upload.filename}: {upload.size} bytes, over the limit of {limits.max_upload_bytes} per image")
        data = await upload.read()
        if len(data) > limits.max_upload_bytes:
            raise _ImageRejected(413, f"{upload.filename}: over the limit of {limits.max_upload_bytes} bytes per image")
        try:
            images.append(await run_in_threadpool(decode_upload, data, limits.max_pixels, upload.filename or "upload"))
            errors.append(None)
        except InterestError as exc:
            errors.append(str(exc))
    return images, errors


def decode_upload(data: bytes, max_pixels: int, name: str = "upload") -> Image.Image:
    """Decode an upload as :func:`interest.features.images.decode_image` does for files.

    A decompression bomb (more than ``max_pixels`` pixels, known from the
    header before any decoding) refuses the whole request with 413; any other
    unreadable image raises BadImage, which becomes that image's error.
    """
    from interest.features.images import BadImage, decode_image

    try:
        return decode_image(data, max_pixels=max_pixels, name=name)
    except BadImage as exc:
        if exc.reason == "too_many_pixels":
            raise _ImageRejected(413, f"{name}: {exc.detail or 'too many pixels'}; downscale it first") from None
        raise


def _check_batch(files: list[UploadFile], limits: Limits) -> None:
    if len(files) > limits.max_batch:
        raise HTTPException(413, f"{len(files)} images in one request, over the limit of {limits.max_batch}; split the batch")


def _check_user_id(user: str) -> None:
    if not USER_ID.fullmatch(user):
        raise HTTPException(422, f"user id {user!r}: use 1-128 letters, digits or _ . @ -")


def _plain(value: Any) -> Any:
    """A NumPy/pandas scalar as a JSON value (NaN and NA as null)."""
    if value is None:
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(value)
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def _json_ready(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def app_from_env() -> Any:
    """The app for ``uvicorn --factory`` with several workers: model and limits from the environment.

    ``interest serve`` sets INTEREST_MODEL and INTEREST_LIMITS (JSON) before
    starting the workers; each worker process loads the model once.
    """
    path = os.environ.get("INTEREST_MODEL")
    if not path:
        raise InterestError("INTEREST_MODEL is not set; start the service with `interest serve MODEL`")
    limits = Limits(**json.loads(os.environ.get("INTEREST_LIMITS", "{}")))
    return create_app(path, limits=limits, backbone=json.loads(os.environ.get("INTEREST_BACKBONE", "{}")))


def serve(
    model_path: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    limits: Limits | None = None,
    backbone: dict | None = None,
) -> None:
    """Run the service with uvicorn until interrupted (blocking).

    ``backbone``: :func:`interest.load`'s device, precision, cache_dir and weights.
    """
    import uvicorn

    limits = limits or Limits()
    from interest.hub import is_hub_name

    if is_hub_name(str(model_path)):
        raise InterestError(
            f"{model_path}: the service saves personal heads into its bundle, and a Hub bundle is read-only; "
            "download it into a directory (`hf download ORG/NAME --local-dir DIR`) and serve that"
        )
    if not Path(model_path, "model.json").is_file():
        raise not_a_model_bundle(model_path)
    if workers > 1:
        import interest

        interest.load(model_path, **(backbone or {}))  # a broken bundle is one line here, not in every worker
        os.environ["INTEREST_MODEL"] = str(Path(model_path).resolve())
        os.environ["INTEREST_LIMITS"] = json.dumps(asdict(limits))
        os.environ["INTEREST_BACKBONE"] = json.dumps(backbone or {})
        uvicorn.run("interest.apps.service:app_from_env", factory=True, host=host, port=port, workers=workers, timeout_keep_alive=5)
    else:
        uvicorn.run(create_app(model_path, limits=limits, backbone=backbone), host=host, port=port, timeout_keep_alive=5)


@contextlib.contextmanager
def background_server(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread; yields its base URL, stops it on exit.

    ``port=0`` picks a free port. For tests, benchmarks and apps that embed
    the service in their own process.
    """
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the service failed to start")
            time.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
