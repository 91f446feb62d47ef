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

One job per module: :mod:`.schemas` (the API's types and :class:`Limits`),
:mod:`.body_limit` (the ASGI middleware bounding a request body),
:mod:`.uploads` (image uploads decoded), :mod:`.embeddings` (a JSON
embeddings request parsed), :mod:`.state` (the loaded model, reloaded when the
bundle changes, and personalisation), :mod:`.batcher` (micro-batching),
:mod:`.app` (the FastAPI app and its routes) and :mod:`.server` (launch).
"""

from interest.core.errors import require

require("fastapi", "serve", "the scoring service")

from interest.apps.service.app import create_app  # noqa: E402
from interest.apps.service.embeddings import parse_embeddings_request  # noqa: E402
from interest.apps.service.schemas import Limits  # noqa: E402
from interest.apps.service.server import app_from_env, background_server, serve  # noqa: E402
from interest.apps.service.uploads import decode_upload  # noqa: E402

__all__ = ["Limits", "app_from_env", "background_server", "create_app", "decode_upload", "parse_embeddings_request", "serve"]
