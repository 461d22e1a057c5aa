"""``/readyz`` with details: BentoML's readiness probe answers 200 or 503 with nothing an
operator can read; when the scorer is ready, this middleware makes the body say which
model version it serves and how old each view's online features are."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from fraudops.http_guard import Receive, Scope, Send

READINESS_PATH = "/readyz"
# What the probe shows without an API key: what /metrics already shows without one.
SHOWN = ("model_version", "feature_freshness_seconds", "degraded")


class ReadinessDetails:
    """On a 200 from ``/readyz`` (which BentoML sends as one body message), the body
    becomes ``{"ready": true, "model_version", "feature_freshness_seconds", "degraded"}``
    from ``details()`` (run in a thread: it asks the feature registry). Any other answer,
    and every other path, passes through as is; so does a 200 if ``details`` returns None
    (no scorer in this process yet) or fails."""

    def __init__(self, app: Any, details: Callable[[], dict[str, Any] | None]):
        self.app = app
        self.details = details

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != READINESS_PATH:
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {}

        async def detailed_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                held.update(message)  # the headers depend on the body: sent with it
                return
            if held and message["type"] == "http.response.body":
                start, body = dict(held), await self._body()
                held.clear()
                if body is None:
                    await send(start)
                    await send(message)
                    return
                headers = [(k, v) for k, v in start.get("headers", [])
                           if k.lower() not in (b"content-length", b"content-type")]  # fmt: skip
                headers += [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]  # fmt: skip
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, detailed_send)

    async def _body(self) -> bytes | None:
        try:
            details = await asyncio.to_thread(self.details)
        except Exception:  # the probe answers as BentoML decided, details or not
            return None
        if details is None:
            return None
        return json.dumps({"ready": True, **{k: details[k] for k in SHOWN}}).encode()
