"""``/readyz`` with details: BentoML's readiness probe answers 200 or 503 with nothing an
operator can read; when the scorer is ready, this middleware makes the body say which
model version it serves and how old each view's online features are. When a batch view's
newest row in the online store is past its freshness budget (or the store holds none),
the probe answers 503 and names the view (``stale_views``): the scorer still answers,
but on stale features (docs/nightly-job.md)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from fraudops.serving.http_guard import Receive, Scope, Send

READINESS_PATH = "/readyz"
# What the probe shows without an API key: what /metrics already shows without one.
SHOWN = ("model_version", "feature_freshness_seconds", "degraded")
FRESHNESS = ("feature_age_seconds", "stale_views")  # shown when details have them


def serving_on_stale_features(status: int, body: bytes) -> bool:
    """A 503 from ``/readyz`` that only says features are stale: the scorer is up and
    scoring (what a test harness or a replay of history waits for)."""
    if status != 503:
        return False
    try:
        return bool(json.loads(body).get("stale_views"))
    except (ValueError, AttributeError):
        return False


class ReadinessDetails:
    """On a 200 from ``/readyz`` (which BentoML sends as one body message), the body
    becomes ``{"ready": true, "model_version", "feature_freshness_seconds", "degraded",
    "feature_age_seconds", "stale_views"}`` from ``details()`` (run in a thread: it asks
    the feature registry and the online store); a 503 with ``"ready": false`` when
    ``stale_views`` names any. Any other answer,
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
                start, answer = dict(held), await self._body()
                held.clear()
                if answer is None:
                    await send(start)
                    await send(message)
                    return
                status, body = answer
                headers = [
                    (k, v)
                    for k, v in start.get("headers", [])
                    if k.lower() not in (b"content-length", b"content-type")
                ]
                headers += [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ]
                await send({**start, "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, detailed_send)

    async def _body(self) -> tuple[int, bytes] | None:
        try:
            details = await asyncio.to_thread(self.details)
        except Exception:  # the probe answers as BentoML decided, details or not
            return None
        if details is None:
            return None
        stale = details.get("stale_views") or {}
        shown = {k: details[k] for k in (*SHOWN, *FRESHNESS) if k in details}
        return (503 if stale else 200), json.dumps({"ready": not stale, **shown}).encode()
