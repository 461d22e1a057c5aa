"""Benchmark: the scoring API under load, against a no-op BentoML service in the same run.

Run it from the repository root (Redis at 127.0.0.1:6379, only DB 9 is used and flushed
at start and end; PostgreSQL for the prediction log in a database of its own, created and
dropped)::

    python bench/bench_service.py [--quick] [--out bench/results/service.json]
    python bench/bench_service.py --scorer-root /tmp/fraudops-copy   # measure a change first
    python bench/bench_service.py --shadow [--quick]   # shadow scoring on against off

1. A full stack as users run it (``tests.integration.conftest.prepare_trained_environment``):
   simulated data, features materialized into Redis, a LightGBM model trained, registered
   and promoted to @champion in MLflow (SQLite), and ``bentoml serve`` of
   ``service.service:FraudScorer`` logging predictions to PostgreSQL (``--database sqlite``
   for the embedded default), with an API key.
2. The floor: ``bentoml serve bench.noop_service:NoopScorer``, the same routes, pydantic
   request and response models, workers, threads and API-key middleware, answering a
   constant score. Two more floors (``--no-references`` skips them) add one piece of the
   scorer's work each, measured at concurrency 1 beside the no-op: one Redis round trip of
   the scorer's read per request, on a plain socket (``RoundTripFloor``), and one LightGBM
   prediction (``PredictionFloor``); they show how much of the goals' budget that piece
   alone takes.
3. A load generator in a second process (asyncio, HTTP/1.1 keep-alive; see
   :func:`generate_load` for why not wrk) POSTs ``/score`` back to back on 1 and on 16
   connections: the simulation's transactions continued after the training data (see
   ``CLONES``), timestamps increasing. Per concurrency, after a warm-up, rounds alternate
   no-op and scorer runs; medians over rounds. Goals at each concurrency: p50 within 1.3x
   and p99 within 1.5x of the no-op's, throughput at least 75 % of the no-op's, no failed
   request.
3b. What a contended customer waits: at the highest concurrency, all connections send
   bursts of ``HOT_BURST`` transactions of one new customer at a time, against the same
   connections sending many customers' (``contended_customer`` in the JSON).
4. ``/score_batch`` with 1,000-transaction batches from 1 and 2 client threads:
   transactions/s, goal at least 5,000.

``--shadow`` measures instead the scorer with ``FRAUDOPS_SHADOW=true`` (a second model,
trained with another seed, registered as @challenger) against the same scorer without, at
concurrency 16 unless ``--concurrency`` says otherwise, rounds alternated; goal: throughput
with shadow at least 80 % of without (``SHADOW_GOAL``). Written to
``bench/results/service_shadow.json``.

Also reported: the server's CPU time per request (steadier than latency when other work
shares the machine), the load generator's own CPU, Little's law as a check of the latency
clock, the prediction-log backlog after each run, and the decisions logged. Results are
printed and written as JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from fraudops.core import contract as c
from fraudops.serving.readiness import serving_on_stale_features

logger = logging.getLogger("bench_service")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results" / "service.json"
HOT_BURST = 50  # a contended customer's burst: transactions sent at once (card testing)
REDIS_URL = "redis://127.0.0.1:6379/9"  # this benchmark's own DB: flushed at start and end
POSTGRES_URL = os.environ.get(
    "FRAUDOPS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
API_KEY = "bench-key-not-a-secret"
SCORER_TARGET = "service.service:FraudScorer"
NOOP_TARGET = "bench.noop_service:NoopScorer"
# Floors that add one piece of the scorer's work to the no-op (see bench/noop_service.py),
# measured at concurrency 1: what that piece alone costs against the goals there.
REFERENCES = {
    "round_trip": "bench.noop_service:RoundTripFloor",  # one Redis round trip per request
    "prediction": "bench.noop_service:PredictionFloor",  # one LightGBM prediction
}
CONCURRENCIES = (1, 16)
BATCH_SIZE = 1_000
GOALS = {
    "p50_ratio_max": 1.3,
    "p99_ratio_max": 1.5,
    "throughput_ratio_min": 0.75,
    "batch_transactions_per_s_min": 5_000,
}
# /score: after a warm-up, `rounds` alternations of no-op and scorer runs of `round_s`
# each; medians over rounds, so a burst of other load on the machine hits one round. The
# ratios of each round to the no-op round before it are reported too: how much the verdict
# depends on the round.
SHADOW_GOAL = {"throughput_ratio_min": 0.8}
SHADOW_OUT = REPO / "bench" / "results" / "service_shadow.json"
FULL = {"warmup_s": 3, "rounds": 5, "round_s": 5, "batches": 20}
QUICK = {"warmup_s": 2, "rounds": 1, "round_s": 5, "batches": 5}
# The stack is tests.integration.conftest.prepare_trained_environment's: 300 customers,
# 600 terminals, 40 simulated days. The load continues that simulation (same seed: the same
# customers, their usual terminals, amounts and daily rates) from the day after, within the
# 2-day TTL of the terminal features materialized with it. A few hundred customers cannot
# send thousands of transactions in two days at their own pace, so the population is
# replicated: clone r of customer c_00042 is c_00042-00r, with c_00042's state and its
# transactions at the same times. Each clone is a customer of its own to the scorer.
CUSTOMERS, TERMINALS, SEED = 300, 600, 5
CLONES = 100  # 30,000 customers; two days: about 115,000 transactions
STREAM_DAYS = 2  # terminal_daily's TTL: later, every terminal feature would be missing


# --- servers ---------------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen  # type: ignore[type-arg]
    log_path: Path

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def worker_cpu_seconds(self) -> float:
        """User + system CPU of the server's processes (the BentoML worker does the work)."""
        import psutil

        parent = psutil.Process(self.process.pid)
        total = 0.0
        for proc in [parent, *parent.children(recursive=True)]:
            with suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def worker_pids(self) -> list[int]:
        import psutil

        return [p.pid for p in psutil.Process(self.process.pid).children(recursive=True)]


