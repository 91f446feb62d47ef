"""Launching the service: with uvicorn (one or several worker processes), or in a background thread."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

from interest.apps.service.app import create_app
from interest.apps.service.schemas import Limits
from interest.core.errors import InterestError, not_a_model_bundle


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
    from interest.core.hub import is_hub_name

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
        uvicorn.run("interest.apps.service.server:app_from_env", factory=True, host=host, port=port, workers=workers, timeout_keep_alive=5)
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
