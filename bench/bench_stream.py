"""Benchmark: end-to-end stream scoring (events in, scores out) with one consumer process,
against a floor measured in the same run.

Run it (Redis at 127.0.0.1:6379; only DB 10 is used, and flushed at start and end)::

    python bench/bench_stream.py [--quick] [--events 30000] [--batch-size 500] \\
        [--profile] [--out bench/results/stream.json]

Set-up, as a user would: simulate Handbook-size data (5,000 customers, 10,000 terminals),
ingest all but the last days, build and materialize features up to there, train and
promote. The last days are the events (held-out history, in time order).

1. Floor: the same events read with XREADGROUP and acknowledged (XACK) in batches of
   ``--batch-size``, nothing else (in this process).
2. Plumbing: the consumer (:class:`fraudops.serving.stream.StreamConsumer`, in this process) with
   the scoring core replaced by a constant answer: parsing, results, alerts, leases, acks.
   Where the consumer's own overhead ends and scoring begins.
3. Throughput: ``fraudops stream`` as a subprocess (one consumer, SQLite prediction log
   unless ``--database-url``) drains a backlog of ``--events`` events XADDed before it
   started, as the floor does: events/s = events scored / (first score .. last score),
   the consumer's CPU time alongside. Goal: >= 5,000/s.
3b. Live: the next events XADDed as fast as possible while the consumer runs and the
   scores are read back (the replay tool): events/s = events / (first XADD .. last score
   read). On 2 cores the load generator and Redis take CPU from the consumer here.
4. Latency: the next events at a steady rate (min(goal, 70% of the measured throughput)),
   event-to-score latency p50/p95/p99 (XADD to score read back, by the replay tool).
5. Profile, when the goal is missed (or ``--profile``) and py-spy is found (PATH,
   ``--py-spy``, or /tmp/pyspy/bin/py-spy, e.g. ``pip install --target /tmp/pyspy
   py-spy``): another burst of the next events while py-spy samples the consumer, so (3)
   and (4) are measured without it. The JSON lists where the consumer's time goes.
6. Two consumers (before 5): a second ``fraudops stream`` joins the first's group and both
   drain a backlog of half as many events as (3), against the one consumer of (3)
   (``two_consumers`` in the JSON; on 2 cores the pair shares them with Redis).

Results are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger("bench_stream")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results" / "stream.json"
REDIS_URL = "redis://127.0.0.1:6379/10"  # this benchmark's own DB: flushed at start and end
PREFIX = "bench"
GOAL_EVENTS_PER_S = 5_000
FULL = {"customers": 5_000, "terminals": 10_000, "days": 51, "event_days": 10, "events": 30_000}
QUICK = {"customers": 1_000, "terminals": 2_000, "days": 33, "event_days": 3, "events": 4_000}
# Runs `fraudops stream` whether or not fraudops.cli.app registers it yet.
CONSUMER = (
    "from fraudops.cli.app import app\n"
    "from fraudops.cli.stream import stream\n"
    "if 'stream' not in {c.name or c.callback.__name__ for c in app.registered_commands}:\n"
    "    app.command()(stream)\n"
    "app()\n"
)


def configure_environment(data_dir: Path, database_url: str | None) -> dict[str, str]:
    values = {
        "FRAUDOPS_DATA_DIR": str(data_dir),
        "FRAUDOPS_ONLINE_STORE": "redis",
        "FRAUDOPS_REDIS_URL": REDIS_URL,
        "FRAUDOPS_REDIS_KEY_PREFIX": PREFIX,
        "FRAUDOPS_RELOAD_INTERVAL_SECONDS": "15",
    }
    if database_url:
        values["FRAUDOPS_DATABASE_URL"] = database_url
    for key in [k for k in os.environ if k.startswith("FRAUDOPS_")]:
        del os.environ[key]
    os.environ.update(values)
    from fraudops.core.settings import get_settings

    get_settings.cache_clear()
    return values


# --- set-up -------------------------------------------------------------------------------
def prepare(size: dict[str, int], seed: int) -> pd.DataFrame:
    """Ingest, build, materialize, train and promote on all but the last days; returns the
    held-out events (contract columns, time order)."""
    from fraudops.core import contract as c
    from fraudops.core.settings import get_settings
    from fraudops.data.ingest import write_parquet_atomic
    from fraudops.data.simulator import simulate
    from fraudops.features.build import build_from_offline_store
    from fraudops.features.feast_store import apply_definitions, get_store
    from fraudops.features.materialize import materialize_once
    from fraudops.model.promotion import promote
    from fraudops.model.training import train

    settings = get_settings()
    started = time.perf_counter()
    tx = simulate(
        customers=size["customers"], terminals=size["terminals"], days=size["days"], seed=seed
    )
    cut = tx[c.TIMESTAMP].max().floor("D") - pd.Timedelta(days=size["event_days"] - 1)
    history, events = tx[tx[c.TIMESTAMP] < cut], tx[tx[c.TIMESTAMP] >= cut]
    write_parquet_atomic(history, settings.transactions_path)
    build_from_offline_store(settings)
    store = get_store()
    apply_definitions(store)
    materialize_once(end=cut.to_pydatetime())  # batch views and customer states
    train(settings)
    promote(settings)
    logger.info(
        "prepared %d history rows and %d events from %s in %.1f s",
        len(history),
        len(events),
        cut.date(),
        time.perf_counter() - started,
    )
    return events[list(c.TRANSACTION_COLUMNS)].reset_index(drop=True)


def fill_stream(client: Any, key: str, events: list[dict]) -> None:
    from fraudops.core.contract import event_fields

    for start in range(0, len(events), 2_000):
        pipe = client.pipeline(transaction=False)
        for event in events[start : start + 2_000]:
            pipe.xadd(key, event_fields(event))
        pipe.execute()


# --- 1. floor -------------------------------------------------------------------------------
def floor(client: Any, events: list[dict], batch_size: int) -> dict[str, Any]:
    key = f"{PREFIX}-floor:transactions"
    fill_stream(client, key, events)
    client.xgroup_create(key, "floor", id="0")
    started = time.perf_counter()
    done = 0
    while done < len(events):
        reply = client.xreadgroup("floor", "floor-1", {key: ">"}, count=batch_size, block=1000)
        ids = [entry_id for entry_id, _ in reply[0][1]] if reply else []
        if ids:
            client.xack(key, "floor", *ids)
        done += len(ids)
    seconds = time.perf_counter() - started
    client.delete(key)
    return {
        "what": "XREADGROUP + XACK in batches, no parsing or scoring",
        "events": done,
        "seconds": round(seconds, 3),
        "events_per_s": round(done / seconds, 1),
    }


# --- 2. plumbing ----------------------------------------------------------------------------
class _ConstantCore:
    """What StreamConsumer needs of a ScoringCore, answering without features or model."""

    class _Loaded:
        version = "constant"

    def __init__(self) -> None:
        self.prediction_log = object()
        self.current = self._Loaded()

    def score(self, transactions, source, prediction_ids, log_via, shadow_via=None):  # type: ignore[no-untyped-def]
        from fraudops.serving.scoring import ScoreResult

        log_via([])
        return [
            ScoreResult(t.transaction_id, 0.01, "approve", [], "constant", False, 0.0)
            for t in transactions
        ]


def plumbing(client: Any, events: list[dict], batch_size: int, max_wait_ms: int) -> dict:
    import fraudops.serving.scoring  # noqa: F401 - imported before the clock starts
    from fraudops.serving.stream import StreamConsumer, StreamNames

    names = StreamNames.under(f"{PREFIX}-plumbing")
    fill_stream(client, names.transactions, events)
    consumer = StreamConsumer(
        _ConstantCore(),
        client,
        names,
        consumer="plumbing-1",  # type: ignore[arg-type]
        batch_size=batch_size,
        max_wait_ms=max_wait_ms,
    )
    consumer.ensure_group()
    started = time.perf_counter()
    done = 0
    while done < len(events):
        done += consumer.step()
    consumer.step()  # publishes the last batch
    seconds = time.perf_counter() - started
    client.delete(names.transactions, names.scores, names.alerts, names.deadletter)
    return {
        "what": "StreamConsumer with a constant scorer: parse, publish, lease, ack",
        "events": done,
        "seconds": round(seconds, 3),
        "events_per_s": round(done / seconds, 1),
    }


# --- 3 and 4. the consumer process ----------------------------------------------------------
def start_consumer(  # type: ignore[no-untyped-def]
    values: dict[str, str], log_path: Path, batch_size: int, max_wait_ms: int, name: str = "bench-1"
):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDOPS_")} | values
    args = [
        "stream",
        "--consumer",
        name,
        "--batch-size",
        str(batch_size),
        "--max-wait-ms",
        str(max_wait_ms),
    ]
    with log_path.open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-c", CONSUMER, *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_until_consuming(
    client: Any, process: subprocess.Popen, log_path: Path, name: str = "bench-1"
) -> float:
    """Seconds until the consumer has joined its group (after loading the model)."""
    import redis

    started = time.perf_counter()
    key = f"{PREFIX}:transactions"
    while time.perf_counter() - started < 180:
        if process.poll() is not None:
            raise RuntimeError(
                f"consumer exited ({process.returncode}):\n{log_path.read_text()[-3000:]}"
            )
        with contextlib.suppress(redis.ResponseError):  # no stream or group yet
            if any(c["name"] == name for c in client.xinfo_consumers(key, "scorers")):
                return time.perf_counter() - started
        time.sleep(0.1)
    raise TimeoutError(f"consumer not consuming after 180 s:\n{log_path.read_text()[-3000:]}")


def drain_backlog(
    client: Any, process: subprocess.Popen | list[subprocess.Popen], scores: str, events: int
) -> dict:
    """Poll the scores stream while the consumers drain the backlog: the rate from the
    first score to the last, and the consumers' CPU time meanwhile (Linux)."""
    processes = process if isinstance(process, list) else [process]
    before = client.xlen(scores)  # scores of earlier runs

    def cpu_seconds() -> float:
        return sum(_cpu_seconds(p.pid) for p in processes)

    deadline = time.perf_counter() + 600
    first = None
    while True:
        now = time.perf_counter()
        done = client.xlen(scores) - before
        if done and first is None:
            first, first_done, cpu_first = now, done, cpu_seconds()
        if done >= events or now > deadline or any(p.poll() is not None for p in processes):
            break
        time.sleep(0.005)
    if first is None or done == first_done:
        raise RuntimeError(f"the consumers scored {done} of {events} backlog events")
    seconds = now - first
    cpu = cpu_seconds() - cpu_first
    return {
        "what": "backlog XADDed before the consumer started; first .. last score",
        "events": events,
        "scored": done,
        "timed_events": done - first_done,
        "seconds": round(seconds, 3),
        "events_per_s": round((done - first_done) / seconds, 1),
        "consumer_cpu_seconds": round(cpu, 2),
        "consumer_cpu_us_per_event": round(cpu / (done - first_done) * 1e6, 1),
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_consumer(process: subprocess.Popen) -> dict[str, Any]:
    started = time.perf_counter()
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    return {"exit_code": code, "seconds_to_stop": round(time.perf_counter() - started, 2)}


def find_py_spy(given: str | None) -> str | None:
    for candidate in (given, shutil.which("py-spy"), "/tmp/pyspy/bin/py-spy"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def start_profiler(py_spy: str, pid: int, out: Path) -> subprocess.Popen:
    env = dict(os.environ)
    if "/tmp/pyspy" in py_spy:  # installed with pip --target: its package dir on the path
        env["PYTHONPATH"] = "/tmp/pyspy"
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


def profile(py_spy: str, pid: int, tmp: Path, client: Any, names: Any, events: list) -> dict:
    from fraudops.data.replay import replay_stream

    out = tmp / "profile.txt"
    profiler = start_profiler(py_spy, pid, out)
    time.sleep(1.0)  # py-spy attaches
    logger.info("profile: %d events while py-spy samples the consumer", len(events))
    run = replay_stream(events, client, names, batch=1_000, timeout=600).as_dict()
    profiler.send_signal(signal.SIGINT)
    _, errors = profiler.communicate(timeout=60)
    if not out.exists():
        return {"skipped": f"py-spy failed: {errors.decode(errors='replace')[-500:]}"}
    return {
        "events": run["sent"],
        "scored": run["scored"],
        "events_per_s_while_sampled": round(run["scored"] / run["total_seconds"], 1),
        **summarize_profile(out),
    }


def summarize_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Share of the consumer's (non-idle) samples spent in each function, inclusive, and the
    hottest leaves."""
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        leaves[frames[-1]] += n
    share = lambda n: round(n / total, 3)  # noqa: E731
    return {
        "samples": total,
        "inclusive": {f: share(n) for f, n in inclusive.most_common(top)},
        "self": {f: share(n) for f, n in leaves.most_common(15)},
    }


def _frame(frame: str) -> str:
    """``function (path/to/file.py:line)`` -> ``function (file.py)``, lines merged."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    parts = Path(file).parts
    short = "/".join(parts[parts.index("fraudops") :]) if "fraudops" in parts else Path(file).name
    return f"{name} ({short})"


def logged_rows(settings: Any) -> dict[str, int]:
    import sqlalchemy as sa

    engine = sa.create_engine(settings.resolved_database_url)
    try:
        with engine.connect() as conn:
            rows, distinct = conn.execute(
                sa.text(
                    "select count(*), count(distinct transaction_id) from predictions "
                    "where source = 'stream'"
                )
            ).one()
    finally:
        engine.dispose()
    return {"rows": int(rows), "distinct_transactions": int(distinct)}


# --- main -----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, well under a minute")
    parser.add_argument("--events", type=int, help="events for the throughput run")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--max-wait-ms", type=int, default=20)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--database-url", help="prediction log (default: SQLite in a temp dir)")
    parser.add_argument("--profile", action="store_true", help="profile even if the goal is met")
    parser.add_argument("--profile-events", type=int, default=8_000)
    parser.add_argument("--py-spy", help="path to py-spy (default: PATH, /tmp/pyspy/bin)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("feast", "mlflow", "alembic", "fraudops"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import redis

    size = dict(QUICK if args.quick else FULL)
    if args.events:
        size["events"] = args.events
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    client.flushdb()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_stream_") as tmp:
        values = configure_environment(Path(tmp) / "data", args.database_url)
        from fraudops.core.settings import get_settings
        from fraudops.data.replay import payloads, replay_stream
        from fraudops.serving.stream import StreamNames

        try:
            events = prepare(size, args.seed)
            all_events = payloads(events)
            n = min(size["events"], len(all_events))
            burst, rest = all_events[:n], all_events[n:]
            result: dict[str, Any] = {
                "benchmark": "stream",
                "quick": args.quick,
                "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version(),
                    "redis": client.info("server")["redis_version"],
                },
                "data": {
                    **{k: size[k] for k in ("customers", "terminals", "days")},
                    "held_out_days": size["event_days"],
                    "held_out_events": len(events),
                    "distinct_customers_per_batch": _customers_per_batch(events, args.batch_size),
                },
                "consumer": {
                    "batch_size": args.batch_size,
                    "max_wait_ms": args.max_wait_ms,
                    "prediction_log": "postgresql"
                    if args.database_url and "postgres" in args.database_url
                    else "sqlite",
                    "online_store": "redis (fast path)",
                },
            }
            logger.info("floor: read + ack %d events", n)
            result["floor"] = floor(client, burst, args.batch_size)
            logger.info("floor: %.0f events/s", result["floor"]["events_per_s"])
            result["plumbing"] = plumbing(client, burst, args.batch_size, args.max_wait_ms)
            logger.info("plumbing: %.0f events/s", result["plumbing"]["events_per_s"])

            names = StreamNames.from_settings(get_settings())
            live_events, rest = rest[: n // 2], rest[n // 2 :]
            # the last n / 2 events for two consumers, if the latency run keeps 1,000 or more
            pair = rest[-(n // 2) :] if len(rest) >= n // 2 + 1_000 else []
            rest = rest[: len(rest) - len(pair)]
            fill_stream(client, names.transactions, burst)
            log_path = Path(tmp) / "consumer.log"
            process = start_consumer(values, log_path, args.batch_size, args.max_wait_ms)
            try:
                result["consumer"]["start_seconds"] = round(
                    wait_until_consuming(client, process, log_path), 2
                )
                logger.info("throughput: a backlog of %d events", n)
                drained = drain_backlog(client, process, names.scores, n)
                throughput = drained["events_per_s"]
                result["throughput"] = {
                    **drained,
                    "ratio_to_floor": round(throughput / result["floor"]["events_per_s"], 4),
                    "ratio_to_plumbing": round(throughput / result["plumbing"]["events_per_s"], 4),
                    "goal_events_per_s": GOAL_EVENTS_PER_S,
                    "meets_goal": throughput >= GOAL_EVENTS_PER_S,
                }
                logger.info(
                    "throughput: %.0f events/s (%.1f%% of the floor)",
                    throughput,
                    100 * result["throughput"]["ratio_to_floor"],
                )

                logger.info("live: %d events XADDed as fast as possible", len(live_events))
                run = replay_stream(live_events, client, names, batch=1_000, timeout=600).as_dict()
                result["live"] = {
                    "what": "XADD as fast as possible while consuming; first XADD .. last "
                    "score read back (load generator on the same cores)",
                    "events": run["sent"],
                    "scored": run["scored"],
                    "missing": run["missing"],
                    "errors": run["errors"],
                    "seconds": run["total_seconds"],
                    "events_per_s": round(run["scored"] / run["total_seconds"], 1),
                    "latency_under_saturation_ms": run["latency_ms"],
                    "decisions": run["decisions"],
                }
                logger.info("live: %.0f events/s", result["live"]["events_per_s"])

                rate = round(min(GOAL_EVENTS_PER_S, 0.7 * result["live"]["events_per_s"]), -1)
                paced = rest[: int(rate * args.latency_seconds)]
                logger.info("latency: %d events at %.0f/s", len(paced), rate)
                run = replay_stream(paced, client, names, rate=rate, timeout=120).as_dict()
                result["latency"] = {
                    "what": "steady rate; event-to-score = XADD to score read back",
                    "rate_target": rate,
                    "rate_achieved": run["rate_achieved"],
                    "events": run["sent"],
                    "scored": run["scored"],
                    "missing": run["missing"],
                    "latency_ms": run["latency_ms"],
                }
                if pair:
                    logger.info("two consumers: a backlog of %d events", len(pair))
                    result["two_consumers"] = two_consumers(
                        client, process, values, Path(tmp), names, pair, args, result["throughput"]
                    )
                else:
                    result["two_consumers"] = {"skipped": "too few held-out events"}
                py_spy = find_py_spy(args.py_spy)
                wanted = args.profile or not result["throughput"]["meets_goal"]
                extra = rest[len(paced) : len(paced) + args.profile_events]
                if wanted and py_spy and extra:
                    result["profile"] = profile(
                        py_spy, process.pid, Path(tmp), client, names, extra
                    )
                elif wanted:
                    result["profile"] = {
                        "skipped": "py-spy not found" if not py_spy else "no held-out events left"
                    }
            finally:
                result["shutdown"] = stop_consumer(process)
            result["prediction_log"] = logged_rows(get_settings())
            result["prediction_log"]["expected"] = (
                result["throughput"]["scored"]
                + result["live"]["scored"]
                + result["latency"]["scored"]
                + result["two_consumers"].get("scored", 0)
                + result.get("profile", {}).get("scored", 0)
            )
        finally:
            client.flushdb()
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def two_consumers(  # type: ignore[no-untyped-def]
    client: Any,
    first: subprocess.Popen,
    values: dict[str, str],
    tmp: Path,
    names,
    events: list,
    args,
    one: dict,
) -> dict[str, Any]:
    """Two consumers on one stream against one: a second ``fraudops stream`` process joins
    the running one's group, then a backlog of ``events`` is XADDed and drained by both.
    On this 2-core machine they share the cores with Redis, so the pair shows the
    consumers' coordination (every event scored once, state exact), not a cluster's
    scaling."""
    log_path = tmp / "consumer-2.log"
    second = start_consumer(values, log_path, args.batch_size, args.max_wait_ms, "bench-2")
    try:
        wait_until_consuming(client, second, log_path, "bench-2")
        fill_stream(client, names.transactions, events)
        drained = drain_backlog(client, [first, second], names.scores, len(events))
    finally:
        stopped = stop_consumer(second)
    per_consumer = {
        c["name"]: c["pending"] for c in client.xinfo_consumers(names.transactions, "scorers")
    }
    return {
        **drained,
        "what": "a second consumer joins the first; backlog XADDed once both consume; "
        "first .. last score",
        "one_consumer_events_per_s": one["events_per_s"],
        "two_over_one": round(drained["events_per_s"] / one["events_per_s"], 3),
        "pending_after": per_consumer,
        "second_consumer_exit": stopped,
    }


def _customers_per_batch(events: pd.DataFrame, batch_size: int) -> float:
    groups = np.arange(len(events)) // batch_size
    return round(float(events.groupby(groups)["customer_id"].nunique().mean()), 1)


if __name__ == "__main__":
    main()