@contextmanager
def bentoml_serve(
    name: str, target: str, root: Path, values: dict[str, str], log_path: Path, timeout: float = 120
) -> Iterator[Server]:
    """``bentoml serve <target>`` in ``root``, polled for readiness."""
    import httpx

    from tests.conftest import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDOPS_")}
    env.update(values)
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    # each server's metrics of its own: a `bentoml serve` empties its home's Prometheus
    # directory as it starts (docs/operations.md)
    env["BENTOML_HOME"] = str(log_path.parent / f"bentoml-home-{port}")
    bentoml = Path(sys.executable).with_name("bentoml")
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(bentoml), "serve", target, "--port", str(port), "--host", "127.0.0.1"],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = Server(name, f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name}: bentoml serve exited:\n{server.log_tail()}")
            with suppress(httpx.HTTPError):
                ready = httpx.get(f"{server.url}/readyz", timeout=1)
                # the benchmark's history lies in the past: stale by the clock, still scoring
                if ready.status_code == 200 or serving_on_stale_features(
                    ready.status_code, ready.content
                ):
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: not ready after {timeout} s:\n{server.log_tail()}")
            time.sleep(0.2)
        logger.info("%s ready at %s", name, server.url)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


def check_answers(server: Server, transaction: dict[str, Any]) -> dict[str, Any]:
    """One request, which must be scored normally (not degraded), before any load."""
    import httpx

    body = {"transaction": {**transaction, "transaction_id": f"check-{server.name}"}}
    response = httpx.post(f"{server.url}/score", json=body, headers=auth(), timeout=30)
    if response.status_code != 200:
        raise RuntimeError(
            f"{server.name}: /score answered {response.status_code}: {response.text[:500]}\n"
            f"server log:\n{server.log_tail()}"
        )
    result = response.json()
    if result["degraded"]:
        raise RuntimeError(f"{server.name}: scored in degraded mode before the benchmark")
    return result


def wait_for_log_backlog(server: Server, timeout: float = 120) -> dict[str, Any]:
    """Wait until the scorer's prediction log has written what it queued, so a run does not
    pay for the previous run's inserts; returns the drain time and the last status."""
    import httpx

    started = time.monotonic()
    while True:
        status = httpx.post(f"{server.url}/admin/status", json={}, headers=auth(), timeout=30)
        status.raise_for_status()
        backlog = status.json()["prediction_log_backlog"] + status.json().get(
            "shadow_log_backlog", 0
        )
        if backlog == 0 or time.monotonic() - started > timeout:
            return {
                "backlog_after_run": backlog,
                "drain_seconds": round(time.monotonic() - started, 2),
            }
        time.sleep(0.2)


