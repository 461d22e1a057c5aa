"""/readyz details (fraudops.serving.readiness) around a fake ASGI app: the real probe is read from
`bentoml serve` in tests/integration/test_service.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fraudops.serving.readiness import ReadinessDetails

STATUS = {
    "model_name": "fraud-detector",
    "model_version": "7",
    "degraded": False,
    "feature_freshness_seconds": {"terminal_daily": 12.5},
    "prediction_log_backlog": 3,
}


def plain_app(status: int, body: bytes = b"\n"):  # BentoML's /readyz: plain text
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def call(app: Any, path: str = "/readyz") -> tuple[dict, bytes]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    asyncio.run(app({"type": "http", "path": path, "method": "GET"}, receive, send))
    start, body = sent
    return start, body["body"]


def test_a_ready_probe_says_which_model_and_how_fresh_the_features_are() -> None:
    start, body = call(ReadinessDetails(plain_app(200), details=lambda: STATUS))
    assert start["status"] == 200
    assert json.loads(body) == {
        "ready": True,
        "model_version": "7",
        "degraded": False,
        "feature_freshness_seconds": {"terminal_daily": 12.5},
    }
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(body)).encode()
    assert b"prediction_log_backlog" not in body  # only what /metrics shows without a key


def test_stale_features_make_the_probe_fail_and_name_the_view() -> None:
    from fraudops.serving.readiness import serving_on_stale_features

    why = {"terminal_daily": "terminal_daily: newest row ... 72.0 h old"}
    stale = {**STATUS, "feature_age_seconds": {"terminal_daily": 259200.0}, "stale_views": why}
    start, body = call(ReadinessDetails(plain_app(200), details=lambda: stale))
    assert start["status"] == 503
    answer = json.loads(body)
    assert answer["ready"] is False and set(answer["stale_views"]) == {"terminal_daily"}
    assert answer["feature_age_seconds"] == {"terminal_daily": 259200.0}
    assert serving_on_stale_features(503, body)  # up and scoring, on stale features
    assert not serving_on_stale_features(503, b"not ready")
    fresh = {**STATUS, "feature_age_seconds": {"terminal_daily": 60.0}, "stale_views": {}}
    start, body = call(ReadinessDetails(plain_app(200), details=lambda: fresh))
    assert start["status"] == 200 and json.loads(body)["stale_views"] == {}


def test_not_ready_other_paths_and_failing_details_pass_through() -> None:
    start, body = call(ReadinessDetails(plain_app(503, b"not ready"), details=lambda: STATUS))
    assert (start["status"], body) == (503, b"not ready")
    start, body = call(ReadinessDetails(plain_app(200, b"ok"), details=lambda: STATUS), "/healthz")
    assert (start["status"], body) == (200, b"ok")
    start, body = call(ReadinessDetails(plain_app(200), details=lambda: None))
    assert (start["status"], body) == (200, b"\n")

    def broken() -> dict:
        raise RuntimeError("registry unreachable")

    start, body = call(ReadinessDetails(plain_app(200), details=broken))
    assert (start["status"], body) == (200, b"\n")
    assert dict(start["headers"])[b"content-length"] == b"1"


def test_freshness_says_which_views_were_never_materialized() -> None:
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    from fraudops.serving.scoring import feature_freshness

    now = datetime(2026, 12, 5, 12, tzinfo=UTC)
    views = [
        SimpleNamespace(
            name="terminal_daily",
            online=True,
            materialization_intervals=[
                (now - timedelta(days=2), now - timedelta(hours=1)),
                (now - timedelta(hours=1), now - timedelta(seconds=30)),
            ],
        ),
        SimpleNamespace(name="customer_state", online=True, materialization_intervals=[]),
        SimpleNamespace(name="offline_only", online=False, materialization_intervals=[]),
    ]
    assert feature_freshness(views, now) == {"terminal_daily": 30.0, "customer_state": None}
