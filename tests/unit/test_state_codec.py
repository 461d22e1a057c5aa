"""The customer state's hand-made protobuf bytes equal protobuf's own, and read back."""

from __future__ import annotations

import numpy as np
import pytest
from feast.protos.feast.types.Value_pb2 import DoubleList, Int64List, StringList
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from fraudops import features as f
from fraudops.realtime import CustomerState
from fraudops.redis_fast import STATE_FEATURES, _decode_value, _decoder, encode_state


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
