"""Benchmark: the offline side at 1x, 3x and 10x the Handbook's size, DuckDB and Spark.

    nice -n 10 python bench/bench_offline_scale.py --scales 1 [--engines duckdb,spark]
        [--out bench/results/offline_scale.json] [--data-dir /tmp/fraudops-offline-scale]

Sizes: 1x is the Handbook's (5,000 customers, 10,000 terminals, 183 days, ~1.75M
transactions), 3x and 10x multiply customers and terminals (10x: 50,000 and 100,000,
~17.5M transactions). For each scale and engine, each step runs in a child process (so the
measured tree is that step's alone; the simulation is not measured), while this process
samples the RSS of the child's whole process tree (Spark's JVM and Python workers included)
every 0.2 s:

1. ``build``: ``fraudops.features.build.build_from_offline_store`` (DuckDB: in parts of
   FRAUDOPS_OFFLINE_ROWS_PER_PART) or ``fraudops.features.spark_build.build_on_spark`` (Spark
   ``local[2]``). For Spark, every task's time from Spark's REST API: a stage of T task-
   seconds whose longest task takes m needs at least max(T / N, m) with N executors, which
   is the ``estimated_seconds_with_executors`` figure (Spark's scheduling and the shuffle's
   network are not in it: a lower bound).
2. ``read``: the training set of a 35-day window, ``get_historical_features(features=
   fraud_model_v1)`` through Feast's DuckDB or Spark offline store, as ``fraudops train``
   (the window's rows only; chunks of whole days of FRAUDOPS_OFFLINE_ROWS_PER_READ).
3. ``floor`` (DuckDB only): DuckDB sorting the transactions by customer and time into a
   parquet file, the least any build must do.

Goals (issue #23): both engines complete 10x; DuckDB's build at 10x within 12x its 1x time,
its peak memory under 8 GB, and so the training-set read's. The JSON says which were
measured and met. The data of a scale is simulated once and kept (``--data-dir``), and
``--steps``/``--engines`` run one step of one engine on it: e.g. the 10x read alone,
``--scales 10 --engines duckdb --steps read`` (after a 10x ``build``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("bench_offline_scale")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results" / "offline_scale.json"
HANDBOOK = {"customers": 5_000, "terminals": 10_000, "days": 183}
WINDOW_DAYS = 35
SPARK_MASTER = "local[2]"
SPARK_CONF = {"spark.sql.shuffle.partitions": "8", "spark.driver.memory": "6g"}
DUCKDB_10X_TIME_RATIO_GOAL = 12.0
DUCKDB_10X_PEAK_GB_GOAL = 8.0
GB = 1024**3


# --- the parent: data, children, memory ---------------------------------------------------
def prepare(scale: float, data_root: Path) -> tuple[Path, int]:
    """Simulated transactions for a scale, made once and kept (by the ingest writer)."""
    import pyarrow.parquet as pq

    path = data_root / f"{scale:g}x" / "offline" / "transactions.parquet"
    if not path.exists():
        from fraudops.data.ingest import write_parquet_atomic
        from fraudops.data.simulator import simulate

        started = time.perf_counter()
        tx = simulate(
            customers=round(HANDBOOK["customers"] * scale),
            terminals=round(HANDBOOK["terminals"] * scale),
            days=HANDBOOK["days"],
            seed=0,
        )
        write_parquet_atomic(tx, path)
        logger.info(
            "%gx: simulated %s transactions in %.0f s",
            scale,
            f"{len(tx):,}",
            time.perf_counter() - started,
        )
        del tx
    return path, pq.ParquetFile(path).metadata.num_rows


def tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


def run_child(
    step: str, engine: str, data_dir: Path, rows_per_read: int | None = None
) -> dict[str, Any]:
    """One step in a child process; its wall time, the tree's peak RSS, its own report."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDOPS_")}
    env.update(
        {
            "FRAUDOPS_DATA_DIR": str(data_dir),
            "FRAUDOPS_OFFLINE_STORE": engine,
            "FRAUDOPS_SPARK_MASTER": SPARK_MASTER,
            "FRAUDOPS_SPARK_CONF": json.dumps(SPARK_CONF),
        }
    )
    if rows_per_read:
        env["FRAUDOPS_OFFLINE_ROWS_PER_READ"] = str(rows_per_read)
    command = [sys.executable, __file__, "--child", step, "--engine", engine]
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(child.pid))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = child.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if child.returncode != 0:
        return {
            "completed": False,
            "returncode": child.returncode,
            "seconds": round(seconds, 1),
            "peak_rss_gb": round(peak / GB, 2),
        }
    report = json.loads(out.strip().splitlines()[-1])
    return {
        "completed": True,
        "seconds": round(seconds, 1),
        "peak_rss_gb": round(peak / GB, 2),
        **report,
    }


