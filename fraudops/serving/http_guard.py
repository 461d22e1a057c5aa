"""ASGI middleware for the scoring API: API keys and request size limits, before any
framework code parses the body."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
PROTECTED_PREFIXES = ("/score", "/admin")


async def _reply(
    send: Send, status: int, error: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """``Authorization: Bearer <key>`` on scoring and admin routes when a key is configured
    (constant-time comparison, the key is never logged), and a 413 for bodies above
    ``max_body_bytes`` (by Content-Length, and counted while streaming)."""

    def __init__(
        self, app: Any, api_key: Callable[[], str | None], max_body_bytes: Callable[[], int]
    ):
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = dict(scope.get("headers") or [])
        key = self.api_key()
        if key and path.startswith(PROTECTED_PREFIXES):
            given = headers.get(b"authorization", b"")
            expected = b"Bearer " + key.encode()
            if not hmac.compare_digest(given, expected):
                message = "missing or wrong API key: send 'Authorization: Bearer <key>'"
                await _reply(send, 401, message, [(b"www-authenticate", b"Bearer")])
                return
        limit = self.max_body_bytes()
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _reply(send, 413, f"request body larger than {limit} bytes")
            return
        received = 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except BodyTooLarge:
            await _reply(send, 413, f"request body larger than {limit} bytes")


class BodyTooLarge(Exception):
    pass
