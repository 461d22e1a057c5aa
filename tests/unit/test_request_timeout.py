"""The request timeout that replaces BentoML's (fraudops.adapters.bentoml.RequestTimeout): the
same 504 after the timeout, its timer cancelled once the answer starts, one answer per
request whatever the timing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from fraudops.adapters.bentoml import RequestTimeout, use_request_timeout

HTTP = {"type": "http", "path": "/score", "headers": []}
START_200 = {"type": "http.response.start", "status": 200, "headers": []}
BODY = {"type": "http.response.body", "body": b"ok"}
App = Callable[[Any, Any, Any], Awaitable[None]]


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class Run:
    """One request through the middleware on a fresh event loop: what was sent, the timers
    it scheduled, and whether the app was cancelled."""

    def __init__(self, app: App, timeout: float, scope: dict[str, Any] = HTTP):
        self.sent: list[dict[str, Any]] = []
        self.timers: list[asyncio.TimerHandle] = []
        self.app_cancelled = False
        self.middleware = RequestTimeout(self._watched(app), timeout=timeout)
        self.scope = scope

    def _watched(self, app: App) -> App:
        async def watched(scope: Any, receive: Any, send: Any) -> None:
            try:
                await app(scope, receive, send)
            except asyncio.CancelledError:
                self.app_cancelled = True
                raise

        return watched

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    async def call(self, within: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        call_later = loop.call_later

        def recorded(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            self.timers.append(call_later(*args, **kwargs))
            return self.timers[-1]

        loop.call_later = recorded  # type: ignore[method-assign,assignment]
        try:
            request = self.middleware(self.scope, _receive, self.send)
            await (request if within is None else asyncio.wait_for(request, within))
        finally:
            loop.call_later = call_later  # type: ignore[method-assign,assignment]
            for _ in range(3):  # let a cancelled app see its cancellation
                await asyncio.sleep(0)

    def run(self) -> Run:
        asyncio.run(self.call())
        return self


def answers_after(delay: float) -> App:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(delay)
        await send(START_200)
        await send(BODY)

    return app


def stalls_loop_then(action: Callable[[Any], Awaitable[None]]) -> App:
    """An app due to wake at 40 ms while something blocks the event loop from 1 to 101 ms
    (a long batch, a GC pass): its wake-up and the 50 ms timeout fall due in the same turn
    of the loop, so the timer fires before the app's next step runs, and that step runs
    before the middleware hears of the timeout."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        asyncio.get_running_loop().call_later(0.001, time.sleep, 0.1)
        await asyncio.sleep(0.04)
        await action(send)

    return app


def test_answer_in_time_cancels_its_timer() -> None:
    run = Run(answers_after(0.0), timeout=30).run()
    assert run.sent == [START_200, BODY]
    assert len(run.timers) == 1 and run.timers[0].cancelled()  # not left alive for 30 s


def test_slow_answer_gets_a_504_and_the_app_is_cancelled() -> None:
    run = Run(answers_after(5.0), timeout=0.05).run()
    assert run.sent[0]["status"] == 504
    assert (b"content-length", b"%d" % len(run.sent[1]["body"])) in run.sent[0]["headers"]
    assert json.loads(run.sent[1]["body"]) == {
        "error": "Not able to process the request in 0.05 seconds"
    }
    assert len(run.sent) == 2 and run.app_cancelled


def test_app_failing_before_answering_fails_at_once() -> None:
    async def fails(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("broken before answering")

    run = Run(fails, timeout=30)
    with pytest.raises(ValueError, match="broken before answering"):
        asyncio.run(run.call(within=2.0))  # not after the 30 s timeout


def test_app_failing_as_the_timer_fires_keeps_its_error() -> None:
    async def fail(send: Any) -> None:
        raise ValueError("broken as the timer fired")

    run = Run(stalls_loop_then(fail), timeout=0.05)
    with pytest.raises(ValueError, match="broken as the timer fired"):
        asyncio.run(run.call())
    assert run.sent == []


def test_app_answering_after_the_timer_fired_cannot_send_a_second_start() -> None:
    async def answer(send: Any) -> None:
        await send(START_200)
        await asyncio.sleep(0)  # the answer is not sent in one step
        await send(BODY)

    run = Run(stalls_loop_then(answer), timeout=0.05).run()
    starts = [m for m in run.sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [504]
    assert run.app_cancelled


def test_cancelled_request_cancels_the_app() -> None:
    run = Run(answers_after(5.0), timeout=30)

    async def cancel_soon() -> None:
        request = asyncio.ensure_future(run.call())
        await asyncio.sleep(0.01)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        # here, not after asyncio.run, which cancels whatever tasks are left
        assert run.app_cancelled and run.sent == []

    asyncio.run(cancel_soon())


def test_websocket_that_times_out_is_closed() -> None:
    run = Run(answers_after(5.0), timeout=0.05, scope={"type": "websocket", "path": "/ws"})
    run.run()
    assert run.sent == [{"type": "websocket.close", "code": 1011}]


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
