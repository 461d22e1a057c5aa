"""The customer state's hand-made protobuf bytes equal protobuf's own, and read back."""

from __future__ import annotations

import numpy as np
import pytest
from feast.protos.feast.types.Value_pb2 import DoubleList, Int64List, StringList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from fraudops import features as f
from fraudops.realtime import CustomerState, StateBatch
from fraudops.redis_fast import (
    STATE_FEATURES,
    _decode_value,
    _decoder,
    decode_number_matrix,
    decode_numbers,
    decode_state_batch,
    encode_state,
    encode_state_batch,
)


def state(n: int, rng: np.random.Generator) -> CustomerState:
    times = np.sort(rng.integers(1_700_000_000_000_000, 1_800_000_000_000_000, n))
    terminals = np.array([rng.choice(["t_00001", "terminal-é", "", "x" * 200]) for _ in range(n)])
    stats = f.RunningStats(*(np.array([v]) for v in (n, rng.normal(), rng.gamma(2), 0.0, -1.5)))
    return CustomerState(times, rng.gamma(2, 40, n), terminals.astype(object), stats, 0)


def protobuf(s: CustomerState) -> tuple[bytes, ...]:
    return tuple(v.SerializeToString() for v in (
        ValueProto(int64_list_val=Int64List(val=s.history_time_us.tolist())),
        ValueProto(double_list_val=DoubleList(val=s.history_amount.tolist())),
        ValueProto(string_list_val=StringList(val=s.history_terminal_id.tolist())),
        ValueProto(int64_val=int(s.stats.count[0])),
        *(ValueProto(double_val=float(getattr(s.stats, name)[0]))
          for name in ("amount_mean", "amount_m2", "hour_sin_sum", "hour_cos_sum")),
    ))  # fmt: skip


@pytest.mark.parametrize("n", [0, 1, 2, 17, 300, 2_000])
def test_encoded_state_is_protobufs_bytes(n: int) -> None:
    rng = np.random.default_rng(n)
    s = state(n, rng)
    assert encode_state(s) == protobuf(s)
    assert encode_state(CustomerState.empty()) == protobuf(CustomerState.empty())


def test_typed_decoders_read_what_the_general_one_reads() -> None:
    s = state(40, np.random.default_rng(0))
    types = [ValueType.INT64_LIST, ValueType.DOUBLE_LIST, ValueType.STRING_LIST,
             ValueType.INT64, *[ValueType.DOUBLE] * 4]  # fmt: skip
    assert len(types) == len(STATE_FEATURES)
    for raw, value_type in zip(encode_state(s), types, strict=True):
        assert _decoder(value_type)(raw) == _decode_value(raw, value_type)
    # missing, empty (Feast's null) and another kind than the declared type
    assert _decoder(ValueType.DOUBLE)(None) is None
    assert _decoder(ValueType.DOUBLE)(b"") is None
    other = ValueProto(int64_val=3).SerializeToString()
    assert _decoder(ValueType.DOUBLE)(other) == _decode_value(other, ValueType.DOUBLE)


@pytest.mark.parametrize("n", [0, 1, 65, 2_000])
def test_array_decoders_read_the_packed_lists(n: int) -> None:
    from fraudops.redis_fast import _array_decoder

    s = state(n, np.random.default_rng(n))
    times, amounts, *_ = encode_state(s)
    got_times = _array_decoder(ValueType.INT64_LIST)(times)
    got_amounts = _array_decoder(ValueType.DOUBLE_LIST)(amounts)
    assert got_times.dtype == np.int64 and got_amounts.dtype == np.float64
    np.testing.assert_array_equal(got_times, s.history_time_us)
    np.testing.assert_array_equal(got_amounts, s.history_amount)
    # small or negative numbers are not 8-byte varints: protobuf reads them
    odd = ValueProto(int64_list_val=Int64List(val=[0, 1, 300, -5])).SerializeToString()
    np.testing.assert_array_equal(_array_decoder(ValueType.INT64_LIST)(odd), [0, 1, 300, -5])
    assert _array_decoder(ValueType.INT64_LIST)(None) is None


def batch_of(states: list[CustomerState]) -> StateBatch:
    return StateBatch.of([f"c{i}" for i in range(len(states))],
                         {f"c{i}": s for i, s in enumerate(states)})  # fmt: skip


def fixed_width_state(n: int, rng: np.random.Generator) -> CustomerState:
    s = state(n, rng)
    terminals = np.array([f"T{v:05d}" for v in rng.integers(0, 99_999, n)], dtype=object)
    return CustomerState(s.history_time_us, s.history_amount, terminals, s.stats, 0)


