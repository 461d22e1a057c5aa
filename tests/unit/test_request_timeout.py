"""The request timeout that replaces BentoML's (fraudops.http_guard.RequestTimeout): the
same 504 after the timeout, its timer cancelled once the response starts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from fraudops.http_guard import RequestTimeout, use_request_timeout

SCOPE = {"type": "http", "path": "/score", "headers": []}


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def _app(delay: float, fail: bool = False) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(delay)
        if fail:
            raise ValueError("broken before answering")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def _call(middleware: RequestTimeout) -> tuple[list[dict[str, Any]], list[asyncio.TimerHandle]]:
    """Run one request; return what was sent and the timers the request scheduled."""
    sent: list[dict[str, Any]] = []
    timers: list[asyncio.TimerHandle] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        call_later = loop.call_later

        def recorded(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            timers.append(call_later(*args, **kwargs))
            return timers[-1]

        loop.call_later = recorded  # type: ignore[method-assign]
        await middleware(SCOPE, _receive, send)

    asyncio.run(main())
    return sent, timers


def test_answer_in_time_cancels_its_timer() -> None:
    sent, timers = _call(RequestTimeout(_app(0.0), timeout=30))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200
    assert len(timers) == 1 and timers[0].cancelled()  # not left alive for 30 s


def test_slow_answer_gets_a_504_and_is_cancelled() -> None:
    sent, _ = _call(RequestTimeout(_app(5.0), timeout=0.05))
    assert sent[0]["status"] == 504
    assert json.loads(sent[1]["body"]) == {"error": "not able to process the request in 0.05 s"}
    assert len(sent) == 2  # the slow app never got to answer


def test_app_failing_before_answering_fails_at_once() -> None:
    loop_time: list[float] = []

    async def timed() -> None:
        started = asyncio.get_running_loop().time()
        with pytest.raises(ValueError, match="broken before answering"):
            await RequestTimeout(_app(0.0, fail=True), timeout=30)(SCOPE, _receive, _noop_send)
        loop_time.append(asyncio.get_running_loop().time() - started)

    asyncio.run(timed())
    assert loop_time[0] < 5  # not after the 30 s timeout


async def _noop_send(message: dict[str, Any]) -> None:
    return None


def test_bentoml_builds_its_apps_with_it() -> None:
    from bentoml._internal.server.http import traffic

    original = traffic.TimeoutMiddleware
    try:
        use_request_timeout()
        assert traffic.TimeoutMiddleware is RequestTimeout
        use_request_timeout()  # twice is harmless
        assert traffic.TimeoutMiddleware is RequestTimeout
    finally:
        traffic.TimeoutMiddleware = original  # type: ignore[misc]
