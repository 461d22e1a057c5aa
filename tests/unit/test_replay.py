"""The replay tool without services: file loading and filters, pacing, the HTTP client
against a mock transport (routes, batching, auth, errors, summary), and the stream's
wire format round trip."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from fraudops.core.contract import Transaction, event_fields
from fraudops.data.ingest import ValidationFailed
from fraudops.data.replay import Pacer, ReplaySummary, load_transactions, payloads, replay_http
from fraudops.serving.stream import parse_event


def transactions(n: int, start: str = "2026-05-11T10:00:00Z") -> pd.DataFrame:
    t0 = pd.Timestamp(start)
    return pd.DataFrame(
        {
            "transaction_id": [f"tx{i:04d}" for i in range(n)],
            "timestamp": [t0 + pd.Timedelta(seconds=i) for i in range(n)],
            "customer_id": [f"c{i % 7}" for i in range(n)],
            "terminal_id": [f"t{i % 11}" for i in range(n)],
            "amount": [10.0 + i for i in range(n)],
            "is_fraud": [0] * n,
            "fraud_scenario": [0] * n,
        }
    )


@pytest.fixture
def parquet(tmp_path: Path) -> Path:
    path = tmp_path / "tx.parquet"
    transactions(50).sample(frac=1, random_state=3).to_parquet(path)  # shuffled
    return path


class FakeApi:
    """A scoring API: /score and /score_batch, an API key, a 400 for one transaction."""

    def __init__(self, key: str | None = "k", reject: str | None = None, delay: float = 0.0):
        self.key, self.reject, self.delay = key, reject, delay
        self.requests: list[tuple[str, int]] = []  # (path, transactions)
        self.lock = threading.Lock()

    def score(self, tx: dict) -> dict:
        decision = "block" if tx["amount"] > 50 else "approve"
        return {
            "transaction_id": tx["transaction_id"],
            "fraud_probability": 0.1,
            "decision": decision,
            "reasons": [],
            "model_version": "3",
            "degraded": False,
            "latency_ms": 1.0,
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        time.sleep(self.delay)
        if self.key and request.headers.get("authorization") != f"Bearer {self.key}":
            return httpx.Response(401, json={"error": "missing or wrong API key"})
        body = json.loads(request.content)
        batch = [body["transaction"]] if request.url.path == "/score" else body["transactions"]
        with self.lock:
            self.requests.append((request.url.path, len(batch)))
        if any(tx["transaction_id"] == self.reject for tx in batch):
            return httpx.Response(400, json={"detail": [{"loc": ["amount"], "msg": "bad"}]})
        if request.url.path == "/score":
            return httpx.Response(200, json=self.score(batch[0]))
        return httpx.Response(200, json={"results": [self.score(tx) for tx in batch]})


def test_load_sorts_filters_and_keeps_the_contract(parquet: Path) -> None:
    tx = load_transactions(
        parquet,
        start=pd.Timestamp("2026-05-11T10:00:10"),
        end=pd.Timestamp("2026-05-11T10:00:40Z").to_pydatetime(),
        limit=20,
    )
    assert list(tx.columns) == [
        "transaction_id",
        "timestamp",
        "customer_id",
        "terminal_id",
        "amount",
    ]
    assert tx["transaction_id"].tolist() == [f"tx{i:04d}" for i in range(10, 30)]
    assert tx["timestamp"].is_monotonic_increasing


def test_a_bad_file_names_the_row_and_column(tmp_path: Path) -> None:
    bad = transactions(3)
    bad.loc[1, "amount"] = -1.0
    path = tmp_path / "bad.parquet"
    bad.to_parquet(path)
    with pytest.raises(ValidationFailed, match="row 2, column 'amount'"):
        load_transactions(path)


def test_payloads_are_contract_transactions_and_survive_the_stream_format(parquet: Path) -> None:
    events = payloads(load_transactions(parquet))
    assert events[0]["timestamp"] == "2026-05-11T10:00:00.000000Z"
    for event in events:
        parsed = parse_event(event_fields(event))
        assert parsed == Transaction.model_validate(event)


def test_pacer_holds_the_rate() -> None:
    pacer = Pacer(500)
    for i in range(100):
        pacer.wait(i)
    assert 0.19 <= time.perf_counter() - pacer.started <= 0.35  # event 99 at 0.198 s
    unpaced = Pacer(None)
    unpaced.wait(10_000)
    assert time.perf_counter() - unpaced.started < 0.01


def test_http_single_requests_at_a_rate_with_a_summary(parquet: Path) -> None:
    api = FakeApi()
    events = payloads(load_transactions(parquet))
    seen: list[tuple[int, int]] = []
    summary = replay_http(
        events,
        "http://api",
        api_key="k",
        rate=100,
        concurrency=3,
        transport=httpx.MockTransport(api),
        progress=lambda s, d: seen.append((s, d)),
    )
    result = summary.as_dict()
    assert {path for path, _ in api.requests} == {"/score"} and len(api.requests) == 50
    assert result["sent"] == result["scored"] == 50 and result["errors"] == 0
    assert 0.45 <= result["send_seconds"] <= 0.7  # 50 events at 100/s: event 49 at 0.49 s
    assert result["decisions"] == {"approve": 41, "review": 0, "block": 9}
    assert result["model_versions"] == {"3": 50}
    assert result["latency_ms"]["p50"] is not None and seen[-1][0] == 50


def test_http_batches_and_errors(parquet: Path) -> None:
    api = FakeApi(reject="tx0012")
    events = payloads(load_transactions(parquet))
    result = replay_http(
        events, "http://api", api_key="k", batch=20, transport=httpx.MockTransport(api)
    ).as_dict()
    assert sorted(api.requests) == [
        ("/score_batch", 10),
        ("/score_batch", 20),
        ("/score_batch", 20),
    ]
    assert result["scored"] == 30 and result["errors"] == 20
    assert result["error_examples"][0].startswith("/score_batch: HTTP 400")


def test_http_wrong_key_and_unreachable_server_are_errors(parquet: Path) -> None:
    events = payloads(load_transactions(parquet))[:5]
    wrong = replay_http(
        events, "http://api", api_key="nope", transport=httpx.MockTransport(FakeApi())
    ).as_dict()
    assert wrong["errors"] == 5 and "HTTP 401" in wrong["error_examples"][0]

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    down = replay_http(events, "http://api", transport=httpx.MockTransport(refuse)).as_dict()
    assert (
        down["errors"] == 5 and down["scored"] == 0 and "ConnectError" in down["error_examples"][0]
    )
    assert down["latency_ms"]["p50"] is None


def test_summary_percentiles() -> None:
    summary = ReplaySummary("http", sent=100, send_seconds=2.0)
    for i in range(100):
        summary.result({"decision": "approve", "model_version": "1"}, float(i + 1))
    result = summary.as_dict()
    assert result["latency_ms"]["p50"] == pytest.approx(50.5)
    assert result["latency_ms"]["p99"] == pytest.approx(99.01)
    assert result["rate_achieved"] == 50.0