@pytest.mark.parametrize("make", [state, fixed_width_state], ids=["mixed ids", "fixed-width ids"])
def test_batch_codec_equals_the_per_customer_one(make, compiled_path: str) -> None:  # type: ignore[no-untyped-def]
    """encode_state_batch writes encode_state's bytes; decode_state_batch reads them back,
    whether terminal ids are fixed-width ASCII (numpy's fast path) or not, with the compiled
    encoder and without."""
    rng = np.random.default_rng(7)
    states = [make(n, rng) for n in (3, 0, 1, 250, 2_000, 17)]
    batch = batch_of(states)
    encoded = encode_state_batch(batch)
    assert encoded == [encode_state(s) for s in states]
    decoded = decode_state_batch(batch.customers, [list(values) for values in encoded])
    np.testing.assert_array_equal(decoded.bounds, batch.bounds)
    for g, original in enumerate(states):
        got = decoded.state(g)
        np.testing.assert_array_equal(got.history_time_us, original.history_time_us)
        np.testing.assert_array_equal(got.history_amount, original.history_amount)
        assert got.history_terminal_id.tolist() == original.history_terminal_id.tolist()
        assert got.to_row() == original.to_row() | {"tx_count": int(original.stats.count[0])}
        assert got.last_time_us == (int(original.history_time_us[-1]) if len(
            original.history_time_us) else 0)  # fmt: skip
    # the fast path keeps fixed-width ids as numpy bytes, and writes them back the same
    if make is fixed_width_state:
        assert decoded.history_terminal_id.dtype.kind == "S"
        assert encode_state_batch(decoded) == encoded


def test_batch_decoder_reads_other_layouts_and_missing_customers(compiled_path: str) -> None:
    """Values another writer laid out differently (unpacked ints, small numbers, a double
    stored as int64) and customers without a state decode as the per-value decoders read
    them."""
    rng = np.random.default_rng(3)
    s = fixed_width_state(5, rng)
    times, amounts, terminals, count, *doubles = encode_state(s)
    odd_times = ValueProto(int64_list_val=Int64List(val=[1, 300, 70_000, 2**40, 2**50]))
    replies = [
        [odd_times.SerializeToString(), amounts, terminals, count, *doubles],
        [None] * len(STATE_FEATURES),  # a new customer
        [times, amounts, terminals, ValueProto(int64_val=0).SerializeToString(),
         ValueProto(int64_val=4).SerializeToString(), *doubles[1:]],
    ]  # fmt: skip
    decoded = decode_state_batch(["a", "new", "b"], replies)
    assert decoded.state(0).history_time_us.tolist() == [1, 300, 70_000, 2**40, 2**50]
    assert len(decoded.state(1).history_time_us) == 0
    assert decoded.state(1).stats.count[0] == 0 and decoded.last_time_us[1] == 0
    assert decoded.state(2).history_terminal_id.tolist() == s.history_terminal_id.tolist()
    assert decoded.stats.amount_mean[2] == 4.0  # an int64 where a double was expected


def test_state_lists_of_different_lengths_are_an_error() -> None:
    rng = np.random.default_rng(4)
    times, *_ = encode_state(state(3, rng))
    _, amounts, terminals, *rest = encode_state(state(4, rng))
    with pytest.raises(ValueError, match="'broken'"):
        decode_state_batch(["broken"], [[times, amounts, terminals, *rest]])


def test_compiled_int64_list_encoder_writes_protobufs_bytes() -> None:
    """Lists with negatives (ten-byte varints), zeros, large values and empty lists."""
    from fraudops.kernels import encode_int64_lists

    rng = np.random.default_rng(5)
    lists = [[-1, 0, 1, 127, 128, 2**62, -(2**63), 2**63 - 1], [],
             rng.integers(-(2**40), 2**40, 300).tolist(), [5], []]  # fmt: skip
    bounds = np.concatenate([[0], np.cumsum([len(v) for v in lists])]).astype(np.int64)
    values = np.array([v for one in lists for v in one], dtype=np.int64)
    buffer, ends = encode_int64_lists(bounds, values, 0x72, 0x0A)
    blob = buffer.tobytes()
    for g, one in enumerate(lists):
        expected = ValueProto(int64_list_val=Int64List(val=one)).SerializeToString()
        assert blob[ends[g] : ends[g + 1]] == expected


