"""The FastAPI app over one model bundle: its routes, error answers and OpenAPI schema."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool

import interest
from interest import __version__
from interest.apps.service.batcher import Batcher, score_rows
from interest.apps.service.body_limit import BodyLimit
from interest.apps.service.embeddings import json_body, parse_embeddings_request
from interest.apps.service.schemas import (
    EmbeddingsRequest,
    HealthResponse,
    Limits,
    ModelCard,
    PersonalizeResponse,
    ReadyResponse,
    ScoreResponse,
    ScoreResult,
    check_user_id,
)
from interest.apps.service.state import State
from interest.apps.service.uploads import ImageRejected, check_batch, decode_uploads
from interest.core.errors import InterestError
from interest.core.numeric import l2_normalize
from interest.core.vocabulary import TREND_GROUPS


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
    limits = limits or Limits()
    model_path = Path(model_path)
    model = interest.load(model_path, **(backbone or {}))
    if warm_up:
        model.score([Image.new("RGB", (64, 64), (128, 128, 128))], progress=False)

    state = State(model=model, model_path=model_path, limits=limits)
    app = FastAPI(
        title="interest scoring service",
        summary="Common and personal interestingness of images, from a model trained on Flickr favourites.",
        version=__version__,
    )
    app.state.interest = state
    _add_error_answers(app, model_path)
    _add_status_routes(app, state)
    _add_score_route(app, state, Batcher(state))
    _add_embeddings_schema(app)
    _add_personalize_route(app, state)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    return app


def _add_error_answers(app: FastAPI, model_path: Path) -> None:
    """A user's mistake is a one-line 400 (or the upload's status), with the bundle named by its folder only."""
    # the bundle's place on this disk stays here: an error names it by its folder's name
    local = sorted({str(model_path), str(model_path.absolute()), str(model_path.resolve())}, key=len, reverse=True)

    def public(message: str) -> str:
        for path in local:
            message = message.replace(path, model_path.name)
        return message

    @app.exception_handler(InterestError)
    async def _interest_error(request: Request, exc: InterestError) -> JSONResponse:
        return JSONResponse({"detail": public(str(exc))}, status_code=400)

    @app.exception_handler(ImageRejected)
    async def _image_rejected(request: Request, exc: ImageRejected) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)


def _add_status_routes(app: FastAPI, state: State) -> None:
    """``GET /health``, ``/ready`` and ``/model``."""
    limits = state.limits

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


def _add_score_route(app: FastAPI, state: State, batcher: Batcher) -> None:
    """``POST /score``: multipart uploads (micro-batched) or a JSON body of embeddings."""
    limits = state.limits

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
            check_batch(files, limits)
            if user is not None:
                check_user_id(user)
            images, errors = await decode_uploads(files, limits)
        results = iter(await batcher.submit(images, user))
        out = []
        for upload, image_error in zip(files, errors):
            out.append(ScoreResult(filename=upload.filename, error=image_error) if image_error is not None
                       else ScoreResult(filename=upload.filename, **next(results)))
        return ScoreResponse(backbone_id=state.model.backbone_id, user=user, results=out)


def _add_embeddings_schema(app: FastAPI) -> None:
    """The JSON body's schema is referenced from /score's openapi_extra: register it with the app's schema."""
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


def _add_personalize_route(app: FastAPI, state: State) -> None:
    """``POST /users/{user}/personalize``: fit a user's head from uploads and save it into the bundle."""
    limits = state.limits

    @app.post("/users/{user}/personalize", summary="Fit (or replace) a user's head from liked and disliked images; kept across restarts.",
              response_model=PersonalizeResponse)
    async def personalize(
        user: str,
        liked: list[UploadFile] = File(..., description="Images the user likes."),
        disliked: list[UploadFile] = File([], description="Images the user does not like (optional)."),
    ) -> dict:
        check_user_id(user)
        check_batch([*liked, *disliked], limits)
        liked_images, liked_errors = await decode_uploads(liked, limits)
        disliked_images, disliked_errors = await decode_uploads(disliked, limits)
        if not liked_images:
            raise HTTPException(422, "none of the liked images could be read; upload at least one readable image")
        await state.call(state.personalize, user, liked_images, disliked_images or None)
        errors = [
            {"filename": u.filename, "error": e}
            for u, e in [*zip(liked, liked_errors), *zip(disliked, disliked_errors)]
            if e is not None
        ]
        return {"user": user, "liked": len(liked_images), "disliked": len(disliked_images), "errors": errors}


async def _score_json(request: Request, state: State) -> ScoreResponse:
    """``POST /score`` with a JSON :class:`EmbeddingsRequest`: scored directly (no backbone, no batching)."""
    dim = state.model.dim
    # the body is handed over, not kept here: the parser drops it once it has the JSON text
    emb, ids, norms, user = parse_embeddings_request(
        await json_body(request, state.limits.max_json_bytes(dim), state.limits.max_rows, dim), dim=dim, limits=state.limits
    )
    if user is not None:
        check_user_id(user)
    if norms is not None:
        emb = l2_normalize(emb) * norms[:, None]

    def run() -> list[dict]:
        model = state.current()
        if user is not None and user not in model.users:
            raise HTTPException(404, f"user {user}: no head in this model; POST /users/{user}/personalize first")
        return score_rows(model.score_embeddings(emb, user=user))

    rows = await state.call(run)
    ids = ids or [str(i) for i in range(len(emb))]
    results = [ScoreResult(id=i, **row) for i, row in zip(ids, rows)]
    return ScoreResponse(backbone_id=state.model.backbone_id, user=user, results=results)


def _json_ready(obj: Any) -> Any:
    """``obj`` as plain JSON values (anything else as its text)."""
    return json.loads(json.dumps(obj, default=str))
