"""The ASGI middleware that refuses a request body over the service's limit (413) before it is spooled."""

from __future__ import annotations

import json
from typing import Any


class BodyLimit:
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
            await too_large(send, self.max_bytes)
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
                    raise BodyTooLarge
            return message

        async def guarded_send(message: dict) -> None:
            # The framework turns our exception into some error response while
            # parsing the form; once the body was refused, answer 413 instead.
            nonlocal answered
            if refused:
                if not answered:
                    answered = True
                    await too_large(send, self.max_bytes)
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            if not answered:
                answered = True
                await too_large(send, self.max_bytes)


class BodyTooLarge(Exception):
    """Raised into the app once the body passed the limit; the middleware answers 413 instead."""


async def too_large(send: Any, max_bytes: int) -> None:
    """Answer 413 with a one-line JSON detail."""
    body = json.dumps({"detail": f"request body over the service's limit of {max_bytes} bytes; send fewer or smaller images"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