def wide_id_state(n: int, rng: np.random.Generator) -> CustomerState:
    """Fixed-width ids of 133 bytes: their length takes two varint bytes."""
    s = state(n, rng)
    terminals = np.array([f"{'W' * 130}{v:03d}" for v in rng.integers(0, 999, n)], dtype=object)
    return CustomerState(s.history_time_us, s.history_amount, terminals, s.stats, 0)


def hset_commands(
    keys: list[bytes], encoded: list[tuple[bytes, ...]], fields: list[bytes] | None = None
) -> list[bytes]:
    """FastRedisWriter.write_states' commands, built from per-customer Values."""
    from fraudops.redis_fast import _bulk

    fields = fields or [_bulk(b"field-%d" % k) for k in range(len(STATE_FEATURES))]
    return [
        HEAD + _bulk(key) + b"".join(f + _bulk(v) for f, v in zip(fields, values, strict=True))
        + TAIL
        for key, values in zip(keys, encoded, strict=True)
    ]  # fmt: skip


HEAD, TAIL = b"*20\r\n$4\r\nHSET\r\n", b"$5\r\n_ts:x\r\n$2\r\n\x08\x01\r\n"


@pytest.mark.parametrize("make", [fixed_width_state, wide_id_state], ids=["7 bytes", "133 bytes"])
def test_compiled_hset_commands_are_the_per_customer_ones(make) -> None:  # type: ignore[no-untyped-def]
    """The compiled encoder writes, in pipelines of ``size`` commands, the commands built
    from encode_state's Values (protobuf's bytes), for empty and long histories and ids
    whose length takes two varint bytes; so does the numpy batch encoder."""
    from fraudops.realtime import fixed_width_ascii
    from fraudops.redis_fast import _batched, _bulk, _compiled_hsets

    rng = np.random.default_rng(11)
    states = [make(n, rng) for n in (3, 0, 1, 250, 2_000, 17, 0)]
    batch = batch_of(states)
    keys = [b"customer-%d" % i * (i + 1) for i in range(len(states))]
    expected = list(_batched(hset_commands(keys, [encode_state(s) for s in states]), 3))
    fields = [_bulk(b"field-%d" % k) for k in range(len(STATE_FEATURES))]
    assert _compiled_hsets(batch, keys, HEAD, fields, TAIL, 3) == expected
    as_bytes = StateBatch(**{**batch.__dict__, "history_terminal_id": fixed_width_ascii(
        batch.history_terminal_id)})  # fmt: skip
    assert _compiled_hsets(as_bytes, keys, HEAD, fields, TAIL, 3) == expected
    assert encode_state_batch(batch) == [encode_state(s) for s in states]
    empty = batch_of([CustomerState.empty()] * 2)
    assert _compiled_hsets(empty, keys[:2], HEAD, fields, TAIL, 500) == list(
        _batched(hset_commands(keys[:2], [encode_state(CustomerState.empty())] * 2), 500)
    )


def test_compiled_hset_commands_leave_mixed_ids_to_python() -> None:
    from fraudops.redis_fast import _compiled_hsets

    batch = batch_of([state(20, np.random.default_rng(12))])  # ids of several widths
    assert _compiled_hsets(batch, [b"k"], HEAD, [b""] * 8, TAIL, 500) is None


