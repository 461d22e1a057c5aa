"""A/B of each third-party private-API path against the library's public path, in one run.

Issue #22 item 4: a fast path that leans on a library's private names or wire format stays
only when it saves 10 % or more of the benchmark it was written for. Each section times
both ways in alternated rounds (medians over rounds), on the sizes of the benchmark's
``--quick`` run; run it on its own Redis DB (flushed at start and end)::

    python bench/prototypes/private_paths_ab.py --redis-url redis://127.0.0.1:6379/12 \
        [--rounds 7] [--only lightgbm,materialize,read,scorer_read,scorer] [--out ab.json]

Sections (what the private path is, and its benchmark):

- ``lightgbm``: ``fraudops.model.fraud_model``'s ctypes calls into LightGBM (``_LIB``, ``_handle``):
  the single-row FastConfig path against ``Booster.predict``, per call. (At 351c321 also
  the direct matrix call for a few rows.)
- ``materialize``: ``FastRedisWriter``'s bulk write of terminal_daily rows
  (bench_feature_store's materialization): hand-framed RESP and numpy-built protobuf
  values, against the same bytes through a redis-py pipeline, then Feast's own value
  converter, then Feast's key function. (At 351c321 also hiredis's reader, read through
  redis-py's ``_parser._reader``: bench/results/private_paths_before.json.)
- ``read``: ``FastRedisReader.read`` of one row (bench_feature_store's online read):
  hand-framed HMGETs against a redis-py pipeline of the same HMGETs. (At 351c321 also on
  a connection kept out of the pool, replies from hiredis's reader.)
- ``scorer_read``: the scorer's feature read of one transaction
  (``OnlineFeatures.compute``): Feast's Redis layout read in the state commit's round
  trip, against Feast's ``get_online_features`` after the commit.
- ``scorer``: ``ScoringCore.score`` in process on bench_service's stack, CPU per
  transaction, one transaction per call, with the model's single-row path against
  ``Booster.predict``. (At 351c321 also 16 per call, the direct matrix call.)
- (At 351c321 also ``sqlite``: ``FraudOpsOnlineStore``'s WAL pragmas set through Feast's
  private ``_get_conn``, against Feast's defaults.)
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

log = logging.getLogger("private_paths_ab")


def alternate(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, dict[str, Any]]:
    """Each variant once per round, in turn (one warm-up round first); each call returns
    its measure (lower is better). Medians, every round, and each variant against the first
    (``gain``: how much the first saves of the other's measure)."""
    for fn in variants.values():
        fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        order = list(variants.items())
        if r % 2:
            order.reverse()
        for name, fn in order:
            samples[name].append(fn())
    first = next(iter(variants))
    out: dict[str, dict[str, Any]] = {}
    for name, values in samples.items():
        median = statistics.median(values)
        out[name] = {"median": round(median, 4), "rounds": [round(v, 4) for v in values]}
        if name != first:
            base = statistics.median(samples[first])
            out[name]["first_saves_pct"] = round(100 * (1 - base / median), 1)
    return out


def per_call_us(fn: Callable[[int], object], calls: int) -> Callable[[], float]:
    def run() -> float:
        started = time.perf_counter()
        for i in range(calls):
            fn(i)
        return (time.perf_counter() - started) / calls * 1e6

    return run


def seconds_of(fn: Callable[[], object], before: Callable[[], object] | None = None):  # type: ignore[no-untyped-def]
    def run() -> float:
        if before:
            before()
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    return run


@contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


# --- lightgbm --------------------------------------------------------------------------------
def section_lightgbm(rounds: int) -> dict[str, Any]:
    """A booster of the scorer's shape (96 trees of 31 leaves on the service's 26 features)
    on synthetic rows; the scorer's calls: one row's raw score, one row's leaves (reasons),
    15 rows' raw scores (coalesced requests)."""
    import lightgbm as lgb

    from fraudops.model.fraud_model import FraudModel, IsotonicCalibrator, ModelMetadata

    rng = np.random.default_rng(0)
    features = 26
    x = rng.normal(size=(20_000, features))
    y = (x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + rng.normal(size=len(x)) > 1.5).astype(int)
    params = {"objective": "binary", "num_leaves": 31, "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=96)
    names = booster.feature_name()
    model = FraudModel(
        booster, IsotonicCalibrator((0.0, 1.0), (0.0, 1.0)), ModelMetadata("s", names, 0.5, 0.9)
    )
    rows = rng.normal(size=(1000, features))
    calls = 2000
    assert np.allclose(model.raw_score(rows[:1]), booster.predict(rows[:1], raw_score=True))
    return {
        "booster": {"trees": booster.num_trees(), "features": features, "num_leaves": 31},
        "one_row_raw_us": alternate(
            {
                "private_single_row_fastconfig": per_call_us(
                    lambda i: model._raw_one(rows[i % 1000]), calls
                ),
                "public_booster_predict": per_call_us(
                    lambda i: booster.predict(
                        rows[i % 1000 : i % 1000 + 1], raw_score=True, num_threads=1
                    ),
                    calls,
                ),
            },
            rounds,
        ),
        "one_row_leaves_us": alternate(
            {
                "private_single_row_fastconfig": per_call_us(
                    lambda i: model._leaves_one(rows[i % 1000]), calls
                ),
                "public_booster_predict": per_call_us(
                    lambda i: booster.predict(
                        rows[i % 1000 : i % 1000 + 1], pred_leaf=True, num_threads=1
                    ),
                    calls,
                ),
            },
            rounds,
        ),
    }


# --- Feast store on Redis ----------------------------------------------------------------------
def terminal_store(features_dir: Path, terminals: int, days: int) -> Any:
    from bench_feature_store import customer_state_table, prepare_store, terminal_daily_table

    daily = terminal_daily_table(terminals, days=days, seed=1)
    return prepare_store(features_dir, daily, customer_state_table(10, 10, seed=2)), daily


def public_hset_write(
    client: Any, layout: Any, spec: Any, frame: Any, values: str, keys: str
) -> None:
    """What ``FastRedisWriter.write`` writes, through a redis-py pipeline of HSETs:
    ``values`` 'numpy' (its serializers) or 'feast' (Feast's converter, one proto each);
    ``keys`` 'concat' (FeastRedisLayout.entity_keys) or 'feast' (Feast's key function)."""
    from feast.type_map import python_values_to_proto_values
    from google.protobuf.timestamp_pb2 import Timestamp

    from fraudops.adapters.feast import _event_time_ns, serialize_timestamps, serialize_values

    ids = frame[spec.join_key].tolist()
    if keys == "concat":
        entity_keys = layout.entity_keys(spec.join_key, ids, spec.join_key_type)
    else:
        entity_keys = [layout.entity_key(spec.join_key, v, spec.join_key_type) for v in ids]
    time_ns = _event_time_ns(frame[spec.timestamp_column], spec.timestamp_column)
    if values == "numpy":
        stamps = serialize_timestamps(time_ns)
        columns = [
            serialize_values(frame[n].to_numpy(), t)
            for n, t in zip(spec.features, spec.types, strict=True)
        ]
    else:
        stamps = [
            Timestamp(seconds=int(t) // 10**9, nanos=int(t) % 10**9).SerializeToString()
            for t in time_ns
        ]
        columns = [
            [p.SerializeToString() for p in python_values_to_proto_values(frame[n].tolist(), t)]
            for n, t in zip(spec.features, spec.types, strict=True)
        ]
    for start in range(0, len(entity_keys), 5_000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + 5_000, len(entity_keys))):
            args = [entity_keys[i], spec.ts_field, stamps[i]]
            for field, column in zip(spec.fields, columns, strict=True):
                args += [field, column[i]]
            pipe.execute_command("HSET", *args)
        pipe.execute()


def section_materialize(rounds: int, features_dir: Path, client: Any) -> dict[str, Any]:
    """20,000 terminals x 6 features (bench_feature_store --quick), written without the
    skip-older check (the write itself)."""
    from fraudops.adapters.feast import FastRedisWriter, FeastRedisLayout

    store, daily = terminal_store(features_dir, 20_000, days=1)
    writer = FastRedisWriter(store, client=client)
    layout = FeastRedisLayout.from_store(store)
    spec = writer.view("terminal_daily")

    def as_is() -> None:
        writer.write("terminal_daily", daily)

    flush = client.flushdb
    # every variant writes the same hashes
    snapshots = []
    for fn in (
        as_is,
        lambda: public_hset_write(client, layout, spec, daily, "feast", "feast"),
    ):
        flush()
        fn()
        sample = layout.entity_keys("terminal_id", daily["terminal_id"].tolist()[:50])
        snapshots.append([client.hgetall(k) for k in sample])
    assert snapshots[0] == snapshots[1], "the public path writes other bytes"
    return {
        "rows": len(daily),
        "write_seconds": alternate(
            {
                "private_resp_numpy_protobuf": seconds_of(as_is, flush),
                "public_redis_py_pipeline_numpy_protobuf": seconds_of(
                    lambda: public_hset_write(client, layout, spec, daily, "numpy", "concat"),
                    flush,
                ),
                "public_pipeline_feast_converter": seconds_of(
                    lambda: public_hset_write(client, layout, spec, daily, "feast", "concat"),
                    flush,
                ),
                "public_pipeline_feast_converter_feast_keys": seconds_of(
                    lambda: public_hset_write(client, layout, spec, daily, "feast", "feast"),
                    flush,
                ),
            },
            rounds,
        ),
    }


def section_read(rounds: int, features_dir: Path, client: Any) -> dict[str, Any]:
    """``FastRedisReader.read`` of one terminal row (bench_feature_store's online read,
    terminal_daily: what the scorer reads from Feast's layout)."""
    from fraudops.adapters import feast as redis_fast
    from fraudops.adapters.feast import FastRedisReader, ViewReplies
    from fraudops.features.maths import TERMINAL_FEATURES

    client.flushdb()
    store, daily = terminal_store(features_dir, 500, days=1)
    store.materialize(
        start_date=daily["event_timestamp"].min().to_pydatetime() - timedelta(days=1),
        end_date=daily["event_timestamp"].max().to_pydatetime() + timedelta(days=1),
    )
    reader = FastRedisReader(store, [("terminal_daily", list(TERMINAL_FEATURES))], client=client)
    terminals = daily["terminal_id"].tolist()
    rows = [{"terminal_id": terminals[i % len(terminals)]} for i in range(1000)]

    def public_read_replies(entity_rows: Any) -> list[ViewReplies]:
        columns = redis_fast._entity_columns(entity_rows, reader.join_keys)
        pipe = reader.client.pipeline(transaction=False)
        plans = []
        for spec, fields in zip(reader.views, reader._hmget_fields, strict=True):
            unique: dict[Any, int] = {}
            positions = [unique.setdefault(v, len(unique)) for v in columns[spec.join_key]]
            for key in reader.layout.entity_keys(spec.join_key, list(unique), spec.join_key_type):
                pipe.hmget(key, fields)
            plans.append((list(unique), positions))
        replies = pipe.execute()
        out, offset = [], 0
        for entities, positions in plans:
            out.append(ViewReplies(entities, replies[offset : offset + len(entities)], positions))
            offset += len(entities)
        return out

    def public(i: int) -> object:
        with patched(reader, "read_replies", public_read_replies):
            return reader.read([rows[i % 1000]])

    assert public(0).values == reader.read([rows[0]]).values
    calls = 3000
    return {
        "read_one_row_us": alternate(
            {
                "private_hand_framed_resp": per_call_us(
                    lambda i: reader.read([rows[i % 1000]]), calls
                ),
                "public_redis_py_pipeline": per_call_us(public, calls),
            },
            rounds,
        )
    }


def section_scorer_read(rounds: int, features_dir: Path, client: Any) -> dict[str, Any]:
    """``OnlineFeatures.compute`` of one transaction (commit to the customer's state, read
    its terminal's batch features, the feature maths): the terminal read queued on the
    commit's pipeline in Feast's Redis layout, against Feast's get_online_features."""
    import pandas as pd

    from fraudops.core import contract as c
    from fraudops.features.feast_store import feature_service
    from fraudops.serving.online import OnlineFeatures

    client.flushdb()
    store, daily = terminal_store(features_dir, 500, days=1)
    store.materialize(
        start_date=daily["event_timestamp"].min().to_pydatetime() - timedelta(days=1),
        end_date=daily["event_timestamp"].max().to_pydatetime() + timedelta(days=1),
    )
    online = OnlineFeatures(store, feature_service(store))
    terminals = daily["terminal_id"].tolist()
    base = int(daily["event_timestamp"].max().value // 1000) + 3_600_000_000
    counter = [0]

    def tx() -> dict[str, Any]:
        counter[0] += 1
        n = counter[0]
        return {
            c.TRANSACTION_ID: [f"tx-{n}"],
            c.CUSTOMER_ID: [f"c_{n % 200}"],
            c.TERMINAL_ID: [terminals[n % len(terminals)]],
            c.AMOUNT: [12.5 + n % 7],
            "time_us": np.array([base + n * 1_000_000], dtype=np.int64),
        }

    reader = online._reader

    def private(i: int) -> object:
        return online.compute(tx())

    def public(i: int) -> object:
        with patched(online, "_reader", None):
            return online.compute(tx())

    a, b = tx(), tx()
    b[c.TRANSACTION_ID] = ["tx-check-b"]
    b[c.TERMINAL_ID] = a[c.TERMINAL_ID]
    b[c.CUSTOMER_ID] = a[c.CUSTOMER_ID] = ["c-check"]
    b["time_us"] = a["time_us"] + 1
    first = online.compute(a)
    with patched(online, "_reader", None):
        second = online.compute(b)
    names = online.names
    terminal_cols = [names.index(n) for n in names if n.startswith("terminal_")]
    assert np.array_equal(first.matrix[:, terminal_cols], second.matrix[:, terminal_cols])
    assert reader is not None
    calls = 1000
    del pd
    return {
        "compute_one_transaction_us": alternate(
            {
                "private_feast_layout_in_commit_round_trip": per_call_us(private, calls),
                "public_get_online_features": per_call_us(public, calls),
            },
            rounds,
        )
    }


# --- the scorer, in process ------------------------------------------------------------------
def section_scorer(rounds: int, scratch: Path, redis_url: str) -> dict[str, Any]:
    """``ScoringCore.score`` in process on bench_service's stack (simulated data, features
    materialized into Redis, a trained @champion), on its stream of transactions: CPU time
    per transaction, one transaction per call (concurrency 1's requests), with the model's
    single-row path against ``Booster.predict``. No prediction log."""
    from bench_service import SEED, Stream

    from fraudops.core import contract as c
    from fraudops.core.contract import Transaction
    from fraudops.core.settings import get_settings
    from fraudops.serving.scoring import ScoringCore
    from tests.integration.conftest import environment, prepare_trained_environment

    values = {
        "FRAUDOPS_DATA_DIR": str(scratch / "scorer"),
        "FRAUDOPS_ONLINE_STORE": "redis",
        "FRAUDOPS_REDIS_URL": redis_url,
    }
    tx = prepare_trained_environment(values, seed=SEED)
    out: dict[str, Any] = {}
    with environment(values):
        core = ScoringCore(get_settings())
        core.warm_up()
        stream = Stream(tx[c.TIMESTAMP].max(), scratch / "stream.tsv")
        model = core.current.model
        booster = model.booster
        index = [0]

        def transactions(count: int) -> list[Transaction]:
            first = index[0]
            index[0] += count
            return [Transaction(**stream.transaction(i, "ab")) for i in range(first, index[0])]

        def one(row: np.ndarray) -> np.ndarray:
            return np.asarray(booster.predict(row[None, :], raw_score=True, num_threads=1))

        def cpu_ms(batch: int, attribute: str | None, public: Any) -> Callable[[], float]:
            def run() -> float:
                groups = [transactions(batch) for _ in range(480 // batch)]
                with patched(model, attribute, public) if attribute else nullcontext():
                    started = time.process_time()
                    for group in groups:
                        core.score(group)
                    return (time.process_time() - started) / (len(groups) * batch) * 1e3

            return run

        out["cpu_ms_per_transaction_one_per_call"] = alternate(
            {
                "private_single_row_fastconfig": cpu_ms(1, None, None),
                "public_booster_predict": cpu_ms(1, "_raw_one", one),
            },
            rounds,
        )
        out["transactions_scored"] = index[0]
        core.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="A/B of the private-API paths.")
    parser.add_argument("--redis-url", required=True, help="a Redis DB this run may flush")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", default="lightgbm,materialize,read,scorer_read,scorer")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("feast", "fraudops"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import warnings

    warnings.simplefilter("ignore")
    import redis
    from bench_feature_store import configure_environment

    sections = args.only.split(",")
    out: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    with tempfile.TemporaryDirectory(prefix="private_paths_ab_") as scratch:
        configure_environment(Path(scratch) / "data", args.redis_url)
        from fraudops.core.settings import get_settings

        client = redis.Redis.from_url(args.redis_url)
        client.flushdb()
        features_dir = get_settings().offline_dir / "features"
        try:
            for name in sections:
                log.info("section %s", name)
                if name == "lightgbm":
                    out[name] = section_lightgbm(args.rounds)
                elif name == "scorer":
                    out[name] = section_scorer(args.rounds, Path(scratch), args.redis_url)
                else:
                    fn = globals()[f"section_{name}"]
                    out[name] = fn(args.rounds, features_dir, client)
                log.info("%s: %s", name, json.dumps(out[name]))
        finally:
            client.flushdb()
    import feast
    import lightgbm
    import redis as redis_py

    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out["versions"] = {
        "python": platform.python_version(),
        "feast": feast.__version__,
        "lightgbm": lightgbm.__version__,
        "redis_py": redis_py.__version__,
        "redis_server": client.info("server")["redis_version"],
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
