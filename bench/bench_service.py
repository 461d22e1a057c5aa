"""Benchmark: the scoring API under load, against a no-op BentoML service in the same run.

Run it from the repository root (Redis at 127.0.0.1:6379, only DB 9 is used and flushed
at start and end; PostgreSQL for the prediction log in a database of its own, created and
dropped; ``wrk`` on the PATH: ``apt-get install wrk``)::

    python bench/bench_service.py [--quick] [--out bench/results/service.json]
    python bench/bench_service.py --scorer-root /tmp/fraudops-copy   # measure a change first

1. A full stack as users run it: simulated data, features materialized into Redis, a
   LightGBM model trained, registered and promoted to @champion in MLflow (SQLite), and
   ``bentoml serve`` of ``service.service:FraudScorer`` logging predictions to PostgreSQL
   (``--database sqlite`` for the embedded default), with an API key.
2. The floor: ``bentoml serve bench.noop_service:NoopScorer``, the same routes, pydantic
   request and response models, workers, threads and API-key middleware, answering a
   constant score.
3. ``wrk`` (a second process) POSTs varied transactions to ``/score`` (300 customers,
   600 terminals, random amounts with a few large ones, timestamps increasing), at
   concurrency 1 and 16, the two services interleaved, same warm-up and duration. Goals
   at each concurrency: p50 within 1.3x and p99 within 1.5x of the no-op's, throughput at
   least 75 % of the no-op's, no failed request.
4. ``/score_batch`` with 1,000-transaction batches from an HTTP client: transactions/s,
   goal at least 5,000.

Also reported: the server worker's CPU time per request (less sensitive to other load on
the machine than latency), the prediction-log backlog after each run, and how many
predictions reached the database. Results are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger("bench_service")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results" / "service.json"
REDIS_URL = "redis://127.0.0.1:6379/9"  # this benchmark's own DB: flushed at start and end
POSTGRES_URL = os.environ.get(
    "FRAUDOPS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
API_KEY = "bench-key-not-a-secret"
SCORER_TARGET = "service.service:FraudScorer"
NOOP_TARGET = "bench.noop_service:NoopScorer"
CONCURRENCIES = (1, 16)
BATCH_SIZE = 1_000
GOALS = {"p50_ratio_max": 1.3, "p99_ratio_max": 1.5, "throughput_ratio_min": 0.75,
         "batch_transactions_per_s_min": 5_000}  # fmt: skip
FULL = {"warmup_s": 3, "duration_s": 15, "batches": 20}
QUICK = {"warmup_s": 2, "duration_s": 5, "batches": 5}
# The stack's simulated population (tests.integration.conftest.prepare_trained_environment).
CUSTOMERS, TERMINALS = 300, 600
# Each wrk run starts its timestamps this much after the previous run's start, and
# advances them this much per request: never reused, and a run of ~1,000 requests/s
# stays within its slot.
RUN_SLOT_S, STEP_S = 6 * 3600, 0.5

# wrk runs this per connection thread: varied transactions, a JSON summary at the end.
WRK_SCRIPT = r"""
local customers = tonumber(os.getenv("BENCH_CUSTOMERS"))
local terminals = tonumber(os.getenv("BENCH_TERMINALS"))
local start = tonumber(os.getenv("BENCH_START_EPOCH"))
local step = tonumber(os.getenv("BENCH_STEP_S"))
local run = os.getenv("BENCH_RUN")
local threads_total = tonumber(os.getenv("BENCH_THREADS"))
local headers = {["Content-Type"] = "application/json",
                 ["Authorization"] = "Bearer " .. os.getenv("BENCH_API_KEY")}
local counter = 0
local thread_id = 0
local next_id = 0

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
end

function init(args)
  thread_id = tonumber(wrk.thread:get("thread_id")) or 0
  math.randomseed(1000 + thread_id)
end

