"""The fast Redis path against Feast itself, on a real Redis: what it reads equals
``get_online_features``, what it writes is byte for byte what Feast writes, and Feast's
``materialize-incremental`` continues where :func:`fast_materialize` stopped."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import redis
from feast import FeatureStore
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from fraudops.adapters.feast import (
    FastRedisReader,
    FastRedisWriter,
    FeastRedisLayout,
    OnlineStoreNotRedisError,
    fast_materialize,
    serialize_timestamps,
    serialize_values,
)
from fraudops.core import contract as c
from fraudops.core.settings import Settings, get_settings
from fraudops.core.tables import read_frame, replace_days, table_path
from fraudops.data.simulator import simulate
from fraudops.features import maths as f
from fraudops.features.build import STATE_FIELDS, build_feature_tables, write_feature_tables
from fraudops.features.feast_store import apply_definitions, get_store

pytestmark = pytest.mark.integration

STATE_REFS = [f"customer_state:{name}" for name in STATE_FIELDS]
TERMINAL_REFS = [f"terminal_daily:{name}" for name in f.TERMINAL_FEATURES]
# customer_state is an offline table since the state store (fraudops.features.realtime) keeps the
# real-time state; terminal_daily is the view the scorer reads in Feast's layout
LOOKUPS = [("terminal_daily", f.TERMINAL_FEATURES)]


@pytest.fixture(scope="module")
def transactions() -> pd.DataFrame:
    return simulate(customers=60, terminals=120, days=12, seed=3)


@pytest.fixture
def redis_settings(settings: Settings, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("FRAUDOPS_ONLINE_STORE", "redis")
    monkeypatch.setenv("FRAUDOPS_REDIS_URL", redis_url)
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def store(redis_settings: Settings, transactions: pd.DataFrame) -> FeatureStore:
    tables = build_feature_tables(transactions, redis_settings.label_delay_days)
    write_feature_tables(tables, redis_settings.offline_dir / "features")
    store = get_store()
    apply_definitions(store)
    return store


def window(tx: pd.DataFrame) -> tuple[datetime, datetime]:
    """From before the data to its last transaction: every customer state is in it, and
    the terminal rows of the day after are not."""
    start = tx[c.TIMESTAMP].min().floor("D") - pd.Timedelta(days=1)
    return start.to_pydatetime(), tx[c.TIMESTAMP].max().ceil("s").to_pydatetime()


def snapshot(url: str) -> dict[bytes, dict[bytes, bytes]]:
    client = redis.Redis.from_url(url)
    return {key: client.hgetall(key) for key in client.scan_iter(count=1000)}


def entity_rows(tx: pd.DataFrame) -> list[dict[str, str]]:
    """25 known customers and terminals (one customer twice), then an unknown pair."""
    customers = sorted(tx[c.CUSTOMER_ID].unique())[:24]
    terminals = sorted(tx[c.TERMINAL_ID].unique())[:25]
    rows = [
        {c.CUSTOMER_ID: customer, c.TERMINAL_ID: terminal}
        for customer, terminal in zip([*customers, customers[0]], terminals, strict=True)
    ]
    return [*rows, {c.CUSTOMER_ID: "no-such-customer", c.TERMINAL_ID: "no-such-terminal"}]


def test_value_and_timestamp_bytes_equal_feast_and_protobuf() -> None:
    rng = np.random.default_rng(0)
    doubles = np.concatenate(
        [rng.normal(size=500) * 10.0 ** rng.integers(-300, 300, 500), [0.0, -0.0, np.inf, np.nan]]
    )
    ints = np.concatenate([rng.integers(-(2**63), 2**63 - 1, 500), [0, 1, -1, 127, 128, 2**63 - 1]])
    for value_type, values in [
        (ValueType.DOUBLE, doubles),
        (ValueType.FLOAT, doubles),
        (ValueType.DOUBLE, np.arange(-3, 3)),
        (ValueType.INT64, ints),
        (ValueType.INT64_LIST, np.array([np.arange(3), np.arange(0), None], dtype=object)),
        (ValueType.STRING_LIST, np.array([np.array(["a", "é"], dtype=object), None], dtype=object)),
    ]:
        with np.errstate(over="ignore"):
            want = [
                v.SerializeToString() for v in python_values_to_proto_values(values, value_type)
            ]
        assert serialize_values(values, value_type) == want, value_type

    ns = np.concatenate([rng.integers(-(2**62), 2**62, 500), [0, 999, 10**9, -1, -(10**9)]])
    want = [
        Timestamp(seconds=int(t) // 10**9, nanos=int(t) % 10**9).SerializeToString() for t in ns
    ]
    assert serialize_timestamps(ns) == want


def test_reader_equals_get_online_features_after_feast_materialize(
    store: FeatureStore, transactions: pd.DataFrame, redis_settings: Settings
) -> None:
    start, end = window(transactions)
    store.materialize(start_date=start, end_date=end)
    rows = entity_rows(transactions)

    got = FastRedisReader(store, LOOKUPS).read(rows)
    want = store.get_online_features(features=TERMINAL_REFS, entity_rows=rows).to_dict(
        include_event_timestamps=True
    )

    assert got.values == {
        name: v
        for name, v in want.items()
        if not name.endswith("__ts") and name != c.CUSTOMER_ID  # not a key of the view read
    }
    stamps = got.event_timestamps["terminal_daily"]
    assert [int(t) if t is not None else 0 for t in stamps] == want[f"{f.TERMINAL_FEATURES[0]}__ts"]
    # not vacuous: values, a missing entity, and event times to the microsecond
    assert all(v is not None for v in got.values["terminal_risk_28d"][:-1])
    assert got.values["terminal_risk_28d"][-1] is None
    assert got.event_timestamps["terminal_daily"][-1] is None
    daily = read_frame(table_path(redis_settings.offline_dir / "features", "terminal_daily"))
    newest = daily[daily["event_timestamp"] <= end].groupby(c.TERMINAL_ID)["event_timestamp"].max()
    for row, stamp in zip(rows[:-1], stamps[:-1], strict=True):
        assert stamp == pytest.approx(newest[row[c.TERMINAL_ID]].timestamp(), abs=1e-6)

    # column input and single rows give the same answer
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    assert FastRedisReader(store, LOOKUPS).read(columns).values == got.values


def test_layout_builds_feast_keys(store: FeatureStore) -> None:
    layout = FeastRedisLayout.from_store(store)
    values = ["T1", "", "ünïcode-€", "x" * 300]
    assert layout.entity_keys("terminal_id", values) == [
        layout.entity_key("terminal_id", v) for v in values
    ]
    assert layout.entity_keys("n", [0, -5, 2**40], ValueType.INT64) == [
        layout.entity_key("n", v, ValueType.INT64) for v in [0, -5, 2**40]
    ]
    with pytest.raises(TypeError, match="terminal_id values must be strings"):
        layout.entity_keys("terminal_id", ["ok", 7])


def test_fast_materialize_writes_exactly_what_feast_materialize_writes(
    store: FeatureStore, transactions: pd.DataFrame, redis_settings: Settings
) -> None:
    start, end = window(transactions)
    path = table_path(redis_settings.offline_dir / "features", "terminal_daily")
    daily = read_frame(path).sample(frac=1.0, random_state=0)
    replace_days(daily, path)  # the latest row is found whatever the order in the files
    client = redis.Redis.from_url(redis_settings.redis_url)
    store.materialize(start_date=start, end_date=end)
    by_feast = snapshot(redis_settings.redis_url)
    client.flushdb()

    written = fast_materialize(store, start=start, end=end)

    assert snapshot(redis_settings.redis_url) == by_feast
    assert written == {"terminal_daily": transactions[c.TERMINAL_ID].nunique()}
    # and Feast reads the latest row of each terminal at the end of the window
    latest = daily[daily["event_timestamp"] <= end].sort_values("event_timestamp")
    latest = latest.groupby(c.TERMINAL_ID).last()
    online = store.get_online_features(
        features=TERMINAL_REFS, entity_rows=[{c.TERMINAL_ID: t} for t in latest.index]
    ).to_dict()
    for name in f.TERMINAL_FEATURES:
        assert online[name] == latest[name].tolist()


def test_writer_matches_feast_write_to_online_store(
    store: FeatureStore, redis_settings: Settings
) -> None:
    stamp = pd.Timestamp("2026-04-20 10:11:12.123456789", tz="UTC")
    states = pd.DataFrame(
        {
            c.CUSTOMER_ID: ["a", "b", "ç"],
            "event_timestamp": [stamp, stamp + pd.Timedelta(seconds=1), stamp],
            "history_time_us": [[1, 2, 3], [], [2**40]],
            "history_amount": [[1.5, np.nan], [], [0.0]],
            "history_terminal_id": [["T1", "T2"], [], ["é"]],
            "tx_count": [3, 0, -1],
            "amount_mean": [1.25, np.nan, 0.0],
            "amount_m2": [0.5, 0.0, -0.0],
            "hour_sin_sum": [0.1, 0.2, 0.3],
            "hour_cos_sum": [1e300, -1e-300, np.inf],
        }
    )
    client = redis.Redis.from_url(redis_settings.redis_url)
    store.write_to_online_store("customer_state", states)
    by_feast = snapshot(redis_settings.redis_url)
    client.flushdb()

    assert FastRedisWriter(store).write("customer_state", states) == 3

    assert snapshot(redis_settings.redis_url) == by_feast
    online = store.get_online_features(
        features=STATE_REFS, entity_rows=[{c.CUSTOMER_ID: k} for k in states[c.CUSTOMER_ID]]
    ).to_dict()
    assert online["tx_count"] == [3, 0, -1]
    assert online["amount_mean"] == [1.25, None, 0.0]
    assert online["history_terminal_id"] == [["T1", "T2"], [], ["é"]]


def test_skip_older_keeps_a_newer_row(store: FeatureStore) -> None:
    writer = FastRedisWriter(store, batch_size=2)
    day = pd.Timestamp("2026-04-10", tz="UTC")

    def rows(value: list[float], days: list[int], terminals: list[str]) -> pd.DataFrame:
        times = [day + pd.Timedelta(days=d) for d in days]
        frame = pd.DataFrame({c.TERMINAL_ID: terminals, "event_timestamp": times})
        for name in f.TERMINAL_FEATURES:
            frame[name] = value
        return frame

    def online(terminals: list[str]) -> list[float]:
        return (
            FastRedisReader(store, [("terminal_daily", ["terminal_risk_1d"])])
            .read([{c.TERMINAL_ID: t} for t in terminals])
            .values["terminal_risk_1d"]
        )

    assert writer.write("terminal_daily", rows([2.0, 2.0], [2, 2], ["T1", "T2"])) == 2
    # older and same-time rows are skipped, a newer one is written
    older = rows([1.0, 1.0, 3.0], [1, 2, 3], ["T1", "T2", "T3"])
    assert writer.write("terminal_daily", older, skip_older=True) == 1
    assert online(["T1", "T2", "T3"]) == [2.0, 2.0, 3.0]
    # several rows of one entity: the newest wins whatever the order
    shuffled = rows([9.0, 5.0, 4.0], [9, 5, 4], ["T4", "T4", "T4"])
    assert writer.write("terminal_daily", shuffled.iloc[[1, 0, 2]], skip_older=True) == 1
    assert online(["T4"]) == [9.0]
    # without skip_older, the last row written wins (a bulk load)
    assert writer.write("terminal_daily", older) == 3
    assert online(["T1", "T2"]) == [1.0, 1.0]


def test_materialize_incremental_continues_after_fast_materialize(
    store: FeatureStore, transactions: pd.DataFrame, redis_settings: Settings
) -> None:
    first_day = transactions[c.TIMESTAMP].min().floor("D")
    end = (first_day + pd.Timedelta(days=5)).to_pydatetime()
    later = end + timedelta(days=2)
    progress: list[tuple[str, int, int]] = []

    fast_materialize(store, ["terminal_daily"], end=end, progress=lambda *p: progress.append(p))

    assert progress and progress[-1][0] == "terminal_daily" and progress[-1][1] == progress[-1][2]
    view = get_store().get_feature_view("terminal_daily")  # a fresh read of the registry
    assert view.most_recent_end_time == end
    assert view.materialization_intervals[0][0] == first_day  # the data's first row

    store.materialize_incremental(end_date=later, feature_views=["terminal_daily"])

    intervals = get_store().get_feature_view("terminal_daily").materialization_intervals
    assert intervals[-1] == (end, later)
    # the next fast run starts where Feast's ended
    assert fast_materialize(store, ["terminal_daily"], end=later + timedelta(days=1)) == {
        "terminal_daily": transactions[c.TERMINAL_ID].nunique()
    }
    assert get_store().get_feature_view("terminal_daily").materialization_intervals[-1][0] == later


def test_fast_path_refuses_a_sqlite_online_store(settings: Settings) -> None:
    assert settings.online_store == "sqlite"
    store = get_store()
    with pytest.raises(OnlineStoreNotRedisError, match="FRAUDOPS_ONLINE_STORE=redis"):
        fast_materialize(store)
    with pytest.raises(OnlineStoreNotRedisError):
        FastRedisReader(store, LOOKUPS)


# --- pre-encoded commands on one connection --------------------------------------------------
def _command(*parts: bytes) -> tuple[bytes, int]:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts), 1


def _run(client: redis.Redis, *parts: bytes) -> list[object]:
    from fraudops.adapters.redis import pipelined

    return [reply for batch in pipelined(client, [_command(*parts)]) for reply in batch]


def test_replies_of_pre_encoded_commands_equal_redis_pys(redis_url: str) -> None:
    """Replies to hand-framed commands (``fraudops.adapters.redis.pipelined``): many,
    larger together than one socket read, with nils and empty strings; an error reply in a
    batch raises redis-py's ResponseError, and the connection goes on in step."""
    from fraudops.adapters.redis import bulk, pipelined

    client = redis.Redis.from_url(redis_url)
    keys = [b"reply-%d" % i for i in range(400)]
    for i, key in enumerate(keys):
        client.hset(key, mapping={"a": b"x" * (i * 7 % 600), "b": str(i)})
    commands = [b"*4\r\n$5\r\nHMGET\r\n" + bulk(k) + bulk(b"a") + bulk(b"b") for k in keys]
    commands.append(_command(b"HMGET", b"no-such-key", b"a")[0])
    (got,) = pipelined(client, [(b"".join(commands), len(commands))])
    expected = [client.hmget(k, "a", "b") for k in keys] + [[None]]
    assert got == expected and sum(len(r[0]) for r in got[:-1]) > 65536
    client.set("plain", "x")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        _run(client, b"HGET", b"plain", b"f")
    assert _run(client, b"GET", b"plain") == [b"x"]  # nothing left unread or shifted
    # an error in the middle of a batch: the rest of it is never read by the next user
    writes = [_command(b"HSET", key, b"f", b"2")[0] for key in (b"h1", b"plain", b"h2")]
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        list(pipelined(client, [(b"".join(writes), 3)]))
    assert _run(client, b"HGET", b"h2", b"f") == [b"2"]
    assert _run(client, b"PING") == [b"PONG"]
