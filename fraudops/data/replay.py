"""Replay transactions from a file to the scoring API or the stream, in timestamp order and
at a chosen rate, and summarise what came back (sent, scored, errors, latency, decisions).

    fraudops replay data/raw/transactions.parquet --to http --url http://127.0.0.1:3000 \\
        --batch 50 --rate 500 --json-out replay.json
    fraudops replay data/offline/transactions.parquet --to stream --start 2026-05-09 --limit 5000

To the HTTP API a few worker threads post ``/score`` (``batch`` 1) or ``/score_batch``;
latency is each request's round trip. To the stream events are XADDed to
``<prefix>:transactions`` (pipelined) and their results read back from ``<prefix>:scores``
(and ``<prefix>:deadletter``) by the entry id; latency runs from the XADD to the moment
the result is read, and "scored" counts only results read back before the timeout.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudops.core import contract as c

log = logging.getLogger(__name__)

# (sent, scored) so far; called from several threads
Progress = Callable[[int, int], object]
MAX_ERROR_EXAMPLES = 5
STREAM_BURST_SECONDS = 0.01  # with a rate, a pipelined write carries at most 10 ms of events


@dataclass
class ReplaySummary:
    target: str
    sent: int = 0
    scored: int = 0
    errors: int = 0  # HTTP errors, failed requests, dead-lettered events
    missing: int = 0  # stream only: neither scored nor dead-lettered before the timeout
    send_seconds: float = 0.0  # first to last send
    total_seconds: float = 0.0  # including waiting for the last results
    rate_target: float | None = None
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    decisions: Counter[str] = field(default_factory=Counter)
    degraded: int = 0
    model_versions: Counter[str] = field(default_factory=Counter)
    error_examples: list[str] = field(default_factory=list)

    def error(self, events: int, example: str) -> None:
        self.errors += events
        if len(self.error_examples) < MAX_ERROR_EXAMPLES:
            self.error_examples.append(example[:300])

    def result(self, body: dict[str, Any], latency_ms: float) -> None:
        self.scored += 1
        self.latencies_ms.append(latency_ms)
        self.decisions[str(body.get("decision"))] += 1
        self.model_versions[str(body.get("model_version"))] += 1
        self.degraded += body.get("degraded") in (True, "true")

    def as_dict(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms, dtype=np.float64)
        latency = (
            {f"p{q}": round(float(np.percentile(lat, q)), 3) for q in (50, 95, 99)}
            | {"max": round(float(lat.max()), 3), "mean": round(float(lat.mean()), 3)}
            if len(lat)
            else {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
        )
        return {
            "target": self.target,
            "sent": self.sent,
            "scored": self.scored,
            "errors": self.errors,
            "missing": self.missing,
            "send_seconds": round(self.send_seconds, 3),
            "total_seconds": round(self.total_seconds, 3),
            "rate_target": self.rate_target,
            "rate_achieved": round(self.sent / self.send_seconds, 1) if self.send_seconds else None,
            "latency_ms": latency,
            "decisions": {d: self.decisions.get(d, 0) for d in ("approve", "review", "block")}
            | {d: n for d, n in self.decisions.items() if d not in ("approve", "review", "block")},
            "degraded": self.degraded,
            "model_versions": dict(self.model_versions),
            "error_examples": self.error_examples,
        }


# --- input ----------------------------------------------------------------------------------
def load_transactions(
    path: Path,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """The file's transactions in the contract, in timestamp order, ``start <= t < end``,
    the first ``limit``; a bad file raises :class:`fraudops.data.ingest.ValidationFailed`."""
    from fraudops.data.ingest import Numbering, read_table, validate_transactions

    tx = validate_transactions(  # sorted by time; problems named by the file's line or row
        read_table(Path(path)), name=str(path), numbering=Numbering.of(Path(path))
    )
    if start is not None:
        tx = tx[tx[c.TIMESTAMP] >= _utc(start)]
    if end is not None:
        tx = tx[tx[c.TIMESTAMP] < _utc(end)]
    if limit is not None:
        tx = tx.head(limit)
    return tx[list(c.TRANSACTION_COLUMNS)].reset_index(drop=True)


def payloads(tx: pd.DataFrame) -> list[dict[str, Any]]:
    """Transactions as the API and the stream take them (ISO 8601 UTC timestamps)."""
    stamps = tx[c.TIMESTAMP].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return [
        {c.TRANSACTION_ID: t, c.TIMESTAMP: s, c.CUSTOMER_ID: cu, c.TERMINAL_ID: te, c.AMOUNT: a}
        for t, s, cu, te, a in zip(
            tx[c.TRANSACTION_ID].astype(str),
            stamps,
            tx[c.CUSTOMER_ID].astype(str),
            tx[c.TERMINAL_ID].astype(str),
            tx[c.AMOUNT].astype(float),
            strict=True,
        )
    ]


def _utc(value: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


# --- pacing ---------------------------------------------------------------------------------
class Pacer:
    """Sends event ``i`` no earlier than ``start + i / rate`` (no rate: at once). A late
    sender catches up without sleeping, so the average rate holds."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.perf_counter):
        self.rate = rate if rate and rate > 0 else None
        self.clock = clock
        self.started = clock()

    def wait(self, events_before: int) -> None:
        if self.rate is None:
            return
        delay = self.started + events_before / self.rate - self.clock()
        if delay > 0:
            time.sleep(delay)


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# --- HTTP -----------------------------------------------------------------------------------
def replay_http(
    events: Sequence[dict[str, Any]],
    url: str,
    *,
    api_key: str | None = None,
    batch: int = 1,
    rate: float | None = None,
    concurrency: int = 4,
    timeout: float = 30.0,
    progress: Progress | None = None,
    transport: Any = None,
) -> ReplaySummary:
    """Post events to ``/score`` (batch 1) or ``/score_batch`` from ``concurrency`` worker
    threads, paced by the main thread; ``transport`` is for tests (httpx.MockTransport)."""
    import httpx

    summary = ReplaySummary("http", rate_target=rate)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    work: queue.Queue[Sequence[dict[str, Any]] | None] = queue.Queue(maxsize=2 * concurrency)
    lock = threading.Lock()
    sent = 0

    def post(client: httpx.Client, chunk: Sequence[dict[str, Any]]) -> None:
        single = len(chunk) == 1 and batch == 1
        path, body = (
            ("/score", {"transaction": chunk[0]})
            if single
            else ("/score_batch", {"transactions": list(chunk)})
        )
        began = time.perf_counter()
        try:
            response = client.post(path, json=body)
        except httpx.HTTPError as exc:
            with lock:
                summary.error(len(chunk), f"{path}: {type(exc).__name__}: {exc}")
            return
        latency = (time.perf_counter() - began) * 1000
        with lock:
            if response.status_code != 200:
                summary.error(len(chunk), f"{path}: HTTP {response.status_code}: {response.text}")
                return
            try:
                body = response.json()
                results = [body] if single else body["results"]
            except (ValueError, KeyError, TypeError):
                summary.error(len(chunk), f"{path}: unexpected response: {response.text}")
                return
            for result in results:
                summary.result(result, latency)
            scored = summary.scored
        if progress:
            progress(sent, scored)

    def worker() -> None:
        with httpx.Client(
            base_url=url, headers=headers, timeout=timeout, transport=transport
        ) as client:
            while (chunk := work.get()) is not None:
                post(client, chunk)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    pacer = Pacer(rate)
    try:
        for chunk in _chunks(events, max(batch, 1)):
            pacer.wait(sent)
            work.put(chunk)
            sent += len(chunk)
            if progress:
                progress(sent, summary.scored)
        summary.send_seconds = time.perf_counter() - pacer.started
    finally:
        for _ in threads:
            work.put(None)
        for thread in threads:
            thread.join()
    summary.sent = sent
    summary.total_seconds = time.perf_counter() - pacer.started
    return summary