function request()
  counter = counter + 1
  local seq = counter * threads_total + thread_id
  local at = start + math.floor(seq * step)
  local amount = math.exp(math.random() * 5.0)
  if math.random() < 0.03 then amount = 200 + math.random() * 2800 end
  local body = string.format(
    '{"transaction":{"transaction_id":"bench-%s-%d-%d","timestamp":"%s",' ..
    '"customer_id":"c_%05d","terminal_id":"t_%05d","amount":%.2f}}',
    run, thread_id, counter, os.date("!%Y-%m-%dT%H:%M:%SZ", at),
    math.random(0, customers - 1), math.random(0, terminals - 1), amount)
  return wrk.format("POST", "/score", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "errors_connect": %d, ' ..
    '"errors_read": %d, "errors_write": %d, "errors_status": %d, "errors_timeout": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
"""


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
    bentoml = Path(sys.executable).with_name("bentoml")
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(bentoml), "serve", target, "--port", str(port), "--host", "127.0.0.1"],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Server(name, f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name}: bentoml serve exited:\n{server.log_tail()}")
            with suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
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


def check_answers(server: Server, start_epoch: float) -> dict[str, Any]:
    """One request, which must be scored normally (not degraded), before any load."""
    import httpx

    body = {"transaction": one_transaction("check", start_epoch, "c_00001", "t_00002", 25.0)}
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


def one_transaction(tx_id: str, epoch: float, customer: str, terminal: str, amount: float) -> dict:
    at = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"transaction_id": tx_id, "timestamp": at, "customer_id": customer,
            "terminal_id": terminal, "amount": round(amount, 2)}  # fmt: skip


def wait_for_log_backlog(server: Server, timeout: float = 120) -> dict[str, Any]:
    """Wait until the scorer's prediction log has written what it queued, so a run does not
    pay for the previous run's inserts; returns the drain time and the last status."""
    import httpx

    started = time.monotonic()
    while True:
        status = httpx.post(f"{server.url}/admin/status", json={}, headers=auth(), timeout=30)
        status.raise_for_status()
        backlog = status.json()["prediction_log_backlog"]
        if backlog == 0 or time.monotonic() - started > timeout:
            return {"backlog_after_run": backlog,
                    "drain_seconds": round(time.monotonic() - started, 2)}  # fmt: skip
        time.sleep(0.2)


# --- load ------------------------------------------------------------------------------------
@dataclass
class Clock:
    """Hands out timestamp ranges: every run's transactions are later than the last run's."""

    epoch: float

    def next_run(self) -> float:
        self.epoch += RUN_SLOT_S
        return self.epoch


def run_wrk(
    server: Server, concurrency: int, seconds: float, start_epoch: float, run: str, script: Path
) -> dict[str, Any]:
    threads = min(concurrency, os.cpu_count() or 1)
    env = {**os.environ, "BENCH_CUSTOMERS": str(CUSTOMERS), "BENCH_TERMINALS": str(TERMINALS),
           "BENCH_START_EPOCH": str(int(start_epoch)), "BENCH_STEP_S": str(STEP_S),
           "BENCH_RUN": run, "BENCH_THREADS": str(threads), "BENCH_API_KEY": API_KEY}  # fmt: skip
    command = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds:g}s",
               "--timeout", "10s", "-s", str(script), server.url]  # fmt: skip
    cpu_before = server.worker_cpu_seconds()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    cpu = server.worker_cpu_seconds() - cpu_before
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(v for k, v in raw.items() if k.startswith("errors_"))
    seconds_run = raw["duration_us"] / 1e6
    return {
        "concurrency": concurrency,
        "wrk_threads": threads,
        "seconds": round(seconds_run, 2),
        "requests": raw["requests"],
        "failed": errors,
        "errors": {k.removeprefix("errors_"): v for k, v in raw.items() if k.startswith("errors_")},
        "requests_per_s": round(raw["requests"] / seconds_run, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 3),
        "p90_ms": round(raw["p90_us"] / 1000, 3),
        "p99_ms": round(raw["p99_us"] / 1000, 3),
        "mean_ms": round(raw["mean_us"] / 1000, 3),
        "max_ms": round(raw["max_us"] / 1000, 3),
        "server_cpu_ms_per_request": round(1000 * cpu / max(raw["requests"], 1), 3),
    }


def batch_bodies(count: int, start_epoch: float, run: str, seed: int) -> list[bytes]:
    """``count`` request bodies of ``BATCH_SIZE`` transactions, times increasing."""
    import numpy as np

    rng = np.random.default_rng(seed)
    bodies = []
    for b in range(count):
        customers = rng.integers(0, CUSTOMERS, BATCH_SIZE)
        terminals = rng.integers(0, TERMINALS, BATCH_SIZE)
        amounts = np.exp(rng.random(BATCH_SIZE) * 5.0)
        base = start_epoch + b * BATCH_SIZE * STEP_S
        transactions = [
            one_transaction(f"bench-{run}-{b}-{i}", base + i * STEP_S, f"c_{customers[i]:05d}",
                            f"t_{terminals[i]:05d}", float(amounts[i]))
            for i in range(BATCH_SIZE)
        ]  # fmt: skip
        bodies.append(json.dumps({"transactions": transactions}).encode())
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
        from fraudops.settings import get_settings

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

    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "bentoml": bentoml.__version__,
        "pydantic": pydantic.__version__,
        "feast": feast.__version__,
        "lightgbm": lightgbm.__version__,
        "wrk": (wrk.stdout or wrk.stderr).splitlines()[0],
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
    script = scratch / "score.lua"
    script.write_text(WRK_SCRIPT)
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
            tx = prepare_trained_environment(values)
            prepared_s = time.perf_counter() - started
            clock = Clock(tx["timestamp"].max().timestamp() + 86_400)
            with (
                bentoml_serve("noop", NOOP_TARGET, REPO, values, scratch / "noop.log") as noop,
                bentoml_serve(
                    "scorer", SCORER_TARGET, args.scorer_root, values, scratch / "scorer.log"
                ) as scorer,
            ):
                check_answers(noop, clock.next_run())
                first = check_answers(scorer, clock.next_run())
                single = measure_single(noop, scorer, clock, sizes, script, args.concurrency)
                batch = measure_batch(noop, scorer, clock, sizes)
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
            "population": {"customers": CUSTOMERS, "terminals": TERMINALS},
            "warmup_seconds": sizes["warmup_s"],
            "duration_seconds": sizes["duration_s"],
        },
        "single": single,
        "batch": batch,
        "prediction_log_final": {**logged, **drained},
    }


