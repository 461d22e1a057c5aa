"""Benchmark: the Handbook-size simulation (5,000 customers, 10,000 terminals, 183 days).

Run it::

    python bench/bench_simulator.py [--out bench/results/simulator.json] [--runs 2]

Times ``fraudops.data.simulator.simulate`` (best of ``--runs``), prints the result as JSON and
writes it to ``--out``. The goal is well under 30 s on a 2-core machine. To tell a slow
machine from a slow simulator, the same run also times a floor: drawing the random columns
for the same number of rows, sorting them and materialising the same DataFrame shape, which
any implementation has to do; ``seconds_over_floor`` is the ratio.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fraudops.core.contract import FRAUD_SCENARIO, IS_FRAUD, FraudScenario
from fraudops.data.simulator import simulate

logger = logging.getLogger("bench_simulator")

GOAL_SECONDS = 30
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "simulator.json"


def floor_seconds(n: int) -> float:
    """Seconds to draw, sort and materialise ``n`` rows of the output's shape."""
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    ts = rng.integers(0, 183 * 86_400, size=n) * 1_000_000_000
    order = np.argsort(ts, kind="stable")
    ids = np.char.add("tx_", np.char.zfill(np.arange(n).astype(np.str_), 9)).astype(object)
    entities = np.char.add("c_", np.arange(5000).astype(np.str_)).astype(object)
    timestamp = pd.to_datetime(ts[order], unit="ns", utc=True)
    pd.DataFrame(
        {
            "transaction_id": ids,
            "timestamp": timestamp,
            "customer_id": entities[rng.integers(0, 5000, size=n)],
            "terminal_id": entities[rng.integers(0, 5000, size=n)],
            "amount": np.round(rng.normal(50, 25, size=n)[order], 2),
            "is_fraud": rng.integers(0, 2, size=n).astype(np.int8),
            "label_timestamp": timestamp + pd.Timedelta(days=7),
            "fraud_scenario": rng.integers(0, 6, size=n).astype(np.int8),
        }
    )
    return time.perf_counter() - started


def run(customers: int, terminals: int, days: int, runs: int) -> dict[str, object]:
    timings = []
    df = pd.DataFrame()
    for i in range(runs):
        started = time.perf_counter()
        df = simulate(customers=customers, terminals=terminals, days=days, seed=0)
        timings.append(time.perf_counter() - started)
        logger.info("run %d/%d: %.2f s, %d transactions", i + 1, runs, timings[-1], len(df))
    seconds = min(timings)
    n = len(df)
    floor = floor_seconds(n)
    share = df[FRAUD_SCENARIO].value_counts(normalize=True)
    return {
        "benchmark": "simulator",
        "customers": customers,
        "terminals": terminals,
        "days": days,
        "transactions": n,
        "fraud_rate": round(float(df[IS_FRAUD].mean()), 6),
        "fraud_rate_by_scenario": {
            s.name: round(float(share.get(int(s), 0.0)), 6)
            for s in FraudScenario
            if s != FraudScenario.LEGITIMATE
        },
        "seconds": round(seconds, 3),
        "all_runs_seconds": [round(t, 3) for t in timings],
        "transactions_per_second": round(n / seconds),
        "goal_seconds": GOAL_SECONDS,
        "within_goal": seconds < GOAL_SECONDS,
        "floor_seconds": round(floor, 3),
        "seconds_over_floor": round(seconds / floor, 2),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pandas": pd.__version__,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Time the Handbook-size simulation.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    parser.add_argument("--runs", type=int, default=2, help="runs; the best one counts")
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--terminals", type=int, default=10000)
    parser.add_argument("--days", type=int, default=183)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    result = run(args.customers, args.terminals, args.days, max(1, args.runs))
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # Via a temporary file, so a reader never sees half a result.
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, args.out)
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
