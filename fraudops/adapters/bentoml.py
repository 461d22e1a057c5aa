"""BentoML 1.4 workarounds, each to go when BentoML fixes what it works around.

- :class:`RequestTimeout` in place of BentoML's ``TimeoutMiddleware``, whose timers outlive
  their requests (``docs/upstream/bentoml-timeout.md``).
- :func:`refuse_to_start`: a worker that cannot start stops the whole server with a
  non-zero exit, where BentoML would restart it forever and exit 0 on SIGTERM.

Written against BentoML 1.4 (``bentoml._internal.server.http.traffic``); pinned by
``tests/integration/test_service.py``.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
log = logging.getLogger(__name__)


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
        body = json.dumps(
            {"error": f"Not able to process the request in {self.timeout} seconds"}
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 504, "headers": headers})
        await send({"type": "http.response.body", "body": body})


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
                "fraudops.adapters.bentoml.RequestTimeout against it"
            )
        traffic.TimeoutMiddleware = RequestTimeout  # type: ignore[assignment,misc]


def _refusal_path(server_pid: int) -> Path:
    """Where a worker that refuses to start leaves its reason for ``bentoml serve``."""
    return Path(tempfile.gettempdir()) / f"fraudops-serve-{server_pid}.refused"


def refuse_to_start(reason: str) -> None:
    """Stop the whole server, with the reason and a non-zero exit: BentoML would restart a
    worker that fails forever, never ready, and a server stopped with SIGTERM exits 0, so
    a supervisor would see success. The worker leaves the reason for ``bentoml serve``
    (its parent), which :func:`exit_if_refused` turns into an exit status."""
    server = os.getppid()
    try:
        _refusal_path(server).write_text(reason)
    except OSError as exc:  # the server still stops, with status 0
        log.error("cannot record why the scorer refused to start (%s): %s", exc, reason)
    os.kill(server, signal.SIGTERM)


def exit_if_refused() -> None:
    """At the exit of ``bentoml serve``: if a worker refused to start, print its reason on
    stderr and exit with status 1 (``os._exit``: atexit handlers cannot set the status)."""
    marker = _refusal_path(os.getpid())
    if not marker.exists():
        return
    reason = marker.read_text(errors="replace")
    marker.unlink(missing_ok=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.write(f"error: the scorer refused to start: {reason}\n")
    sys.stderr.flush()
    os._exit(1)


def exit_non_zero_when_refused() -> None:
    """Make this process (``bentoml serve``, which imports the service before it starts
    its workers) exit 1 when a worker refuses to start. A marker left under this pid by an
    earlier process is not ours (pids are reused), so it goes first."""
    _refusal_path(os.getpid()).unlink(missing_ok=True)
    atexit.register(exit_if_refused)  # acts only in the process a worker named as refused