# --- stream ---------------------------------------------------------------------------------
def replay_stream(
    events: Sequence[dict[str, Any]],
    client: Any,
    names: Any,
    *,
    batch: int = 100,
    rate: float | None = None,
    timeout: float = 30.0,
    progress: Progress | None = None,
) -> ReplaySummary:
    """XADD events to ``names.transactions`` and read their results back.

    ``client``: a ``redis.Redis`` with ``decode_responses=True``; ``names``: a
    :class:`fraudops.serving.stream.StreamNames`. ``batch`` events go in one pipeline (with a
    rate, at most 10 ms worth). Results are waited for until ``timeout`` seconds after
    the last send.
    """
    from fraudops.core.contract import event_fields

    summary = ReplaySummary("stream", rate_target=rate)
    reader = _ResultReader(client, names)
    reader.start()
    sent_at: dict[str, float] = {}  # entry id -> when its pipeline was sent (in order)
    size = max(batch, 1)
    if rate:
        size = max(1, min(size, int(rate * STREAM_BURST_SECONDS)))
    pacer = Pacer(rate)
    shown = 0.0
    try:
        for chunk in _chunks(events, size):
            pacer.wait(len(sent_at))
            pipe = client.pipeline(transaction=False)
            for event in chunk:
                pipe.xadd(names.transactions, event_fields(event))
            began = time.perf_counter()
            ids = pipe.execute()
            for entry_id in ids:
                sent_at[entry_id] = began
            reader.expect(ids)
            if progress and began - shown >= 0.1:
                shown = began
                progress(len(sent_at), reader.update())
        summary.send_seconds = time.perf_counter() - pacer.started
        summary.sent = len(sent_at)
        deadline = time.perf_counter() + timeout
        while reader.update() < len(sent_at) and time.perf_counter() < deadline:
            if progress:
                progress(len(sent_at), reader.done)
            time.sleep(0.05)
    finally:
        reader.stop()
    for entry_id, began in sent_at.items():
        seen = reader.seen.get(entry_id)
        if seen is None:
            summary.missing += 1
        elif seen.kind == "score":
            summary.result(seen.fields, (seen.at - began) * 1000)
        else:
            summary.error(1, f"dead-lettered {entry_id}: {seen.fields.get('reason')}")
    if progress:
        progress(summary.sent, summary.scored)
    summary.total_seconds = time.perf_counter() - pacer.started
    return summary


