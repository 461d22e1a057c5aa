"""Benchmark: the monitor over a day of Handbook-scale traffic, and the dashboard's pages
over 100,000 logged predictions, each against a floor measured in the same run.

    python bench/bench_monitoring.py [--quick] [--out bench/results/monitoring.json]

1. Monitor. Simulates Handbook-size traffic (5,000 customers, 10,000 terminals: about
   10,000 transactions a day) for 30 days, builds features, trains and promotes a model,
   scores the last day into the prediction log (point-in-time features, as the scorer
   logs them), ingests its labels, then times ``fraudops.monitoring.monitor.monitor`` over that
   day end to end (MLflow reference, database, Evidently drift and quality reports, HTML
   and JSON snapshots, Evidently workspace, summary rows), with a per-stage breakdown (the
   first run's Evidently stage includes importing Evidently), then a second run in the
   same process, as a scheduled monitor runs.
   Floor: reading the same window and computing scipy's Wasserstein distance of every
   feature against the reference, nothing else. Goal: < 30 s.
2. Dashboard. Seeds 100,000 predictions over 14 days, labels, 14 monitor runs and a
   registry with two versions (``tests/integration/test_dashboard.py``), then renders
   every page with Streamlit's AppTest over the whole 14 days (not the default last week):
   cold (data caches cleared, as on the first visit after the 60 s cache expires) and
   warm, median of 3. Floor: AppTest rendering a page
   with only a title. Goal: every page < 2 s cold.

``--quick`` shrinks both (500 customers; 20,000 predictions). Results are printed and
written as JSON (numbers, floors, goals, pass/fail, machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the seeding helpers live with the tests

logger = logging.getLogger("bench_monitoring")
DEFAULT_OUT = ROOT / "bench" / "results" / "monitoring.json"
MONITOR_GOAL_SECONDS = 30.0
PAGE_GOAL_SECONDS = 2.0
FULL = {"customers": 5000, "terminals": 10000, "predictions": 100_000, "days": 14}
QUICK = {"customers": 500, "terminals": 1000, "predictions": 20_000, "days": 7}
SIM_START = date(2026, 4, 1)
SIM_DAYS = 30
TRAIN_START = date(2026, 4, 9)  # 8 days of feature history, then 7 + 7 + 7 days


def environment(data_dir: Path) -> None:
    for key in [k for k in os.environ if k.startswith("FRAUDOPS_")]:
        del os.environ[key]
    os.environ["FRAUDOPS_DATA_DIR"] = str(data_dir)
    from fraudops.core.settings import get_settings

    get_settings.cache_clear()


# --- 1. the monitor --------------------------------------------------------------------------
def bench_monitor(data_dir: Path, sizes: dict[str, int]) -> dict[str, Any]:
    import numpy as np
    from scipy import stats

    from fraudops.core import contract as c
    from fraudops.core.db import create_db_engine
    from fraudops.core.settings import get_settings
    from fraudops.data.ingest import write_parquet_atomic
    from fraudops.data.labels import ingest_labels
    from fraudops.data.simulator import simulate
    from fraudops.features.build import build_from_offline_store
    from fraudops.features.feast_store import apply_definitions, get_store
    from fraudops.model.promotion import promote
    from fraudops.model.training import train
    from fraudops.monitoring.monitor import Window, load_reference, monitor, read_window
    from tests.integration.test_monitoring import chargebacks, log_predictions

    environment(data_dir)
    settings = get_settings()
    started = time.perf_counter()
    tx = simulate(
        customers=sizes["customers"],
        terminals=sizes["terminals"],
        days=SIM_DAYS,
        start_date=SIM_START,
        seed=7,
    )
    write_parquet_atomic(tx, settings.transactions_path)
    build_from_offline_store(settings)
    apply_definitions(get_store())
    train(settings, train_start=TRAIN_START, train_days=7, delay_days=7, test_days=7)
    promote(settings)
    last_day = datetime.combine(SIM_START + timedelta(days=SIM_DAYS - 1), datetime.min.time())
    day = Window(last_day, last_day + timedelta(days=1))
    inside = tx[(tx[c.TIMESTAMP] >= day.start) & (tx[c.TIMESTAMP] < day.end)]
    logged = log_predictions(settings, inside)
    ingest_labels(settings, chargebacks(inside, data_dir / "chargebacks.csv"))
    setup_s = time.perf_counter() - started
    logger.info("setup (simulate, build, train, promote, score %d) in %.0f s", logged, setup_s)

    marks: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    result = monitor(
        settings,
        day,
        workspace=data_dir / "evidently",
        stage=lambda text: marks.append((text, time.perf_counter())),
    )
    total = time.perf_counter() - t0
    stages = {}
    for (text, at), (_, after) in zip(marks, [*marks[1:], ("end", t0 + total)], strict=True):
        stages[text.split(",")[0].split(":")[0]] = round(after - at, 3)

    # A scheduled monitor (--every) imports Evidently once: time a second run in-process.
    t0 = time.perf_counter()
    monitor(settings, day, workspace=data_dir / "evidently")
    second = time.perf_counter() - t0

    reference = load_reference(settings)
    t0 = time.perf_counter()
    engine = create_db_engine(settings.resolved_database_url)
    frame = read_window(engine, day, reference.features)
    for name in reference.features:
        stats.wasserstein_distance(reference.frame[name].to_numpy(), frame[name].to_numpy())
    floor = time.perf_counter() - t0
    engine.dispose()
    return {
        "transactions_simulated": len(tx),
        "predictions_in_window": logged,
        "labelled_in_window": result.summary.labelled,
        "reference_rows": len(reference.frame),
        "features": len(reference.features),
        "setup_seconds": round(setup_s, 1),
        "monitor_seconds": round(total, 2),
        "stages_seconds": stages,
        "second_run_seconds": round(second, 2),
        "floor_read_and_wasserstein_seconds": round(floor, 3),
        "ratio_to_floor": round(total / floor, 1),
        "drift_share": result.summary.drift_share,
        "score_drift": result.summary.score_drift,
        "alerts": [a.kind for a in result.alerts],
        "goal_seconds": MONITOR_GOAL_SECONDS,
        "pass": total < MONITOR_GOAL_SECONDS and bool(np.isfinite(result.summary.roc_auc or 0)),
    }


# --- 2. the dashboard ------------------------------------------------------------------------
def bench_dashboard(data_dir: Path, sizes: dict[str, int], repeats: int = 3) -> dict[str, Any]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from tests.integration.test_dashboard import PAGES, SEED_END, seed_all

    t0 = time.perf_counter()
    seed_all(data_dir, sizes["predictions"], sizes["days"], runs=sizes["days"])
    seed_s = time.perf_counter() - t0
    environment(data_dir)
    app = str(ROOT / "dashboard" / "app.py")
    everything = (
        (SEED_END - timedelta(days=sizes["days"])).date(),
        (SEED_END - timedelta(days=1)).date(),
    )

    def floor() -> float:
        """A rerun of a page with only a title: AppTest's own cost per page."""
        at = AppTest.from_string("import streamlit as st\nst.title('floor')", default_timeout=60)
        at.run()
        t = time.perf_counter()
        at.run()
        return time.perf_counter() - t

    pages: dict[str, Any] = {}
    for file, title, *_ in PAGES.values():
        cold, warm = [], []
        for _ in range(repeats):
            at = AppTest.from_file(app, default_timeout=60)
            at.run()  # lands on the default page; switch_page needs one run first
            at.sidebar.date_input(key="time_range").set_value(everything)
            at.switch_page(file)
            st.cache_data.clear()
            t = time.perf_counter()
            at.run()
            cold.append(time.perf_counter() - t)
            t = time.perf_counter()
            at.run()
            warm.append(time.perf_counter() - t)
            if at.exception:
                raise RuntimeError(f"{file}: {[e.value for e in at.exception]}")
            if title == "Overview":  # the whole log is on the page, not the default week
                shown = {m.label: m.value for m in at.metric}["Predictions"]
                assert shown == f"{sizes['predictions']:,}", shown
        pages[title] = {
            "cold_seconds": round(statistics.median(cold), 3),
            "warm_seconds": round(statistics.median(warm), 3),
        }
        logger.info("%s: cold %.2f s, warm %.2f s", title, *pages[title].values())
    floor_s = statistics.median(floor() for _ in range(repeats))
    slowest = max(p["cold_seconds"] for p in pages.values())
    return {
        "predictions": sizes["predictions"],
        "days": sizes["days"],
        "monitor_runs": sizes["days"],
        "seed_seconds": round(seed_s, 1),
        "pages": pages,
        "floor_title_only_seconds": round(floor_s, 3),
        "slowest_cold_seconds": slowest,
        "goal_seconds_per_page": PAGE_GOAL_SECONDS,
        "pass": slowest < PAGE_GOAL_SECONDS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Smaller sizes, about a minute.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", choices=["monitor", "dashboard"], default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "feast", "streamlit"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "monitoring",
        "quick": args.quick,
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with tempfile.TemporaryDirectory(prefix="fraudops-bench-monitoring-") as tmp:
        if args.only in (None, "monitor"):
            result["monitor"] = bench_monitor(Path(tmp) / "monitor", sizes)
        if args.only in (None, "dashboard"):
            result["dashboard"] = bench_dashboard(Path(tmp) / "dashboard", sizes)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    result["pass"] = all(
        part["pass"] for key, part in result.items() if key in ("monitor", "dashboard")
    )
    result["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float))
    print(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
