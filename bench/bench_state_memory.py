"""Benchmark: the Redis memory one customer's real-time state takes, for sizing a cluster.

    python bench/bench_state_memory.py [--redis-url redis://127.0.0.1:6379/10]

Commits 30 days of a Handbook-like customer (``--per-day`` transactions a day, default
3.5: the Handbook's simulator gives 1-7) through the state store, keeps each result for
retries as the scorer does (a result of the size the API returns for a review, with three
reasons, for one transaction in seven; approvals carry none), then reads ``MEMORY USAGE``
of the customer's keys: its state (history and
statistics) and the records kept for retries (``FRAUDOPS_IDEMPOTENCY_TTL_SECONDS``,
default the 7-day label delay). The floor is the same history as raw bytes (8-byte time,
8-byte amount, terminal id), measured in the same run. Writes
``bench/results/state_memory.json``. Uses (and flushes) only the given Redis DB.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fraudops.features import maths as f  # noqa: E402
from fraudops.features.realtime import Commit, RedisStateStore  # noqa: E402

T0 = 1_780_000_000_000_000  # µs, 2026-05-28
RESULT = {  # ScoreResult.stored() of a review
    "fraud_probability": 0.4182736451,
    "decision": "review",
    "reasons": [
        {"feature": "terminal_risk_28d", "value": 0.31, "contribution": 1.234567},
        {"feature": "tx_amount", "value": 182.25, "contribution": 0.87654},
        {"feature": "customer_amount_zscore", "value": 2.5, "contribution": 0.5},
    ],
    "model_version": "12",
    "degraded": False,
    "latency_ms": 1.8,
    "degraded_reasons": [],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/10")
    parser.add_argument("--per-day", type=float, default=3.5)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/state_memory.json")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis_url)
    client.flushdb()
    store = RedisStateStore(client, "fraudops", ttl_seconds=7 * 86_400)
    rng = np.random.default_rng(0)
    days = 30
    per_customer = int(args.per_day * days)
    try:
        for k in range(args.customers):
            times = np.sort(rng.integers(T0, T0 + days * f.DAY_US, per_customer))
            commits = [
                Commit(
                    f"tx-{k:05d}-{i:06d}",
                    f"C{k:06d}",
                    f"T{rng.integers(0, 10_000):06d}",
                    round(float(rng.gamma(2, 30)), 2),
                    int(t),
                )
                for i, t in enumerate(times)
            ]
            store.commit(commits)
            approve = {**RESULT, "decision": "approve", "reasons": []}
            store.save_results(
                (c, RESULT if i % 7 == 0 else approve)  # reviews: 1 in 7
                for i, c in enumerate(commits)
            )
        state = [store.state_bytes(f"C{k:06d}") for k in range(args.customers)]
        records = []
        for k in range(args.customers):
            keys = client.keys(f"fraudops:{{c:C{k:06d}}}:tx:*")
            claims = [store.claim_key(key.decode().rsplit(":tx:", 1)[1]) for key in keys]
            records.append(
                sum(int(client.memory_usage(key, samples=0) or 0) for key in [*keys, *claims])
            )
        raw = per_customer * (8 + 8 + 7)
        kept_days = 7
        result = {
            "benchmark": "state_memory",
            "run_at": datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(["python", *sys.argv]),
            "redis": client.info("server")["redis_version"],
            "transactions_per_customer": per_customer,
            "state_bytes_per_customer_median": int(np.median(state)),
            "floor_raw_history_bytes": raw,
            "state_vs_floor": round(float(np.median(state)) / raw, 2),
            "retry_records_bytes_per_customer_30d": int(np.median(records)),
            "retry_records_bytes_per_customer_kept": int(np.median(records) * kept_days / days),
            "note": "retry records live for FRAUDOPS_IDEMPOTENCY_TTL_SECONDS (default 7 days); "
            "the 30-day figure keeps all, the 'kept' figure scales it to 7 days",
        }
        per_million = (
            (
                result["state_bytes_per_customer_median"]
                + result["retry_records_bytes_per_customer_kept"]
            )
            * 1e6
            / 2**30
        )
        result["gib_per_million_customers"] = round(per_million, 2)
    finally:
        client.flushdb()
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