@dataclass
class _Seen:
    kind: str  # "score" or "deadletter"
    fields: dict[str, str]
    at: float


class _ResultReader(threading.Thread):
    """Follows the scores and dead-letter streams from their current end."""

    def __init__(self, client: Any, names: Any):
        super().__init__(name="replay-results", daemon=True)
        self.client = client
        self.kinds = {names.scores: "score", names.deadletter: "deadletter"}
        self.last = {key: _last_id(client, key) for key in self.kinds}
        self.seen: dict[str, _Seen] = {}
        self._stop_event = threading.Event()
        self._waiting: set[str] = set()
        self.done = 0  # expected events with a result

    def expect(self, entry_ids: Sequence[str]) -> None:
        self._waiting.update(entry_ids)

    def update(self) -> int:
        """Count results of expected events that arrived since the last call."""
        arrived = [entry_id for entry_id in self._waiting if entry_id in self.seen]
        self._waiting.difference_update(arrived)
        self.done += len(arrived)
        return self.done

    def run(self) -> None:
        import redis

        while not self._stop_event.is_set():
            try:
                reply = self.client.xread(self.last, count=5000, block=100)
            except redis.RedisError as exc:  # results not read back count as missing
                log.warning("stopped reading results: %s", exc)
                return
            at = time.perf_counter()
            for key, entries in reply or []:
                kind = self.kinds[key]
                for entry_id, fields in entries:
                    self.seen[fields.get("event_id", "")] = _Seen(kind, fields, at)
                    self.last[key] = entry_id

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def _last_id(client: Any, key: str) -> str:
    last = client.xrevrange(key, count=1)
    return last[0][0] if last else "0-0"
