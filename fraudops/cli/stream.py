"""``fraudops stream`` and ``fraudops replay``: the streaming consumer and the replay tool.

Registered in :mod:`fraudops.cli.app`; the helpers of that module (console, progress bar,
``fail``) are imported when a command runs, so the two modules import in either order.

    fraudops stream --batch-size 500
    fraudops replay data/raw/transactions.parquet --to stream --rate 500 --limit 5000
"""

from __future__ import annotations

import gc
import json
import logging
import signal
import threading
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from fraudops.cli.common import (
    TIME_FORMATS,
    console,
    fail,
    progress_bar,
)

log = logging.getLogger(__name__)


class Target(StrEnum):
    http = "http"
    stream = "stream"


def stream(
    source: Annotated[
        str,
        typer.Option(
            "--stream",
            help="Input stream name, under FRAUDOPS_REDIS_KEY_PREFIX (fraudops:transactions).",
        ),
    ] = "transactions",
    group: Annotated[
        str, typer.Option(help="Consumer group; consumers of one group share the events.")
    ] = "scorers",
    consumer: Annotated[
        str | None,
        typer.Option(
            help="This consumer's name in the group, unique and stable across restarts (e.g. "
            "the pod name): a restarted consumer resumes its own pending events and spool "
            "(default: <hostname>-<pid>)."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, help="Most events scored together.")
    ] = 500,
    max_wait_ms: Annotated[
        int,
        typer.Option(
            min=0, help="After the first event of a batch, wait at most this long to fill it."
        ),
    ] = 20,
    claim_idle: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds after which another consumer's unacknowledged events are claimed "
            "(it died); keep it well above the time a batch takes.",
        ),
    ] = 30.0,
    max_len: Annotated[
        int,
        typer.Option(
            min=0, help="Approximate cap on the scores, alerts and deadletter streams (0: none)."
        ),
    ] = 1_000_000,
) -> None:
    """Score transaction events from a Redis Stream, in micro-batches, until Ctrl-C.

    Reads [bold]<prefix>:transactions[/] (field [bold]transaction[/]: one transaction of
    the data contract as JSON) with a consumer group and scores events through the same
    core as the HTTP API: features as of each event's timestamp, the @champion model
    (followed when it moves), real-time customer state updates, the prediction log.
    Results go to [bold]<prefix>:scores[/], block decisions also to [bold]<prefix>:alerts[/],
    invalid events to [bold]<prefix>:deadletter[/] with the reason. An event is
    acknowledged only once its result and its prediction record are durable; events of a
    consumer that dies are claimed by another after --claim-idle seconds, and scored once.
    Ctrl-C finishes the batch in hand, then stops; a second Ctrl-C aborts.
    Redis: FRAUDOPS_REDIS_URL; prediction log: FRAUDOPS_DATABASE_URL.
    """
    from fraudops.core.settings import get_settings
    from fraudops.serving.scoring import NotReady
    from fraudops.serving.stream import run_consumer

    settings = get_settings()
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info(
            "%s: finishing the batch in hand, then stopping (again to abort)",
            signal.Signals(signum).name,
        )
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        stats = run_consumer(
            settings,
            stop,
            stream=source,
            group=group,
            consumer=consumer,
            batch_size=batch_size,
            max_wait_ms=max_wait_ms,
            claim_idle_ms=int(claim_idle * 1000),
            max_len=max_len or None,
            freeze=True,
        )
    except NotReady as exc:
        raise fail(str(exc)) from None
    except _redis_errors() as exc:
        raise fail(f"cannot use Redis at {_safe_url(settings.redis_url)}: {exc}") from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        # freeze=True moved the start-up heap out of the collector's reach, and the
        # interpreter's exit does not collect frozen objects: DuckDB's (loaded by Feast)
        # stayed alive, and its bindings (nanobind) printed a page of "leaked" warnings
        # after "stopped cleanly". Given back, they are freed as usual.
        gc.unfreeze()
    log.info("stopped cleanly: %s", json.dumps(stats.as_dict()))