# --- load ------------------------------------------------------------------------------------
class Stream:
    """The transactions the load sends, in time order, continuing the stack's simulation
    (see ``CLONES``): position i is clone ``i % CLONES`` of transaction ``i // CLONES``.

    A cursor hands each scorer run transactions later than the previous run's, so customer
    states only move forward. Past the end the stream starts again a lap later (every
    timestamp shifted by its span), when the terminal features have expired.
    """

    def __init__(self, after: pd.Timestamp, path: Path):
        from fraudops.data.simulator import simulate

        start = (after + pd.Timedelta(days=1)).date()
        tx = simulate(
            customers=CUSTOMERS, terminals=TERMINALS, days=STREAM_DAYS, seed=SEED, start_date=start
        )
        self.epoch = (tx[c.TIMESTAMP].astype("int64") // 10**9).to_numpy()
        self.customer = tx[c.CUSTOMER_ID].to_numpy()
        self.terminal = tx[c.TERMINAL_ID].to_numpy()
        self.amount = tx[c.AMOUNT].to_numpy()
        self.fraud_rate = float(tx[c.IS_FRAUD].mean())
        self.span = int(self.epoch[-1] - self.epoch[0]) + 86_400
        self.path = path
        self.cursor = 0
        columns = zip(self.epoch, self.customer, self.terminal, self.amount, strict=True)
        path.write_text("".join(f"{t}\t{cu}\t{te}\t{a:.2f}\n" for t, cu, te, a in columns))

    def __len__(self) -> int:
        return len(self.epoch) * CLONES

    def transaction(self, index: int, run: str) -> dict[str, Any]:
        original, clone = divmod(index, CLONES)
        lap, i = divmod(original, len(self.epoch))
        at = datetime.fromtimestamp(int(self.epoch[i]) + lap * self.span, UTC)
        customer = str(self.customer[i]) + (f"-{clone:03d}" if clone else "")
        return {
            "transaction_id": f"bench-{run}-{index}",
            "timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "customer_id": customer,
            "terminal_id": str(self.terminal[i]),
            "amount": float(self.amount[i]),
        }

    def advance(self, used: int) -> None:
        self.cursor += used

    def describe(self) -> dict[str, Any]:
        return {
            "customers": CUSTOMERS * CLONES,
            "terminals": TERMINALS,
            "stream": f"simulate(seed={SEED}) continued for {STREAM_DAYS} days after the "
            f"training data, {CUSTOMERS} customers x {CLONES} clones: {len(self)} "
            f"transactions, fraud rate {self.fraud_rate:.3f}",
            "scorer_transactions_sent": self.cursor,
            "terminal_features_fresh": self.cursor <= len(self),  # no second lap
        }


def clone_customer_states(values: dict[str, str]) -> int:
    """Give every clone its original's materialized ``customer_state``, as a bigger
    population's materialization would; returns the rows written."""
    from tests.integration.conftest import environment

    with environment(values):
        from fraudops.core.settings import get_settings
        from fraudops.features.realtime import state_store

        states = pd.read_parquet(get_settings().offline_dir / "features" / "customer_state.parquet")
        clones = pd.concat(
            [
                states.assign(**{c.CUSTOMER_ID: states[c.CUSTOMER_ID] + f"-{r:03d}"})
                for r in range(1, CLONES)
            ],
            ignore_index=True,
        )
        return state_store(get_settings()).seed(clones.to_dict("records"))


def run_load(
    server: Server,
    concurrency: int,
    seconds: float,
    stream: Stream,
    run: str,
    advance: bool,
    hot_customer: str = "",
) -> dict[str, Any]:
    """``concurrency`` keep-alive connections POSTing ``/score`` back to back for ``seconds``,
    from a second process, sending the stream from its cursor; moves the cursor past what
    was sent when ``advance`` (the scorer's runs; the no-op's runs send the same ones).
    ``hot_customer``: every transaction is that customer's instead."""
    import multiprocessing

    import numpy as np

    job = LoadJob(
        server.url,
        concurrency,
        seconds,
        str(stream.path),
        stream.cursor,
        stream.span,
        run,
        API_KEY,
        hot_customer,
    )
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no shared GIL
    with context.Pool(1) as pool:
        cpu_before = server.worker_cpu_seconds()
        done = pool.apply(generate_load, (job,))
        cpu = server.worker_cpu_seconds() - cpu_before
    if advance:
        stream.advance(done.sent)
    latency = np.frombuffer(done.latencies_ms, dtype=np.float64)
    if len(latency) == 0:
        raise RuntimeError(f"{server.name}: no request completed ({done.errors})")
    ok = len(latency)
    return {
        "concurrency": concurrency,
        "seconds": round(done.seconds, 2),
        "requests": ok,
        "failed": done.failed,
        "errors": done.errors,
        "requests_per_s": round(ok / done.seconds, 1),
        "p50_ms": round(float(np.percentile(latency, 50)), 3),
        "p90_ms": round(float(np.percentile(latency, 90)), 3),
        "p99_ms": round(float(np.percentile(latency, 99)), 3),
        "mean_ms": round(float(latency.mean()), 3),
        "max_ms": round(float(latency.max()), 3),
        # Little's law: concurrency = throughput x mean latency, when the clock is right
        "littles_law_concurrency": round(ok / done.seconds * float(latency.mean()) / 1000, 2),
        "server_cpu_ms_per_request": round(1000 * cpu / ok, 3),
        "load_generator_cpu_ms_per_request": round(1000 * done.cpu_seconds / ok, 3),
    }


@dataclass(frozen=True)
class LoadJob:
    url: str
    concurrency: int
    seconds: float
    stream_path: str
    offset: int
    span: int
    run: str
    api_key: str
    hot_customer: str = ""  # when set, requests come in bursts of one customer's (contended)


@dataclass(frozen=True)
class LoadDone:
    latencies_ms: bytes  # float64 of each completed request (status 200)
    failed: int
    errors: dict[str, int]
    sent: int
    seconds: float
    cpu_seconds: float


def generate_load(job: LoadJob) -> LoadDone:
    """The load generator (runs in its own process): asyncio, raw HTTP/1.1 keep-alive.

    Not wrk: on this machine wrk's latency histogram breaks Little's law (at one connection
    a mean latency 3x the time between requests), while this client's agrees with it."""
    import asyncio
    import time as clock

    import numpy as np

    rows = [line.split("\t") for line in Path(job.stream_path).read_text().splitlines()]
    host, port = job.url.removeprefix("http://").split(":")
    head = (
        f"POST /score HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {job.api_key}\r\nContent-Length: "
    ).encode()
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0

    def body(index: int) -> bytes:
        original, clone = divmod(index, CLONES)
        lap, i = divmod(original, len(rows))
        epoch, customer, terminal, amount = rows[i]
        at = clock.strftime("%Y-%m-%dT%H:%M:%SZ", clock.gmtime(int(epoch) + lap * job.span))
        customer = f"{customer}-{clone:03d}" if clone else customer
        if job.hot_customer:  # bursts of HOT_BURST transactions of one new customer
            customer = f"{job.hot_customer}-{index // HOT_BURST}"
        return (
            f'{{"transaction":{{"transaction_id":"bench-{job.run}-{index}","timestamp":"{at}",'
            f'"customer_id":"{customer}","terminal_id":"{terminal}","amount":{amount}}}}}'
        ).encode()

    async def connection(stop: float) -> None:
        nonlocal sent
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while clock.perf_counter() < stop:
                payload = body(job.offset + sent)
                sent += 1
                started = clock.perf_counter()
                writer.write(head + b"%d\r\n\r\n" % len(payload) + payload)
                header = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                lines = header.split(b"\r\n")
                length = next(int(x[15:]) for x in lines if x[:15].lower() == b"content-length:")
                await reader.readexactly(length)
                status = lines[0].split(b" ")[1].decode()
                if status == "200":
                    latencies.append((clock.perf_counter() - started) * 1000)
                else:
                    errors[status] = errors.get(status, 0) + 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
        finally:
            writer.close()

    async def main() -> float:
        started = clock.perf_counter()
        stop = started + job.seconds
        await asyncio.gather(*(connection(stop) for _ in range(job.concurrency)))
        return clock.perf_counter() - started

    cpu = clock.process_time()
    seconds = asyncio.run(main())
    return LoadDone(
        np.asarray(latencies, dtype=np.float64).tobytes(),
        sum(errors.values()),
        errors,
        sent,
        seconds,
        clock.process_time() - cpu,
    )


def batch_bodies(stream: Stream, count: int, run: str) -> list[bytes]:
    """``count`` request bodies of ``BATCH_SIZE`` consecutive transactions of the stream,
    from its cursor (not moved: the caller advances it for the scorer)."""
    bodies = []
    for b in range(count):
        first = stream.cursor + b * BATCH_SIZE
        batch = [stream.transaction(first + i, run) for i in range(BATCH_SIZE)]
        bodies.append(json.dumps({"transactions": batch}).encode())
    return bodies


def run_batches(server: Server, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    """POST the bodies from ``concurrency`` client threads; transactions scored per second."""
    import httpx

    pending = list(bodies)
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []

    def client() -> None:
        headers = {**auth(), "content-type": "application/json"}
        with httpx.Client(timeout=120, headers=headers) as http:
            while True:
                with lock:
                    if not pending:
                        return
                    body = pending.pop()
                sent = time.perf_counter()
                response = http.post(f"{server.url}/score_batch", content=body)
                elapsed = time.perf_counter() - sent
                with lock:
                    latencies.append(elapsed)
                    if response.status_code != 200:
                        failures.append(f"{response.status_code}: {response.text[:200]}")
                    elif len(response.json()["results"]) != BATCH_SIZE:
                        failures.append("wrong number of results")

    cpu_before = server.worker_cpu_seconds()
    started = time.perf_counter()
    workers = [threading.Thread(target=client) for _ in range(concurrency)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    cpu = server.worker_cpu_seconds() - cpu_before
    scored = BATCH_SIZE * (len(bodies) - len(failures))
    latencies.sort()
    return {
        "concurrency": concurrency,
        "batches": len(bodies),
        "batch_size": BATCH_SIZE,
        "failed": len(failures),
        "first_failure": failures[0] if failures else None,
        "seconds": round(elapsed, 2),
        "transactions_per_s": round(scored / elapsed, 1),
        "batch_p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "batch_max_ms": round(1000 * latencies[-1], 1),
        "server_cpu_ms_per_transaction": round(1000 * cpu / max(scored, 1), 4),
    }


# --- stack -----------------------------------------------------------------------------------
@contextmanager
def prediction_database(kind: str) -> Iterator[tuple[str | None, str]]:
    """(URL, description) of the prediction log: a PostgreSQL database created for this run
    and dropped after it, or None for the embedded SQLite default."""
    if kind == "sqlite":
        yield None, "SQLite (embedded default, under the scratch data directory)"
        return
    import sqlalchemy as sa

    name = f"fraudops_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(POSTGRES_URL).set(database=name)
    try:
        yield url.render_as_string(hide_password=False), f"PostgreSQL database {name} (dropped)"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def logged_predictions(values: dict[str, str]) -> dict[str, Any]:
    """Rows in the prediction log by decision (what the load exercised)."""
    import sqlalchemy as sa

    from tests.integration.conftest import environment

    with environment(values):
        from fraudops.core.settings import get_settings

        engine = sa.create_engine(get_settings().resolved_database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("select decision, count(*) from predictions group by decision")
            ).all()
    finally:
        engine.dispose()
    by_decision = {str(decision): int(count) for decision, count in rows}
    return {"rows": sum(by_decision.values()), "by_decision": by_decision}


def machine() -> dict[str, Any]:
    import bentoml
    import feast
    import lightgbm
    import pydantic

    cpu_model = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    return {
        "platform": platform.platform(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "bentoml": bentoml.__version__,
        "pydantic": pydantic.__version__,
        "feast": feast.__version__,
        "lightgbm": lightgbm.__version__,
    }


# --- comparison ------------------------------------------------------------------------------
def compare(noop: dict[str, Any], scorer: dict[str, Any]) -> dict[str, Any]:
    p50 = scorer["p50_ms"] / noop["p50_ms"]
    p99 = scorer["p99_ms"] / noop["p99_ms"]
    throughput = scorer["requests_per_s"] / noop["requests_per_s"]
    checks = {
        "p50": p50 <= GOALS["p50_ratio_max"],
        "p99": p99 <= GOALS["p99_ratio_max"],
        "throughput": throughput >= GOALS["throughput_ratio_min"],
        "no_failed_requests": noop["failed"] == 0 and scorer["failed"] == 0,
    }
    return {
        "p50_ratio": round(p50, 3),
        "p99_ratio": round(p99, 3),
        "throughput_ratio": round(throughput, 3),
        "passed": checks,
        "within_goal": all(checks.values()),
    }


def run_benchmark(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    import redis

    from tests.integration.conftest import prepare_trained_environment

    sizes = QUICK if args.quick else FULL
    client = redis.Redis.from_url(args.redis_url)
    client.flushdb()
    try:
        with prediction_database(args.database) as (db_url, db_description):
            values = {
                "FRAUDOPS_DATA_DIR": str(scratch / "data"),
                "FRAUDOPS_ONLINE_STORE": "redis",
                "FRAUDOPS_REDIS_URL": args.redis_url,
                "FRAUDOPS_API_KEY": API_KEY,
                **({"FRAUDOPS_DATABASE_URL": db_url} if db_url else {}),
            }
            logger.info("preparing the stack: simulate, build, materialize, train, promote")
            started = time.perf_counter()
            tx = prepare_trained_environment(values, seed=SEED)
            stream = Stream(tx[c.TIMESTAMP].max(), scratch / "stream.tsv")
            cloned = clone_customer_states(values)
            prepared_s = time.perf_counter() - started
            with (
                bentoml_serve("noop", NOOP_TARGET, REPO, values, scratch / "noop.log") as noop,
                bentoml_serve(
                    "scorer", SCORER_TARGET, args.scorer_root, values, scratch / "scorer.log"
                ) as scorer,
            ):
                check_answers(noop, stream.transaction(0, "check"))
                first = check_answers(scorer, stream.transaction(0, "check"))
                stream.advance(1)
                single = measure_single(noop, scorer, stream, sizes, args.concurrency)
                references = (
                    measure_references(noop, stream, sizes, values, scratch)
                    if args.references and 1 in args.concurrency
                    else None
                )
                contended = (
                    measure_contended(scorer, stream, sizes, max(args.concurrency))
                    if max(args.concurrency) > 1
                    else None
                )
                batch = measure_batch(noop, scorer, stream, sizes)
                drained = wait_for_log_backlog(scorer)
            time.sleep(1.0)  # the log writer's last flush at shutdown
            logged = logged_predictions(values)
    finally:
        client.flushdb()
    return {
        "setup": {
            "prepare_seconds": round(prepared_s, 1),
            "online_store": f"Redis {args.redis_url} (fast path, Feast's key format)",
            "prediction_log": db_description,
            "model_registry": "MLflow on SQLite (scratch data directory)",
            "model_version": first["model_version"],
            "scorer_root": str(args.scorer_root),
            "load": {**stream.describe(), "clone_states_written": cloned},
            "load_generator": "asyncio HTTP/1.1 keep-alive client in its own process, one "
            "connection per unit of concurrency, requests back to back (generate_load)",
            "score_runs": f"per service and concurrency: {sizes['warmup_s']} s warm-up, then "
            f"{sizes['rounds']} x {sizes['round_s']} s alternated with the other service; "
            "medians over rounds",
        },
        "single": single,
        "references": references,
        "contended_customer": contended,
        "batch": batch,
        "prediction_log_final": {**logged, **drained},
    }


def run_shadow_benchmark(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """``--shadow``: the scorer with shadow scoring against the same scorer without, on
    one stack with a challenger beside the champion."""
    import redis

    from fraudops.core.settings import get_settings
    from fraudops.model.training import train
    from tests.integration.conftest import (
        TRAIN_START,
        environment,
        prepare_trained_environment,
    )

    sizes = QUICK if args.quick else FULL
    client = redis.Redis.from_url(args.redis_url)
    client.flushdb()
    try:
        with prediction_database(args.database) as (db_url, db_description):
            values = {
                "FRAUDOPS_DATA_DIR": str(scratch / "data"),
                "FRAUDOPS_ONLINE_STORE": "redis",
                "FRAUDOPS_REDIS_URL": args.redis_url,
                "FRAUDOPS_API_KEY": API_KEY,
                **({"FRAUDOPS_DATABASE_URL": db_url} if db_url else {}),
            }
            logger.info("preparing the stack: simulate, build, materialize, train, promote")
            started = time.perf_counter()
            tx = prepare_trained_environment(values, seed=SEED)
            logger.info("training a second model as @challenger")
            with environment(values):
                report = train(
                    get_settings(),
                    train_start=TRAIN_START,
                    train_days=7,
                    delay_days=7,
                    test_days=7,
                    seed=SEED + 1,
                )
                challenger = report.model_version
            stream = Stream(tx[c.TIMESTAMP].max(), scratch / "stream.tsv")
            cloned = clone_customer_states(values)
            prepared_s = time.perf_counter() - started
            shadow_values = {**values, "FRAUDOPS_SHADOW": "true"}
            with (
                bentoml_serve(
                    "scorer", SCORER_TARGET, args.scorer_root, values, scratch / "scorer.log"
                ) as off,
                bentoml_serve(
                    "shadow",
                    SCORER_TARGET,
                    args.scorer_root,
                    shadow_values,
                    scratch / "shadow.log",
                ) as on,
            ):
                first = check_answers(off, stream.transaction(0, "check"))
                check_answers(on, stream.transaction(1, "check"))
                stream.advance(2)
                single: dict[str, Any] = {}
                for concurrency in args.concurrency:
                    rounds = alternate([off, on], concurrency, stream, sizes, off, also=on)
                    level: dict[str, Any] = {n: summarize(runs) for n, runs in rounds.items()}
                    level["shadow_vs_off"] = shadow_versus(rounds["scorer"], rounds["shadow"])
                    single[f"concurrency_{concurrency}"] = level
                wait_for_log_backlog(on)
            time.sleep(1.0)  # the log writers' last flush at shutdown
            logged = shadow_rows(values)
    finally:
        client.flushdb()
    return {
        "setup": {
            "prepare_seconds": round(prepared_s, 1),
            "online_store": f"Redis {args.redis_url} (fast path, Feast's key format)",
            "prediction_log": db_description,
            "model_version": first["model_version"],
            "challenger_version": challenger,
            "scorer_root": str(args.scorer_root),
            "load": {**stream.describe(), "clone_states_written": cloned},
            "score_runs": f"per service and concurrency: {sizes['warmup_s']} s warm-up, then "
            f"{sizes['rounds']} x {sizes['round_s']} s alternated (shadow off, shadow on); "
            "medians over rounds; each run sends transactions later than the previous one's",
        },
        "single": single,
        "logged": logged,
    }


def shadow_versus(off_runs: list[dict[str, Any]], on_runs: list[dict[str, Any]]) -> dict[str, Any]:
    off, on = summarize(off_runs), summarize(on_runs)
    ratio = on["requests_per_s"] / off["requests_per_s"]
    checks = {
        "throughput": ratio >= SHADOW_GOAL["throughput_ratio_min"],
        "no_failed_requests": off["failed"] == 0 and on["failed"] == 0,
    }
    return {
        "throughput_ratio": round(ratio, 3),
        "p50_ratio": round(on["p50_ms"] / off["p50_ms"], 3),
        "p99_ratio": round(on["p99_ms"] / off["p99_ms"], 3),
        # CPU per request is steadier than throughput when other work shares the machine
        "server_cpu_per_request_ratio": round(
            on["server_cpu_ms_per_request"] / off["server_cpu_ms_per_request"], 3
        ),
        "per_round_throughput_ratio": [
            round(b["requests_per_s"] / a["requests_per_s"], 3)
            for a, b in zip(off_runs, on_runs, strict=True)
        ],
        "passed": checks,
        "within_goal": all(checks.values()),
    }


def shadow_rows(values: dict[str, str]) -> dict[str, int]:
    """Prediction and shadow rows of the shadow scorer's transactions (one each)."""
    import sqlalchemy as sa

    from tests.integration.conftest import environment

    with environment(values):
        from fraudops.core.settings import get_settings

        engine = sa.create_engine(get_settings().resolved_database_url)
    counts = {}
    try:
        with engine.connect() as conn:
            for table in ("predictions", "shadow_predictions"):
                counts[table] = int(
                    conn.execute(
                        sa.text(
                            f"select count(*) from {table} "
                            "where transaction_id like 'bench-shadow-%'"
                        )
                    ).scalar_one()
                )
    finally:
        engine.dispose()
    return counts


def measure_single(
    noop: Server,
    scorer: Server,
    stream: Stream,
    sizes: dict[str, int],
    concurrencies: tuple[int, ...],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for concurrency in concurrencies:
        rounds = alternate([noop, scorer], concurrency, stream, sizes, scorer)
        level: dict[str, Any] = {name: summarize(runs) for name, runs in rounds.items()}
        level["scorer_vs_noop"] = versus(rounds["noop"], rounds["scorer"])
        out[f"concurrency_{concurrency}"] = level
    return out


def measure_contended(
    scorer: Server, stream: Stream, sizes: dict[str, int], concurrency: int
) -> dict[str, Any]:
    """What a contended customer waits: ``concurrency`` connections all sending one new
    customer's transactions, ``HOT_BURST`` of them, then the next customer's (bursts, as
    card testing sends them), against the same connections sending the stream's many
    customers, rounds alternated. A customer's commits run one after another in Redis
    (one script at a time) and nothing else waits: no lock, no retry."""
    rounds: dict[str, list[dict[str, Any]]] = {"many_customers": [], "one_customer": []}
    for r in range(sizes["rounds"]):
        for name in rounds:
            hot = f"bench-hot-{r}" if name == "one_customer" else ""
            rounds[name].append(
                run_load(scorer, concurrency, sizes["round_s"], stream, f"{name}-{r}", True, hot)
            )
    level: dict[str, Any] = {name: summarize(runs) for name, runs in rounds.items()}
    many, one = level["many_customers"], level["one_customer"]
    return {
        "what": f"{concurrency} connections: bursts of {HOT_BURST} transactions of one new "
        "customer at a time against many customers' transactions, rounds alternated",
        **level,
        "one_vs_many": {
            "p50_ratio": round(one["p50_ms"] / many["p50_ms"], 3),
            "p99_ratio": round(one["p99_ms"] / many["p99_ms"], 3),
            "throughput_ratio": round(one["requests_per_s"] / many["requests_per_s"], 3),
        },
    }


def measure_references(
    noop: Server, stream: Stream, sizes: dict[str, int], values: dict[str, str], scratch: Path
) -> dict[str, Any]:
    """At concurrency 1, the no-op against the floors of ``bench/noop_service.py`` that add
    one piece of the scorer's work each (``REFERENCES``): how much of the goals' budget
    that piece alone takes."""
    with ExitStack() as stack:
        servers = [noop]
        for name, target in REFERENCES.items():
            log_path = scratch / f"{name}.log"
            servers.append(stack.enter_context(bentoml_serve(name, target, REPO, values, log_path)))
            check_answers(servers[-1], stream.transaction(0, "check"))
        rounds = alternate(servers, 1, stream, sizes, None)
    level: dict[str, Any] = {name: summarize(runs) for name, runs in rounds.items()}
    for name in REFERENCES:
        level[f"{name}_vs_noop"] = versus(rounds["noop"], rounds[name])
    return {"concurrency_1": level}


def alternate(
    servers: list[Server],
    concurrency: int,
    stream: Stream,
    sizes: dict[str, int],
    scorer: Server | None,
    also: Server | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """After a warm-up each, ``rounds`` runs of every server in turn (so all see the same
    machine state); only the scorer's runs (and ``also``'s) move the stream's cursor."""
    rounds: dict[str, list[dict[str, Any]]] = {server.name: [] for server in servers}
    for server in servers:
        logger.info("%s c=%d: warm-up %d s", server.name, concurrency, sizes["warmup_s"])
        scoring = server is scorer or server is also
        run_load(server, concurrency, sizes["warmup_s"], stream, f"{server.name}-warm", scoring)
    for server in (scorer, also):
        if server is not None:
            wait_for_log_backlog(server)
    for r in range(sizes["rounds"]):
        for server in servers:
            tag = f"{server.name}-c{concurrency}-r{r}"
            scoring = server is scorer or server is also
            result = run_load(server, concurrency, sizes["round_s"], stream, tag, scoring)
            if scoring:  # its log inserts belong to its own run
                result["prediction_log"] = wait_for_log_backlog(server)
            shown = ("requests_per_s", "p50_ms", "p99_ms", "failed")
            logger.info("%s: %s", tag, {k: result[k] for k in shown})
            rounds[server.name].append(result)
    return rounds


def versus(noop_runs: list[dict[str, Any]], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`compare` of the medians, and of each round with the no-op's of the same turn."""
    verdict = compare(summarize(noop_runs), summarize(runs))
    each = [compare(n, s) for n, s in zip(noop_runs, runs, strict=True)]
    verdict["per_round"] = {
        ratio: [round_[ratio] for round_ in each]
        for ratio in ("p50_ratio", "p99_ratio", "throughput_ratio")
    }
    return verdict


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of the rates and percentiles; totals of counts; every round."""
    import numpy as np

    medians = (
        "requests_per_s",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "mean_ms",
        "server_cpu_ms_per_request",
    )
    return {
        "concurrency": runs[0]["concurrency"],
        "rounds": len(runs),
        **{key: round(float(np.median([run[key] for run in runs])), 3) for key in medians},
        "requests": sum(run["requests"] for run in runs),
        "failed": sum(run["failed"] for run in runs),
        "max_ms": max(run["max_ms"] for run in runs),
        "runs": runs,
    }


def measure_batch(
    noop: Server, scorer: Server, stream: Stream, sizes: dict[str, int]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for concurrency in (1, 2):
        level: dict[str, Any] = {}
        tag = f"batch-c{concurrency}"
        bodies = batch_bodies(stream, 1 + sizes["batches"], tag)  # the first one warms up
        for server in (noop, scorer):  # the same bodies
            logger.info("%s %s: %d batches of %d", server.name, tag, sizes["batches"], BATCH_SIZE)
            run_batches(server, bodies[:1], 1)
            level[server.name] = run_batches(server, bodies[1:], concurrency)
            logger.info(
                "%s %s: %.0f transactions/s",
                server.name,
                tag,
                level[server.name]["transactions_per_s"],
            )
        stream.advance(len(bodies) * BATCH_SIZE)
        level["scorer"]["prediction_log"] = wait_for_log_backlog(scorer)
        out[f"concurrency_{concurrency}"] = level
    levels = [level for level in out.values() if isinstance(level, dict)]
    best = max(level["scorer"]["transactions_per_s"] for level in levels)
    out["scorer_best_transactions_per_s"] = best
    out["within_goal"] = best >= GOALS["batch_transactions_per_s_min"] and all(
        level["scorer"]["failed"] == 0 for level in levels
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Load-test the scoring API against a no-op.")
    parser.add_argument("--quick", action="store_true", help="short runs: about 2 minutes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    parser.add_argument("--redis-url", default=REDIS_URL, help="a Redis DB this run may flush")
    parser.add_argument(
        "--database",
        choices=("postgresql", "sqlite"),
        default="postgresql",
        help=f"prediction log: a new database on {POSTGRES_URL.split('@')[-1]} "
        "(FRAUDOPS_TEST_POSTGRES_URL), or the embedded SQLite default",
    )
    parser.add_argument(
        "--scorer-root",
        type=Path,
        default=REPO,
        help="serve the scorer from this copy of the repository (to measure a change)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=list(CONCURRENCIES),
        help="connections for /score runs",
    )
    parser.add_argument(
        "--references",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the floors with one Redis round trip and one prediction, at "
        "concurrency 1 (about 90 s)",
    )
    parser.add_argument(
        "--shadow",
        action="store_true",
        help="instead: the scorer with FRAUDOPS_SHADOW=true (and a challenger) against "
        f"without, at concurrency 16 by default; written to {SHADOW_OUT.relative_to(REPO)}",
    )
    args = parser.parse_args()
    if args.shadow:
        if args.concurrency == list(CONCURRENCIES):
            args.concurrency = [16]
        if args.out == DEFAULT_OUT:
            args.out = SHADOW_OUT
    args.concurrency = tuple(args.concurrency)
    args.scorer_root = args.scorer_root.resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("feast", "mlflow", "alembic", "lightgbm", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if str(REPO) not in sys.path:  # the stack helpers live with the integration tests
        sys.path.insert(0, str(REPO))

    info = machine()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_service_") as scratch:
        if args.shadow:
            measured = run_shadow_benchmark(args, Path(scratch))
        else:
            measured = run_benchmark(args, Path(scratch))
    if args.shadow:
        verdicts = [level["shadow_vs_off"] for level in measured["single"].values()]
        write_result(
            args,
            {
                "benchmark": "service_shadow",
                "quick": args.quick,
                "run_at": datetime.now().astimezone().isoformat(timespec="seconds"),
                "total_seconds": round(time.perf_counter() - started, 1),
                "command": " ".join(["python", *sys.argv]),
                "goals": copy.deepcopy(SHADOW_GOAL),
                **measured,
                "all_within_goal": all(v["within_goal"] for v in verdicts),
                "machine": info,
            },
        )
        return
    single_ok = all(level["scorer_vs_noop"]["within_goal"] for level in measured["single"].values())
    result = {
        "benchmark": "service",
        "quick": args.quick,
        "run_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "total_seconds": round(time.perf_counter() - started, 1),
        "command": " ".join(["python", *sys.argv]),
        "goals": copy.deepcopy(GOALS),
        **measured,
        "all_within_goal": single_ok and measured["batch"]["within_goal"],
        "machine": info,
    }
    write_result(args, result)


def write_result(args: argparse.Namespace, result: dict[str, Any]) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")  # a reader never sees half a result
    tmp.write_text(text + "\n")
    os.replace(tmp, args.out)
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
