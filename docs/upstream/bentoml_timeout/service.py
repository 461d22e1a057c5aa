"""A minimal BentoML service for the request-timer reproduction (docs/upstream/bentoml-timeout.md).

One async endpoint that answers at once, and ``/heap``: what the worker's heap holds and
what its garbage collector has cost. ``REPRO_CANCEL_TIMER=1`` swaps in BentoML's own
``TimeoutMiddleware`` with the one-line fix (cancel the timer once the answer started),
so both runs serve the same code otherwise. Nothing else from FraudOps::

    bentoml serve service:Echo --port 3377        # from this directory

``repro.py`` starts it, loads it and reads ``/heap``.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import os
import resource
import time
from typing import Any

import bentoml

TIMEOUT_S = 30  # FraudOps' traffic.timeout; BentoML's default is 60


def _cancel_timer_fix() -> None:
    """BentoML 1.4's ``TimeoutMiddleware.__call__`` with its timer cancelled at the end."""
    from bentoml._internal.server.http import traffic

    upstream = traffic.TimeoutMiddleware

    class CancellingTimeoutMiddleware(upstream):  # type: ignore[misc, valid-type]
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] not in ("http", "websocket"):
                return await self.app(scope, receive, send)
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            timer = loop.call_later(self.timeout, self._set_timer_out, waiter)  # kept

            async def _send(message: Any) -> None:
                if not waiter.done():
                    waiter.set_result(None)
                await send(message)

            fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
            try:
                await waiter
            except TimeoutError:
                if fut.cancel():
                    from starlette.responses import JSONResponse

                    message = f"Not able to process the request in {self.timeout} seconds"
                    await JSONResponse({"error": message}, status_code=504)(scope, receive, send)
            else:
                await fut
            finally:
                timer.cancel()  # the fix: the only line BentoML lacks

    traffic.TimeoutMiddleware = CancellingTimeoutMiddleware


if os.environ.get("REPRO_CANCEL_TIMER") == "1":
    _cancel_timer_fix()  # before BentoML builds the app, which looks the class up then

_PAUSES: dict[int, list[float]] = {0: [], 1: [], 2: []}
_started: list[float] = []


def _time_collections(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _started.append(time.perf_counter())
    elif _started:
        _PAUSES[info["generation"]].append(time.perf_counter() - _started.pop())


@bentoml.service(traffic={"timeout": TIMEOUT_S}, workers=1)
class Echo:
    def __init__(self) -> None:
        gc.callbacks.append(_time_collections)

    @bentoml.api
    async def echo(self, x: int) -> int:
        return x

    @bentoml.api(route="/heap")
    async def heap(self, reset: bool = False) -> dict[str, Any]:
        """Live objects by type (of those the timer keeps), the collector's passes since
        the last reset (count, max and total ms per generation), and the worker's RSS."""
        wanted = {"TimerHandle", "Future", "Context", "method", "Span", "_Span"}
        counts = collections.Counter(
            type(o).__name__ for o in gc.get_objects() if type(o).__name__ in wanted
        )
        with open("/proc/self/statm") as statm:
            rss_mb = int(statm.read().split()[1]) * resource.getpagesize() / 2**20
        pauses = {
            f"gen{g}": {
                "passes": len(p),
                "max_ms": round(max(p, default=0.0) * 1e3, 2),
                "total_ms": round(sum(p) * 1e3, 1),
            }
            for g, p in _PAUSES.items()
        }
        if reset:
            for p in _PAUSES.values():
                p.clear()
        return {
            "loop": type(asyncio.get_running_loop()).__module__,
            "objects": dict(sorted(counts.items())),
            "gc": pauses,
            "rss_mb": round(rss_mb, 1),
        }