def replay(
    path: Annotated[
        Path,
        typer.Argument(
            help="Transactions file (.parquet or .csv) in the data contract: simulated "
            "(fraudops simulate) or ingested (<data_dir>/offline/transactions.parquet)."
        ),
    ],
    to: Annotated[
        Target, typer.Option(help="Send to the HTTP API or to the transactions stream.")
    ] = Target.http,
    url: Annotated[str, typer.Option(help="Scoring API base URL (--to http).")] = (
        "http://127.0.0.1:3000"
    ),
    api_key: Annotated[
        str | None,
        typer.Option(
            help="API key for --to http (default: FRAUDOPS_API_KEY, which is better: a key "
            "given here shows in the process list and the shell's history).",
            show_default=False,
        ),
    ] = None,
    batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=1000,
            help="Transactions per request (HTTP: /score when 1, else /score_batch) or per "
            "pipelined write (stream) (default: 1 for http, 100 for stream).",
        ),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            min=0, help="Events per second; omit or 0 for as fast as possible (HTTP: per request)."
        ),
    ] = None,
    start: Annotated[
        datetime | None,
        typer.Option(formats=TIME_FORMATS, help="Only transactions at or after (UTC)."),
    ] = None,
    end: Annotated[
        datetime | None, typer.Option(formats=TIME_FORMATS, help="Only transactions before (UTC).")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Send at most this many.")] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="HTTP worker threads (requests in flight).")
    ] = 4,
    source: Annotated[
        str, typer.Option("--stream", help="Stream name under the prefix (--to stream).")
    ] = "transactions",
    timeout: Annotated[
        float,
        typer.Option(
            min=0,
            help="HTTP: request timeout. Stream: how long to wait for results after the last send.",
        ),
    ] = 30.0,
    json_out: Annotated[
        Path | None, typer.Option(help="Also write the summary as JSON to this file.")
    ] = None,
) -> None:
    """Send transactions from a file to the scoring API or the stream, in timestamp order,
    at a given rate, and summarise what came back.

    The summary: sent, scored, errors (HTTP errors, dead-lettered events), missing (stream:
    no result within --timeout), latency p50/p95/p99 (HTTP: request round trip; stream:
    from XADD to the result read back from <prefix>:scores), decisions by type, model
    versions. Exits with 1 when any event failed or is missing.
    """
    from fraudops.core.settings import get_settings
    from fraudops.data.ingest import ValidationFailed
    from fraudops.data.replay import load_transactions, payloads

    settings = get_settings()
    try:
        with console.status(f"reading {path}"):
            events = payloads(load_transactions(path, start, end, limit))
    except ValidationFailed as exc:
        raise fail(str(exc)) from None
    if not events:
        raise fail(f"{path}: no transactions between {start or 'the start'} and {end or 'the end'}")
    if to is Target.http:
        key = api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
        summary = _replay_http(events, url, key, batch or 1, rate, concurrency, timeout)
    else:
        summary = _replay_stream(events, settings, source, batch or 100, rate, timeout)
    result = summary.as_dict() | {"path": str(path)}
    _print_summary(result)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n")
        log.info("summary written to %s", json_out)
    if result["errors"] or result["missing"]:
        raise typer.Exit(code=1)


def _replay_http(events, url, api_key, batch, rate, concurrency, timeout):  # type: ignore[no-untyped-def]
    import httpx

    from fraudops.data.replay import replay_http
    from fraudops.serving.readiness import serving_on_stale_features

    try:
        ready = httpx.get(f"{url.rstrip('/')}/readyz", timeout=5)
    except httpx.HTTPError as exc:
        raise fail(
            f"cannot reach the scoring API at {url} ({exc}): start it with "
            "`bentoml serve`, or pass --url"
        ) from None
    if serving_on_stale_features(ready.status_code, ready.content):
        # a replay of history is scored on event time, where readiness reads the clock
        log.warning(
            "the scoring API says its features are stale by the clock: %s",
            ready.json()["stale_views"],
        )
    elif ready.status_code != 200:
        raise fail(f"the scoring API at {url} is not ready (GET /readyz: {ready.status_code})")
    with _progress(len(events), "posting") as update:
        return replay_http(
            events,
            url.rstrip("/"),
            api_key=api_key,
            batch=batch,
            rate=rate,
            concurrency=concurrency,
            timeout=timeout,
            progress=update,
        )


def _replay_stream(events, settings, source, batch, rate, timeout):  # type: ignore[no-untyped-def]
    import redis

    from fraudops.data.replay import replay_stream
    from fraudops.serving.stream import StreamNames

    names = StreamNames.from_settings(settings, source)
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        client.ping()
        if not client.exists(names.transactions) or not client.xinfo_groups(names.transactions):
            log.warning(
                "no consumer group reads %s yet: start `fraudops stream`, or results "
                "will be missing after --timeout",
                names.transactions,
            )
        with _progress(len(events), f"XADD {names.transactions}") as update:
            return replay_stream(
                events, client, names, batch=batch, rate=rate, timeout=timeout, progress=update
            )
    except redis.RedisError as exc:
        raise fail(f"cannot use Redis at {_safe_url(settings.redis_url)}: {exc}") from None
    finally:
        client.close()


class _progress:
    """Two bars, sent and scored, updated from the replay's threads."""

    def __init__(self, total: int, label: str):

        self.bar = progress_bar()
        self.sent = self.bar.add_task(label, total=total)
        self.scored = self.bar.add_task("results", total=total)

    def __enter__(self):  # type: ignore[no-untyped-def]
        self.bar.start()
        return self.update

    def update(self, sent: int, scored: int) -> None:
        self.bar.update(self.sent, completed=sent)
        self.bar.update(self.scored, completed=scored)

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


def _print_summary(result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"replay to {result['target']}: {result['path']}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    lat = result["latency_ms"]
    rows = [
        ("sent", f"{result['sent']:,}"),
        ("scored", f"{result['scored']:,}"),
        ("errors", f"{result['errors']:,}"),
        ("missing", f"{result['missing']:,}"),
        (
            "events/s (target / achieved)",
            f"{result['rate_target'] or 'max'} / {result['rate_achieved'] or '-'}",
        ),
        ("seconds (sending / total)", f"{result['send_seconds']} / {result['total_seconds']}"),
        ("latency ms p50 / p95 / p99", f"{lat['p50']} / {lat['p95']} / {lat['p99']}"),
        *((f"decision: {name}", f"{count:,}") for name, count in result["decisions"].items()),
        ("degraded", f"{result['degraded']:,}"),
        ("model versions", ", ".join(f"{v}: {n:,}" for v, n in result["model_versions"].items())),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    for example in result["error_examples"]:
        console.print(f"[red]error:[/] {example}", highlight=False)


def _redis_errors() -> tuple[type[Exception], ...]:
    import redis

    return (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError)


def _safe_url(url: str) -> str:
    """The Redis URL without its password, for messages."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url