@pytest.mark.parametrize("make", [fixed_width_state, wide_id_state], ids=["7 bytes", "133 bytes"])
def test_compiled_state_decoder_reads_what_the_python_one_reads(make, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Same columns, dtypes and statistics; a customer without times is empty whatever
    else its hash holds; counts and doubles may be absent."""
    from fraudops.redis_fast import _decode_compiled

    rng = np.random.default_rng(13)
    states = [make(n, rng) for n in (3, 0, 1, 250, 17)]
    replies: list[list[bytes | None]] = [list(v) for v in encode_state_batch(batch_of(states))]
    replies.append([None] * len(STATE_FEATURES))  # a new customer
    replies.append([None, *replies[0][1:]])  # no history, stale statistics
    replies.append([*replies[0][:3], None, None, *replies[0][5:]])  # no count, no mean
    replies = [[*reply, b"\x08\x01"] for reply in replies]  # HMGET reads the write time too
    customers = [f"c{i}" for i in range(len(replies))]
    compiled = _decode_compiled(customers, replies)
    assert compiled is not None
    assert compiled.history_terminal_id.dtype.kind == "S"
    monkeypatch.setattr("fraudops.kernels.available", lambda: False)
    python = decode_state_batch(customers, replies)
    for name in ("bounds", "history_time_us", "history_amount", "history_terminal_id",
                 "last_time_us"):  # fmt: skip
        got, want = getattr(compiled, name), getattr(python, name)
        np.testing.assert_array_equal(got, want.astype(got.dtype))
    for name in ("count", "amount_mean", "amount_m2", "hour_sin_sum", "hour_cos_sum"):
        np.testing.assert_array_equal(getattr(compiled.stats, name), getattr(python.stats, name))
    assert compiled.stats.count.dtype == np.float64 and compiled.stats.count[7] == 0


@pytest.mark.parametrize(
    "change",
    ["ids of two widths", "a non-ASCII id", "unpacked times", "a float32 mean", "fewer amounts"],
)
def test_compiled_state_decoder_leaves_other_layouts_to_python(change: str) -> None:
    from fraudops.redis_fast import _decode_compiled

    rng = np.random.default_rng(14)
    a, b = fixed_width_state(4, rng), fixed_width_state(3, rng)
    replies = [list(v) for v in encode_state_batch(batch_of([a, b]))]
    if change == "ids of two widths":
        replies[1][2] = encode_state(state(3, rng))[2]
    elif change == "a non-ASCII id":
        ids = b.history_terminal_id.copy()
        ids[0] = "T0000é"  # 7 bytes in UTF-8, as wide as the others
        replies[1][2] = encode_state(CustomerState(b.history_time_us, b.history_amount, ids,
                                                   b.stats, 0))[2]  # fmt: skip
    elif change == "unpacked times":
        replies[0][0] = b"\x72\x08\x08\x01\x08\x02\x08\x03\x08\x04"  # a tag per value
        assert _decode_value(replies[0][0], ValueType.INT64_LIST) == [1, 2, 3, 4]
    elif change == "a float32 mean":
        replies[0][4] = ValueProto(float_val=1.5).SerializeToString()
    else:
        replies[1][1] = encode_state(a)[1]
    assert _decode_compiled(["a", "b"], replies) is None


def test_compiled_hset_commands_with_the_longest_fields() -> None:
    """Ten-byte varints (negative times, a huge count), a long key, many-digit lengths:
    the commands still equal the per-customer ones (the buffer's bound holds)."""
    from fraudops.redis_fast import _batched, _bulk, _compiled_hsets

    times = np.array([-(2**63), -1, 0, 2**63 - 1], dtype=np.int64)
    ids = np.array(["T1", "T2", "T3", "T4"], dtype=object)
    stats = f.RunningStats(*(np.array([v]) for v in (2.0**62, -1e308, np.nan, np.inf, -0.0)))
    odd = CustomerState(times, np.array([np.nan, -np.inf, 1e-320, 5.0]), ids, stats, 0)
    states = [odd, CustomerState.empty(), odd]
    keys = [b"k" * 1_000, b"", b"x"]
    fields = [_bulk(b"f" * 300 + b"%d" % k) for k in range(len(STATE_FEATURES))]
    expected = list(_batched(hset_commands(keys, [encode_state(s) for s in states], fields), 2))
    assert _compiled_hsets(batch_of(states), keys, HEAD, fields, TAIL, 2) == expected


def test_feature_matrix_decodes_as_feature_by_feature() -> None:
    """Lookup features of a batch decode to one entities x features array: the doubles
    Feast writes in one step, anything else (absent values, other types) feature by
    feature, each time the same numbers as protobuf's own parsing."""
    rng = np.random.default_rng(3)
    values = rng.normal(size=(5, 3)) * 100
    doubles = [
        [ValueProto(double_val=float(v)).SerializeToString() for v in row] + [b"stamp"]
        for row in values
    ]
    types = (ValueType.DOUBLE,) * 3
    np.testing.assert_array_equal(decode_number_matrix(doubles, types), values)

    mixed = [list(reply) for reply in doubles]
    mixed[1][0] = None  # absent in the store
    mixed[2][2] = ValueProto(int64_val=7).SerializeToString()
    mixed_types = (ValueType.DOUBLE, ValueType.DOUBLE, ValueType.INT64)
    matrix = decode_number_matrix(mixed, mixed_types)
    for k, value_type in enumerate(mixed_types):
        column = decode_numbers([reply[k] for reply in mixed], value_type)
        np.testing.assert_array_equal(matrix[:, k], column)
    assert np.isnan(matrix[1, 0]) and matrix[2, 2] == 7.0
    assert decode_number_matrix(doubles, ()).shape == (5, 0)