def measure_single(
    noop: Server,
    scorer: Server,
    clock: Clock,
    sizes: dict[str, int],
    script: Path,
    concurrencies: tuple[int, ...],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for concurrency in concurrencies:
        level: dict[str, Any] = {}
        for server in (noop, scorer):  # interleaved: both see the same machine state
            tag = f"{server.name}-c{concurrency}"
            logger.info("%s: warm-up %d s, then %d s", tag, sizes["warmup_s"], sizes["duration_s"])
            run_wrk(server, concurrency, sizes["warmup_s"], clock.next_run(), f"w{tag}", script)
            if server is scorer:
                wait_for_log_backlog(server)
            result = run_wrk(
                server, concurrency, sizes["duration_s"], clock.next_run(), tag, script
            )
            if server is scorer:
                result["prediction_log"] = wait_for_log_backlog(server)
            logger.info("%s: %s", tag, {k: result[k] for k in ("requests_per_s", "p50_ms",
                                                               "p99_ms", "failed")})  # fmt: skip
            level[server.name] = result
        level["scorer_vs_noop"] = compare(level["noop"], level["scorer"])
        out[f"concurrency_{concurrency}"] = level
    return out


def measure_batch(
    noop: Server, scorer: Server, clock: Clock, sizes: dict[str, int]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for concurrency in (1, 2):
        level: dict[str, Any] = {}
        for server in (noop, scorer):
            tag = f"{server.name}-batch-c{concurrency}"
            logger.info("%s: %d batches of %d", tag, sizes["batches"], BATCH_SIZE)
            run_batches(server, batch_bodies(1, clock.next_run(), f"w{tag}", 1), 1)  # warm-up
            bodies = batch_bodies(sizes["batches"], clock.next_run(), tag, concurrency)
            level[server.name] = run_batches(server, bodies, concurrency)
            if server is scorer:
                level[server.name]["prediction_log"] = wait_for_log_backlog(server)
            logger.info("%s: %.0f transactions/s", tag, level[server.name]["transactions_per_s"])
        out[f"concurrency_{concurrency}"] = level
    best = max(level["scorer"]["transactions_per_s"] for level in out.values())
    out["scorer_best_transactions_per_s"] = best
    out["within_goal"] = best >= GOALS["batch_transactions_per_s_min"] and all(
        level["scorer"]["failed"] == 0 for level in out.values() if isinstance(level, dict)
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Load-test the scoring API against a no-op.")
    parser.add_argument("--quick", action="store_true", help="short runs: about 2 minutes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    parser.add_argument("--redis-url", default=REDIS_URL, help="a Redis DB this run may flush")
    parser.add_argument(
        "--database", choices=("postgresql", "sqlite"), default="postgresql",
        help=f"prediction log: a new database on {POSTGRES_URL.split('@')[-1]} "
        "(FRAUDOPS_TEST_POSTGRES_URL), or the embedded SQLite default",
    )  # fmt: skip
    parser.add_argument(
        "--scorer-root", type=Path, default=REPO,
        help="serve the scorer from this copy of the repository (to measure a change)",
    )  # fmt: skip
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=list(CONCURRENCIES),
        help="connections for /score runs",
    )  # fmt: skip
    args = parser.parse_args()
    args.concurrency = tuple(args.concurrency)
    args.scorer_root = args.scorer_root.resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("feast", "mlflow", "alembic", "lightgbm", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")
    if str(REPO) not in sys.path:  # the stack helpers live with the integration tests
        sys.path.insert(0, str(REPO))

    info = machine()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_service_") as scratch:
        measured = run_benchmark(args, Path(scratch))
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
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")  # a reader never sees half a result
    tmp.write_text(text + "\n")
    os.replace(tmp, args.out)
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