# --- the children ----------------------------------------------------------------------------
def child_build(engine: str) -> dict[str, Any]:
    from fraudops.core.settings import get_settings

    settings = get_settings()
    started = time.perf_counter()
    if engine == "duckdb":
        from fraudops.features.build import build_from_offline_store

        built = build_from_offline_store(settings, engine="duckdb")
        return {
            "inner_seconds": round(time.perf_counter() - started, 1),
            "rows": {name: rows for name, (_, rows) in built.items()},
        }
    from fraudops.features.spark_build import build_on_spark, spark_session

    spark = spark_session(settings)
    session_seconds = time.perf_counter() - started
    report = build_on_spark(settings, spark)
    inner = time.perf_counter() - started
    stages = spark_task_times(spark)
    spark.stop()
    return {
        "inner_seconds": round(inner, 1),
        "session_seconds": round(session_seconds, 1),
        "step_seconds": {k: round(v, 1) for k, v in report.seconds.items()},
        "parts": report.parts,
        "rows": {name: rows for name, (_, rows) in report.tables.items()},
        **executor_estimates(stages),
    }


def spark_task_times(spark: Any) -> list[dict[str, Any]]:
    """Per completed stage: its tasks' run times (s), from Spark's monitoring REST API."""
    import urllib.request

    base = f"{spark.sparkContext.uiWebUrl}/api/v1/applications/{spark.sparkContext.applicationId}"

    def get(path: str) -> Any:
        with urllib.request.urlopen(f"{base}{path}", timeout=30) as response:
            return json.load(response)

    stages = []
    for stage in get("/stages?status=complete"):
        tasks = get(f"/stages/{stage['stageId']}/{stage['attemptId']}/taskList?length=100000")
        stages.append(
            {
                "stage": stage["stageId"],
                "name": stage["name"][:80],
                "task_seconds": sorted((t.get("duration", 0) / 1000 for t in tasks), reverse=True),
            }
        )
    return sorted(stages, key=lambda s: s["stage"])


def executor_estimates(stages: list[dict[str, Any]]) -> dict[str, Any]:
    total = sum(sum(s["task_seconds"]) for s in stages)
    estimate = {
        str(n): round(
            sum(max(sum(s["task_seconds"]) / n, max(s["task_seconds"], default=0)) for s in stages),
            1,
        )
        for n in (1, 2, 8, 32, 128)
    }
    heavy = sorted(stages, key=lambda s: -sum(s["task_seconds"]))[:4]
    return {
        "task_seconds_total": round(total, 1),
        "estimated_seconds_with_executors": estimate,
        "heaviest_stages": [
            {
                "stage": s["stage"],
                "name": s["name"],
                "tasks": len(s["task_seconds"]),
                "task_seconds_total": round(sum(s["task_seconds"]), 1),
                "longest_tasks": [round(t, 1) for t in s["task_seconds"][:5]],
            }
            for s in heavy
        ],
    }


def child_read(engine: str) -> dict[str, Any]:
    """The training set of the last 35-day window, as ``fraudops train`` reads it: the
    window's labelled rows only, then the point-in-time read in chunks of whole days."""
    import pandas as pd

    from fraudops.core import contract as c
    from fraudops.core.settings import get_settings
    from fraudops.features.feast_store import apply_definitions, feature_service, get_store
    from fraudops.features.offline import day_chunks, offline_features
    from fraudops.model.training import labelled_history, read_labelled

    settings = get_settings()
    started = time.perf_counter()
    if engine == "spark":
        from fraudops.features.spark_build import spark_session

        spark_session(settings)
    session_seconds = time.perf_counter() - started
    end = labelled_history(settings, pd.Timestamp.now(tz="UTC")).last.floor("D")
    start = end - pd.Timedelta(days=WINDOW_DAYS)
    window = read_labelled(settings, start, end)
    store = get_store()
    apply_definitions(store)
    read_started = time.perf_counter()
    frame = offline_features(store, feature_service(store), window)
    return {
        "inner_seconds": round(time.perf_counter() - started, 1),
        "session_seconds": round(session_seconds, 1),
        "get_historical_features_seconds": round(time.perf_counter() - read_started, 1),
        "window": [start.date().isoformat(), end.date().isoformat()],
        "rows": len(frame),
        "rows_per_read": settings.offline_rows_per_read,
        "reads": len(day_chunks(window[c.TIMESTAMP], settings.offline_rows_per_read)),
    }


def child_floor(_: str) -> dict[str, Any]:
    import duckdb

    from fraudops.core.settings import get_settings

    settings = get_settings()
    out = settings.offline_dir / "floor_sorted.parquet"
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET temp_directory = '{settings.offline_dir}/.floor_spill'")
    con.execute(
        f"COPY (SELECT * FROM read_parquet('{settings.transactions_path}') "
        f"ORDER BY customer_id, timestamp) TO '{out}' (FORMAT parquet)"
    )
    seconds = time.perf_counter() - started
    out.unlink()
    return {"inner_seconds": round(seconds, 1)}


