"""ASGI middleware for the scoring API: API keys and request size limits, before any
framework code parses the body; and the request timeout in place of BentoML's."""

from __future__ import annotations

import asyncio
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


class RequestTimeout:
    """A 504 when a request's answer has not started within ``timeout`` seconds (BentoML's
    ``traffic.timeout``): BentoML's ``TimeoutMiddleware``, whose place it takes (see
    :func:`use_request_timeout`), with the same status and message, and these differences.

    Written against BentoML 1.4.39 (``bentoml._internal.server.http.traffic``, unchanged
    since 1.3); the leak, its reproduction and when this can go:
    ``docs/upstream/bentoml-timeout.md``.

    - The timer is cancelled once the answer starts. BentoML 1.4's never is: every
      request left a timer, a future, a context and a bound method alive for the whole
      timeout (30 s here), about 15,900 of each in the scorer's heap after 40 s of load at
      concurrency 16 (counted with ``gc.get_objects``). They outlived the young generation,
      so the collector's generation-1 passes took 15-28 ms and its full passes 144-343 ms
      (``gc.callbacks`` in the worker), stalling every request in flight.
    - One answer per request: the first of the app's answer starting (or the app ending)
      and the timer decides; an app that tries to answer after the timer fired is
      cancelled, never sends a second response start.
    - An app that fails before answering fails then, not after the timeout, and its error
      is never lost, even when it fails as the timer fires.
    - When this request is cancelled (client gone, server stopping), so is the app's task.
    - A websocket that times out is closed (1011), not sent an HTTP response.
    """

    def __init__(self, app: Any, timeout: float):
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        decided: asyncio.Future[None] = loop.create_future()  # TimeoutError: the timer won
        timer = loop.call_later(self.timeout, _expire, decided)

        def answered(_: object = None) -> None:  # the answer started, or the app ended
            if not decided.done():
                decided.set_result(None)

        async def send_in_time(message: dict[str, Any]) -> None:
            answered()
            if decided.exception() is not None:  # too late: the 504 is the answer
                raise asyncio.CancelledError
            await send(message)

        answer = asyncio.ensure_future(self.app(scope, receive, send_in_time))
        answer.add_done_callback(answered)
        try:
            await decided
        except TimeoutError:
            if answer.cancel() or answer.cancelled():
                await self._timed_out(scope, send)
                return
            await answer  # it ended as the timer fired: its own outcome, error included
            return
        except BaseException:  # this request was cancelled: the app's work goes with it
            answer.cancel()
            raise
        finally:
            timer.cancel()
        await answer

    async def _timed_out(self, scope: Scope, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1011})
            return
        await _reply(send, 504, f"Not able to process the request in {self.timeout} seconds")


def _expire(decided: asyncio.Future[None]) -> None:
    if not decided.done():
        decided.set_exception(TimeoutError())


def use_request_timeout() -> None:
    """Have BentoML build its apps with :class:`RequestTimeout` as their timeout middleware.
    BentoML's own cannot be switched off (its configuration requires a timeout above 0)
    and looks the class up in its ``traffic`` module whenever it builds an app, so this
    must run before: where the service is defined. Refuses a BentoML whose middleware is
    not built as ``TimeoutMiddleware(app, timeout=...)``, rather than guess."""
    import inspect

    from bentoml._internal.server.http import traffic

    current = traffic.TimeoutMiddleware
    if current is not RequestTimeout:
        if list(inspect.signature(current).parameters) != ["app", "timeout"]:
            raise RuntimeError(
                f"BentoML's TimeoutMiddleware{inspect.signature(current)} changed: check "
                "fraudops.http_guard.RequestTimeout against it"
            )
        traffic.TimeoutMiddleware = RequestTimeout  # type: ignore[assignment,misc]