CHILD_STEPS = {"build": child_build, "read": child_read, "floor": child_floor}


# --- the run ----------------------------------------------------------------------------------
def goals(results: dict[str, Any]) -> dict[str, Any]:
    def step(scale: int, engine: str, name: str) -> dict[str, Any] | None:
        return results.get(f"{scale}x", {}).get(engine, {}).get(name)

    out: dict[str, Any] = {}
    for engine in ("duckdb", "spark"):
        build = step(10, engine, "build")
        out[f"{engine}_completes_10x"] = build["completed"] if build else "not measured"
    one, ten = step(1, "duckdb", "build"), step(10, "duckdb", "build")
    if one and ten and one["completed"] and ten["completed"]:
        ratio = ten["seconds"] / one["seconds"]
        out["duckdb_10x_over_1x_time"] = round(ratio, 2)
        out["duckdb_10x_time_within_12x"] = ratio <= DUCKDB_10X_TIME_RATIO_GOAL
        out["duckdb_10x_peak_under_8gb"] = ten["peak_rss_gb"] < DUCKDB_10X_PEAK_GB_GOAL
    else:
        out["duckdb_10x_time_within_12x"] = "not measured"
        out["duckdb_10x_peak_under_8gb"] = "not measured"
    read = step(10, "duckdb", "read")
    out["duckdb_10x_read_peak_under_8gb"] = (
        read["peak_rss_gb"] < DUCKDB_10X_PEAK_GB_GOAL if read else "not measured"
    )
    three = step(3, "duckdb", "build")
    if one and three and one["completed"] and three["completed"]:
        out["duckdb_3x_over_1x_time"] = round(three["seconds"] / one["seconds"], 2)
        out["duckdb_3x_over_1x_peak_rss"] = round(three["peak_rss_gb"] / one["peak_rss_gb"], 2)
    return out


def machine() -> dict[str, Any]:
    import duckdb
    import feast
    import psutil

    try:
        import pyspark

        spark_version = pyspark.__version__
    except ImportError:
        spark_version = None
    java = subprocess.run(["java", "-version"], capture_output=True, text=True)
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / GB, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "feast": feast.__version__,
        "pyspark": spark_version,
        "java": (java.stderr.splitlines() or [""])[0],
        "spark_master": SPARK_MASTER,
        "spark_conf": SPARK_CONF,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="The offline side at 1x, 3x and 10x.")
    parser.add_argument("--scales", default="1", help="comma-separated, e.g. 1,3,10 (0.05: a try)")
    parser.add_argument("--engines", default="duckdb,spark")
    parser.add_argument("--steps", default="floor,build,read")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/fraudops-offline-scale"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--rows-per-read",
        type=int,
        help="FRAUDOPS_OFFLINE_ROWS_PER_READ for the read step (default: the setting's); "
        "the result is kept as read@rows_per_read=N, e.g. 1000000000 for the window at once",
    )
    parser.add_argument("--child", choices=sorted(CHILD_STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # a measured step: its report is the last line of stdout
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        print(json.dumps(CHILD_STEPS[args.child](args.engine)))
        return

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    results: dict[str, Any] = (
        json.loads(args.out.read_text()).get("results", {}) if args.out.exists() else {}
    )
    meta = machine()
    for scale in (float(s) for s in args.scales.split(",")):
        path, rows = prepare(scale, args.data_dir)
        data_dir = path.parents[1]
        entry = results.setdefault(f"{scale:g}x", {})
        entry.update(
            {
                **{k: round(v * (scale if k != "days" else 1)) for k, v in HANDBOOK.items()},
                "transactions": rows,
            }
        )
        for engine in args.engines.split(","):
            for step in args.steps.split(","):
                if step == "floor" and engine != "duckdb":
                    continue
                logger.info("%gx %s %s ...", scale, engine, step)
                load = [round(x, 2) for x in os.getloadavg()]
                result = run_child(step, engine, data_dir, args.rows_per_read)
                result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                result["load_average_before"] = load
                key = (
                    f"{step}@rows_per_read={args.rows_per_read}"
                    if (step == "read" and args.rows_per_read)
                    else step
                )
                entry.setdefault(engine, {})[key] = result
                logger.info("%gx %s %s: %s", scale, engine, step, json.dumps(result)[:400])
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(
                    json.dumps(
                        {"machine": meta, "results": results, "goals": goals(results)}, indent=2
                    )
                    + "\n"
                )
    print(json.dumps(goals(results), indent=2))


if __name__ == "__main__":
    main()
