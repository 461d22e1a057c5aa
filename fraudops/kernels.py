"""Compiled kernels (numba) of the scorer's batch path.

- :func:`advance_groups` is :func:`fraudops.realtime.advance_batch`'s maths (the customer
  activity features of :func:`fraudops.features.customer_activity` and the states after
  the batch) in one compiled pass over each customer's history, instead of about a hundred
  numpy calls whose fixed cost dominates batches of a few customers: measured in-process
  on a batch of 16 requests, ``advance_batch`` took a third of the scoring call.
- :func:`encode_int64_lists` and :func:`decode_number_lists` are the state codec's packed
  lists (the customers' times and amounts), all customers of a batch in one call.
- :func:`encode_state_hsets` writes a batch's state writes as whole RESP ``HSET``
  commands, and :func:`decode_states` reads the states back, each in one pass over all
  customers of the batch.

The numpy functions stay the reference: tests check the kernels against them (and the
codec against protobuf's bytes), and with ``FRAUDOPS_COMPILED=false``, or without numba,
they are what runs. The single-request path keeps its scalar maths
(:func:`fraudops.realtime.score_and_advance_one`), cheaper than any array call.

:func:`warm_up` compiles the kernels when the scorer starts: about 11 s the first time on a
machine (4.3 s without the two HSET and state kernels), then 0.5-0.9 s to load them from
numba's cache (next to this file, or in a user-wide cache directory where that is
read-only; see :func:`_compiled`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fraudops import features as f

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; the fallback is for forks
    numba = None  # type: ignore[assignment]

LONG_WIDTHS = np.array(list(f.CUSTOMER_LONG_WINDOWS.values()), dtype=np.int64)
SHORT_WIDTHS = np.array(list(f.CUSTOMER_SHORT_WINDOWS.values()), dtype=np.int64)


def available() -> bool:
    """Whether the compiled path runs: numba is installed and ``FRAUDOPS_COMPILED`` is on."""
    from fraudops.settings import get_settings

    return numba is not None and get_settings().compiled


def _compiled(function: Any) -> Any:
    """numba's compiled version of ``function`` (the function itself without numba),
    cached on disk where numba finds a writable directory for it, else compiled at every
    start (a read-only file system without a writable home or ``NUMBA_CACHE_DIR``)."""
    if numba is None:
        return function
    try:
        return numba.njit(cache=True, nogil=True, error_model="numpy")(function)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return numba.njit(nogil=True, error_model="numpy")(function)


@_compiled
def _window_start(times: np.ndarray, hi: int, start: int) -> int:
    """The first of the entries before ``hi`` (sorted times) at or after ``start``."""
    lo = hi
    while lo > 0 and times[lo - 1] >= start:
        lo -= 1
    return lo


@_compiled
def _merged_stats(
    n0: float, mean0: float, m2_0: float, shift: float, k: float, s: float, q: float
) -> tuple[float, float, float]:
    """Chan's merge of (count, mean, M2) with a block of ``k`` amounts whose sum and sum of
    squares, less ``shift`` each, are ``s`` and ``q``: ``advance_running_grouped``'s
    ``merge``, operation for operation."""
    block_mean = shift + s / k if k > 0 else 0.0
    block_m2 = max(q - s * s / k, 0.0) if k > 0 else 0.0
    n = n0 + k
    delta = block_mean - mean0
    mean = mean0 + delta * k / n if n > 0 else 0.0
    m2 = m2_0 + block_m2 + delta * delta * n0 * k / n if n > 0 else 0.0
    return n, mean, m2


@_compiled
def _same_id(ids: np.ndarray, a: int, b: int) -> bool:
    """Whether rows ``a`` and ``b`` of ``ids`` (an id's words, see :func:`id_words`) are equal."""
    for w in range(ids.shape[1]):  # noqa: SIM110 - a loop is what numba compiles best
        if ids[a, w] != ids[b, w]:
            return False
    return True


def _advance_groups(
    bounds: np.ndarray,
    h_t: np.ndarray,
    h_a: np.ndarray,
    count: np.ndarray,
    mean: np.ndarray,
    m2: np.ndarray,
    sin_sum: np.ndarray,
    cos_sum: np.ndarray,
    last_time: np.ndarray,
    q_group: np.ndarray,
    q_t: np.ndarray,
    q_a: np.ndarray,
    ids: np.ndarray,
    long_widths: np.ndarray,
    short_widths: np.ndarray,
    history_us: int,
    max_history: int,
    day_us: int,
    hour_us: int,
    micros: float,
    since_cap: float,
    std_floor: float,
) -> tuple[np.ndarray, ...]:
    """Features of the queries (input order) and the states after them.

    History entries ``bounds[g]:bounds[g+1]`` of customer ``g`` are sorted by time; each
    query is merged after the history entries of equal time and after earlier queries of
    equal time (a stable sort, as ``advance_batch``). A query sees entries strictly earlier
    than itself. Running statistics follow ``advance_running_grouped``'s arithmetic (Chan's
    merge of the start with each prefix of the customer's queries, over sums shifted by the
    customer's first amount), so that both paths agree to the last bits but for libm.
    Terminals are compared by ``ids``: a row of words per history entry, then one per
    query (:func:`id_words`).

    Returns the features (a row per query, in ``CUSTOMER_ACTIVITY_FEATURES`` order: 3 per
    long window, 4 per short window, z-score, hour deviation, seconds since last, terminal
    is new), the new bounds, the source of each kept entry (an index into history followed
    by queries), its time and amount, the five running statistics and the last times."""
    groups = len(bounds) - 1
    n = len(q_t)
    features = np.zeros((n, 3 * len(long_widths) + 4 * len(short_widths) + 4))
    # queries by (group, time), stable: a counting sort by group, then insertion by time
    sizes = np.zeros(groups, dtype=np.int64)
    for i in range(n):
        sizes[q_group[i]] += 1
    first = np.zeros(groups + 1, dtype=np.int64)
    for g in range(groups):
        first[g + 1] = first[g] + sizes[g]
    order = np.empty(n, dtype=np.int64)
    fill = first[:groups].copy()
    for i in range(n):
        order[fill[q_group[i]]] = i
        fill[q_group[i]] += 1
    for g in range(groups):
        for j in range(first[g] + 1, first[g + 1]):
            item = order[j]
            k = j - 1
            while k >= first[g] and q_t[order[k]] > q_t[item]:
                order[k + 1] = order[k]
                k -= 1
            order[k + 1] = item

    # running statistics (advance_running_grouped): sums shifted by each group's first amount,
    # exclusive prefixes taken from one cumulative sum over all queries, as numpy does
    two_pi = 2 * math.pi
    shift = np.zeros(groups)
    for g in range(groups):
        if sizes[g] > 0:
            shift[g] = q_a[order[first[g]]]
    cum_s = np.zeros(n + 1)
    cum_q = np.zeros(n + 1)
    cum_sin = np.zeros(n + 1)
    cum_cos = np.zeros(n + 1)
    for j in range(n):
        i = order[j]
        d = q_a[i] - shift[q_group[i]]
        angle = two_pi * ((q_t[i] % day_us) / hour_us) / 24
        cum_s[j + 1] = cum_s[j] + d
        cum_q[j + 1] = cum_q[j] + d * d
        cum_sin[j + 1] = cum_sin[j] + math.sin(angle)
        cum_cos[j + 1] = cum_cos[j] + math.cos(angle)

    total = bounds[groups] + n
    out_t = np.empty(total, dtype=np.int64)
    out_a = np.empty(total)
    out_src = np.empty(total, dtype=np.int64)
    out_bounds = np.zeros(groups + 1, dtype=np.int64)
    after = np.zeros((5, groups))
    out_last = np.zeros(groups, dtype=np.int64)
    merged_t = np.empty(total, dtype=np.int64)
    merged_a = np.empty(total)
    merged_src = np.empty(total, dtype=np.int64)
    kept = 0
    for g in range(groups):
        lo_h, hi_h = bounds[g], bounds[g + 1]
        # merge the history and the group's queries (history first at equal times)
        h, j, m = lo_h, first[g], 0
        while h < hi_h or j < first[g + 1]:
            if h < hi_h and (j == first[g + 1] or h_t[h] <= q_t[order[j]]):
                merged_t[m], merged_a[m] = h_t[h], h_a[h]
                merged_src[m] = h
                h += 1
            else:
                i = order[j]
                merged_t[m], merged_a[m] = q_t[i], q_a[i]
                merged_src[m] = bounds[groups] + i
                j += 1
            m += 1

        n0, mean0, m2_0 = count[g], mean[g], m2[g]
        base_s, base_q = cum_s[first[g]], cum_q[first[g]]
        base_sin, base_cos = cum_sin[first[g]], cum_cos[first[g]]
        for j in range(first[g], first[g + 1]):
            i = order[j]
            t = q_t[i]
            row = features[i]
            # entries strictly earlier than the query: [0, hi); windows [t - width, t)
            hi = 0
            while hi < m and merged_t[hi] < t:
                hi += 1
            col = 0
            for w in range(len(long_widths)):
                lo = _window_start(merged_t, hi, t - long_widths[w])
                k = hi - lo
                s = 0.0
                sq = 0.0
                for p in range(lo, hi):
                    s += merged_a[p]
                    sq += merged_a[p] * merged_a[p]
                avg = s / k if k > 0 else 0.0
                var = max(sq / k - avg * avg, 0.0) if k > 0 else 0.0
                row[col], row[col + 1], row[col + 2] = k, avg, math.sqrt(var)
                col += 3
            for w in range(len(short_widths)):
                lo = _window_start(merged_t, hi, t - short_widths[w])
                k = hi - lo
                s = 0.0
                distinct = 0
                for p in range(lo, hi):
                    s += merged_a[p]
                    seen = False
                    for r in range(lo, p):
                        if _same_id(ids, merged_src[r], merged_src[p]):
                            seen = True
                            break
                    if not seen:
                        distinct += 1
                row[col], row[col + 1] = k, s
                row[col + 2] = s / k if k > 0 else 0.0
                row[col + 3] = distinct
                col += 4

            # the running statistics before this query
            n_before, mean_before, m2_before = _merged_stats(
                n0, mean0, m2_0, shift[g], float(j - first[g]), cum_s[j] - base_s,
                cum_q[j] - base_q,
            )  # fmt: skip
            sin_before = sin_sum[g] + (cum_sin[j] - base_sin)
            cos_before = cos_sum[g] + (cum_cos[j] - base_cos)
            std = math.sqrt(m2_before / n_before if n_before > 0 else 0.0)
            z = (q_a[i] - mean_before) / max(std, std_floor)
            row[col] = z if n_before >= 2 else 0.0
            gap = two_pi * ((t % day_us) / hour_us) / 24 - math.atan2(sin_before, cos_before)
            gap = abs(math.atan2(math.sin(gap), math.cos(gap)))
            row[col + 1] = gap * 24 / two_pi if n_before > 0 else 0.0
            since = (t - merged_t[hi - 1]) / micros if hi > 0 else since_cap
            row[col + 2] = min(since, since_cap)
            new = 1.0
            p = hi - 1
            while p >= 0 and merged_t[p] >= t - history_us:
                if _same_id(ids, merged_src[p], bounds[groups] + i):
                    new = 0.0
                    break
                p -= 1
            row[col + 3] = new

        # the state after the batch
        after[0, g], after[1, g], after[2, g] = _merged_stats(
            n0, mean0, m2_0, shift[g], float(sizes[g]), cum_s[first[g + 1]] - base_s,
            cum_q[first[g + 1]] - base_q,
        )  # fmt: skip
        after[3, g] = sin_sum[g] + (cum_sin[first[g + 1]] - base_sin)
        after[4, g] = cos_sum[g] + (cum_cos[first[g + 1]] - base_cos)
        newest = merged_t[m - 1] if m > 0 else 0
        out_last[g] = max(newest, last_time[g])
        for p in range(m):
            if merged_t[p] >= out_last[g] - history_us and p >= m - max_history:
                out_t[kept], out_a[kept], out_src[kept] = merged_t[p], merged_a[p], merged_src[p]
                kept += 1
        out_bounds[g + 1] = kept
    return features, out_bounds, out_src[:kept], out_t[:kept], out_a[:kept], after, out_last


advance_groups = _compiled(_advance_groups)


def advance(
    bounds: np.ndarray,
    history_time_us: np.ndarray,
    history_amount: np.ndarray,
    stats: f.RunningStats,
    last_time_us: np.ndarray,
    group: np.ndarray,
    time_us: np.ndarray,
    amount: np.ndarray,
    ids: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """:func:`advance_groups` with the constants of :mod:`fraudops.features`; ``ids`` are
    the terminals of the history entries and then of the transactions, as :func:`id_words`
    makes them. Arrays are passed contiguous, so that numba compiles one specialisation
    (see :func:`warm_up`). Shapes and indices are checked here: compiled code does not
    check its indexing, so a bad group number would write outside the arrays instead of
    raising."""
    ints, floats = np.int64, np.float64
    bounds, group = _c(bounds, ints), _c(group, ints)
    groups, history = len(bounds) - 1, len(history_time_us)
    stat_lengths = {len(getattr(stats, name)) for name in stats.__dict__}
    if (
        groups < 0 or bounds[0] != 0 or bounds[-1] != history or (np.diff(bounds) < 0).any()
        or len(history_amount) != history
        or stat_lengths | {len(last_time_us)} != {groups}
        or {len(time_us), len(amount)} != {len(group)}
        or ids.ndim != 2 or ids.shape[0] != history + len(group)
        or (len(group) and (group.min() < 0 or group.max() >= groups))
    ):  # fmt: skip
        raise ValueError("advance: inconsistent state batch or transactions (shapes, groups)")
    return advance_groups(
        bounds, _c(history_time_us, ints), _c(history_amount, floats),
        *(_c(getattr(stats, name), floats)
          for name in ("count", "amount_mean", "amount_m2", "hour_sin_sum", "hour_cos_sum")),
        _c(last_time_us, ints), group, _c(time_us, ints), _c(amount, floats), _c(ids, ints),
        LONG_WIDTHS, SHORT_WIDTHS, f.HISTORY_US, f.MAX_HISTORY, f.DAY_US, f.HOUR_US,
        float(f.MICROS), float(f.SINCE_LAST_CAP_S), float(f.AMOUNT_STD_FLOOR),
    )  # fmt: skip


def id_words(*columns: np.ndarray) -> np.ndarray:
    """Ids of the columns concatenated, as rows of int64 words that are equal exactly when
    the ids are: the ids' own bytes when they are fixed-width ``S`` arrays of one width
    (8 bytes a word, zero-padded: the stream's and the decoded states' terminal ids), else
    one word each, the id's code (:func:`fraudops.features.identity_codes`). Taking the
    bytes as they are spares the codes' hashing: measured on the 1,664 terminal ids of a
    batch of 16 customers (7 bytes each), 16 µs against 50-54 µs for ``identity_codes``."""
    arrays = [np.asarray(column) for column in columns]
    if len({a.dtype for a in arrays}) == 1 and arrays[0].dtype.kind == "S":
        joined = np.concatenate(arrays)
        width = joined.dtype.itemsize
        words = np.zeros((len(joined), -(-width // 8) * 8), dtype=np.uint8)
        words[:, :width] = np.frombuffer(joined.tobytes(), np.uint8).reshape(len(joined), width)
        return words.view(np.int64)
    return f.identity_codes(*arrays).reshape(-1, 1)


def _c(values: Any, dtype: Any) -> np.ndarray:
    return np.ascontiguousarray(values, dtype=dtype)


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels now, not at the first request."""
    if not available():
        return
    none, one = np.zeros(0, np.int64), np.zeros(1, np.int64)
    advance(np.zeros(2, np.int64), none, np.zeros(0), f.RunningStats.empty(), one, one, one,
            np.ones(1), np.zeros((1, 1), np.int64))  # fmt: skip
    encoded, ends = encode_int64_lists(np.zeros(2, np.int64), one, 0x72, 0x0A)
    decode_number_lists(encoded, ends[1:], 0x72, 0x0A, False)
    # with the arrays' kinds of the codec's calls: bytes taken as they are are read-only
    u8, bits = np.frombuffer(b"\0", np.uint8), np.zeros(1, np.uint64)
    encode_state_hsets(u8, u8, np.array([0, 1]), u8, np.array([0, 1]), u8, np.array([0, 1]),
                       one, bits, u8.reshape(1, 1), one, np.zeros((1, 4), np.uint64),
                       np.arange(6))  # fmt: skip
    decode_states(u8[:0], np.zeros(8, np.int64), 8, np.arange(6))


# --- the state codec: packed int64 lists ----------------------------------------------------
@_compiled
def _varint_size(value: Any) -> int:
    size = 1
    while value > 0x7F:
        value >>= np.uint64(7)
        size += 1
    return size


@_compiled
def _put_varint(out: np.ndarray, pos: int, value: Any) -> int:
    while value > 0x7F:
        out[pos] = (value & np.uint64(0x7F)) | np.uint64(0x80)
        value >>= np.uint64(7)
        pos += 1
    out[pos] = value
    return pos + 1


@_compiled
def _packed_size(values: np.ndarray, lo: int, hi: int) -> int:
    """Bytes of the varints of ``values[lo:hi]``."""
    size = 0
    for p in range(lo, hi):
        size += _varint_size(np.uint64(values[p]))
    return size


@_compiled
def _int64_list_length(packed: int) -> int:
    """Bytes of a packed int64 list ``Value`` whose varints take ``packed`` bytes."""
    inner = 1 + _varint_size(np.uint64(packed)) + packed if packed else 0
    return 1 + _varint_size(np.uint64(inner)) + inner


@_compiled
def _put_int64_list(
    out: np.ndarray, pos: int, values: np.ndarray, lo: int, hi: int, packed: int,
    value_tag: int, list_tag: int,
) -> int:  # fmt: skip
    """``values[lo:hi]`` as a packed int64 list ``Value`` (see :func:`encode_int64_lists`),
    whose varints take ``packed`` bytes; returns the position after it."""
    out[pos] = value_tag
    if packed == 0:
        out[pos + 1] = 0
        return pos + 2
    pos = _put_varint(out, pos + 1, np.uint64(1 + _varint_size(np.uint64(packed)) + packed))
    out[pos] = list_tag
    pos = _put_varint(out, pos + 1, np.uint64(packed))
    for p in range(lo, hi):
        pos = _put_varint(out, pos, np.uint64(values[p]))
    return pos


@_compiled
def encode_int64_lists(
    bounds: np.ndarray, values: np.ndarray, value_tag: int, list_tag: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each group ``g``, the serialized ``Value`` holding ``values[bounds[g]:bounds[g+1]]``
    as a packed int64 list: ``value_tag``, the length, then (unless empty) ``list_tag``, the
    length and the varints (negatives as ten bytes), byte for byte what protobuf writes
    (tested). One buffer for all groups: group ``g``'s bytes are ``ends[g]:ends[g+1]``."""
    groups = len(bounds) - 1
    out = np.empty(10 * len(values) + 23 * groups, dtype=np.uint8)
    ends = np.zeros(groups + 1, dtype=np.int64)
    pos = 0
    for g in range(groups):
        packed = _packed_size(values, bounds[g], bounds[g + 1])
        pos = _put_int64_list(out, pos, values, bounds[g], bounds[g + 1], packed, value_tag,
                              list_tag)  # fmt: skip
        ends[g + 1] = pos
    return out[:pos], ends


@_compiled
def decode_number_lists(
    data: np.ndarray, ends: np.ndarray, value_tag: int, list_tag: int, fixed64: bool
) -> tuple[np.ndarray, np.ndarray, bool]:
    """The reverse of :func:`encode_int64_lists`, for int64 (varints) or double (``fixed64``)
    lists: ``data[ends[g-1]:ends[g]]`` is group ``g``'s serialized ``Value`` (empty: an empty
    list). Returns every value's 64 bits (to view as int64 or float64), each group's count,
    and False where a Value is laid out otherwise (unpacked, another type): the caller
    then decodes value by value."""
    groups = len(ends)
    bits = np.empty(len(data) // 8 + 1 if fixed64 else len(data), dtype=np.uint64)  # at most
    counts = np.zeros(groups, dtype=np.int64)
    n = 0
    start = 0
    for g in range(groups):
        first = n
        n = _read_number_list(data, start, ends[g], value_tag, list_tag, fixed64, bits, n)
        if n < 0:
            return bits[:0], counts, False
        counts[g] = n - first
        start = ends[g]
    return bits[:n], counts, True


@_compiled
def _read_number_list(
    data: np.ndarray, pos: int, end: int, value_tag: int, list_tag: int, fixed64: bool,
    out: np.ndarray, n: int,
) -> int:  # fmt: skip
    """The numbers of the list ``Value`` at ``data[pos:end]`` (nothing there: an empty list)
    into ``out`` from ``n`` on, as 64 bits each; returns the next ``n``, or -1 for a Value
    laid out otherwise (unpacked, another type)."""
    if pos == end:
        return n
    if data[pos] != value_tag:
        return -1
    length, pos = _get_varint(data, pos + 1, end)
    if pos < 0 or pos + length != end:
        return -1
    if length == 0:
        return n
    if data[pos] != list_tag:
        return -1
    size, pos = _get_varint(data, pos + 1, end)
    if pos < 0 or pos + size != end or (fixed64 and size % 8):
        return -1
    while pos < end:
        if fixed64:
            out[n] = _get_fixed64(data, pos)
            pos += 8
        else:
            out[n], pos = _get_varint(data, pos, end)
            if pos < 0:
                return -1
        n += 1
    return n


@_compiled
def _get_fixed64(data: np.ndarray, pos: int) -> Any:
    """The little-endian 64 bits at ``pos``."""
    value = np.uint64(0)
    for b in range(8):
        value |= np.uint64(data[pos + b]) << np.uint64(8 * b)
    return value


@_compiled
def _get_varint(data: np.ndarray, pos: int, end: int) -> tuple[Any, int]:
    """A varint at ``pos`` and the position after it; position -1 if it runs past ``end``
    or past ten bytes."""
    value = np.uint64(0)
    shift = 0
    while pos < end and shift < 70:
        byte = data[pos]
        value |= np.uint64(byte & 0x7F) << np.uint64(shift)
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7
    return value, -1


# --- the state codec: whole HSET commands ---------------------------------------------------
@_compiled
def _put_bulk_header(out: np.ndarray, pos: int, length: int) -> int:
    """RESP's ``$<length>\\r\\n``."""
    out[pos] = 0x24  # $
    pos += 1
    digits = 1
    scale = 10
    while scale <= length:
        digits += 1
        scale *= 10
    for d in range(digits - 1, -1, -1):
        out[pos + d] = 0x30 + length % 10
        length //= 10
    pos += digits
    out[pos] = 0x0D
    out[pos + 1] = 0x0A
    return pos + 2


@_compiled
def _put_bytes(out: np.ndarray, pos: int, data: np.ndarray, lo: int, hi: int) -> int:
    for i in range(lo, hi):
        out[pos] = data[i]
        pos += 1
    return pos


@_compiled
def _put_fixed64(out: np.ndarray, pos: int, value: Any) -> int:
    for b in range(8):
        out[pos + b] = (value >> np.uint64(8 * b)) & np.uint64(0xFF)
    return pos + 8


@_compiled
def encode_state_hsets(
    head: np.ndarray,
    keys: np.ndarray,
    key_ends: np.ndarray,
    fields: np.ndarray,
    field_ends: np.ndarray,
    tail: np.ndarray,
    bounds: np.ndarray,
    times: np.ndarray,
    amount_bits: np.ndarray,
    terminals: np.ndarray,
    counts: np.ndarray,
    double_bits: np.ndarray,
    tags: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Every customer's state write as one RESP ``HSET`` command, all in one buffer (command
    ``g`` is ``out[ends[g]:ends[g+1]]``): ``head``, the bulk key ``keys[key_ends[g]:
    key_ends[g+1]]``, then per state field its bulk name (``fields`` between ``field_ends``)
    and its serialized ``Value`` as a bulk string, then ``tail`` (the write-time field and
    value). The Values are :func:`fraudops.redis_fast.encode_state`'s bytes (tested): the
    times as a packed int64 list, the amounts as a packed double list, the terminal ids
    (rows of ``terminals``, fixed-width ASCII) as a string list, the count as an int64,
    then the four doubles of ``double_bits``. ``tags`` are the Value tags in that order:
    int64 list, double list, string list, the lists' ``val``, int64, double."""
    groups = len(bounds) - 1
    width = terminals.shape[1]
    entry = 1 + _varint_size(np.uint64(width)) + width
    n_fields = len(field_ends) - 1
    # At most, per customer: the key and each value as bulk strings ("$", 20 digits, two
    # CRLFs: 25 bytes of framing each), the values' tags and lengths (22 bytes for each
    # list of numbers, 11 for the ids' list and the count, 9 for each double); per history
    # entry a 10-byte varint, 8 bytes and an id. No write can then pass the buffer's end.
    size = groups * (len(head) + len(tail) + field_ends[n_fields] + 25 * (n_fields + 1))
    size += groups * (22 + 22 + 11 + 11 + 9 * (n_fields - 4))
    size += key_ends[groups] + len(times) * (10 + 8 + entry)
    out = np.empty(size, dtype=np.uint8)
    ends = np.zeros(groups + 1, dtype=np.int64)
    pos = 0
    for g in range(groups):
        lo, hi = bounds[g], bounds[g + 1]
        n = hi - lo
        pos = _put_bytes(out, pos, head, 0, len(head))
        pos = _put_bulk_header(out, pos, key_ends[g + 1] - key_ends[g])
        pos = _put_bytes(out, pos, keys, key_ends[g], key_ends[g + 1])
        out[pos], out[pos + 1] = 0x0D, 0x0A
        pos += 2
        for k in range(n_fields):
            pos = _put_bytes(out, pos, fields, field_ends[k], field_ends[k + 1])
            if k == 0:  # times: [tag, len, [val, len, varints...]]
                packed = _packed_size(times, lo, hi)
                length = _int64_list_length(packed)
            elif k == 1:  # amounts: [tag, len, [val, len, 8 bytes each]]
                inner = 1 + _varint_size(np.uint64(8 * n)) + 8 * n if n else 0
                length = 1 + _varint_size(np.uint64(inner)) + inner
            elif k == 2:  # terminal ids: [tag, len, [val, width, bytes] each]
                inner = n * entry
                length = 1 + _varint_size(np.uint64(inner)) + inner
            elif k == 3:  # the count: [tag, varint]
                length = 1 + _varint_size(np.uint64(counts[g]))
            else:  # a double: [tag, 8 bytes]
                length = 9
            pos = _put_bulk_header(out, pos, length)
            if k == 0:
                pos = _put_int64_list(out, pos, times, lo, hi, packed, tags[0], tags[3])
            elif k == 1:
                out[pos] = tags[1]
                pos = _put_varint(out, pos + 1, np.uint64(inner))
                if n:
                    out[pos] = tags[3]
                    pos = _put_varint(out, pos + 1, np.uint64(8 * n))
                    for p in range(lo, hi):
                        pos = _put_fixed64(out, pos, amount_bits[p])
            elif k == 2:
                out[pos] = tags[2]
                pos = _put_varint(out, pos + 1, np.uint64(inner))
                for p in range(lo, hi):
                    out[pos] = tags[3]
                    pos = _put_varint(out, pos + 1, np.uint64(width))
                    for b in range(width):
                        out[pos + b] = terminals[p, b]
                    pos += width
            elif k == 3:
                out[pos] = tags[4]
                pos = _put_varint(out, pos + 1, np.uint64(counts[g]))
            else:
                out[pos] = tags[5]
                pos = _put_fixed64(out, pos + 1, double_bits[g, k - 4])
            out[pos], out[pos + 1] = 0x0D, 0x0A
            pos += 2
        pos = _put_bytes(out, pos, tail, 0, len(tail))
        ends[g + 1] = pos
    return out[:pos], ends


@_compiled
def decode_states(
    data: np.ndarray, ends: np.ndarray, stride: int, tags: np.ndarray
) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray, np.ndarray, Any, np.ndarray]:
    """The reverse of :func:`encode_state_hsets`' Values, all customers of a batch in one
    pass: ``data[ends[i-1]:ends[i]]`` is field ``i % stride`` of customer ``i // stride``
    (empty: absent); fields 0-7 are the state's, any after them are not read.

    Returns ok, each customer's history length, the times, the amounts' bits, the
    terminal ids' bytes (one row per id, ``width`` wide), ``width``, and per customer its
    count and four doubles (as bits, one row each). A customer whose times are absent is
    empty. ok is False for anything laid out otherwise (another writer's Values, ids of
    different widths or not ASCII, lists of different lengths): the caller then decodes
    value by value."""
    groups = len(ends) // stride
    sizes = np.zeros(3, dtype=np.int64)  # bytes of each list field: bounds of the outputs
    for g in range(groups):
        for k in range(3):
            i = g * stride + k
            sizes[k] += ends[i] - (ends[i - 1] if i > 0 else 0)
    times = np.empty(sizes[0], dtype=np.uint64)  # a varint takes a byte or more
    bits = np.empty(sizes[1] // 8 + 1, dtype=np.uint64)
    ids = np.empty(sizes[2], dtype=np.uint8)
    lengths = np.zeros(groups, dtype=np.int64)
    stats = np.zeros((groups, 5), dtype=np.uint64)  # count, then the doubles' bits
    width = np.int64(-1)
    n_times = n_amounts = n_ids = 0
    nothing = np.zeros(0, dtype=np.uint64)
    failed = (False, lengths, times[:0], nothing, ids[:0], 0, stats)
    for g in range(groups):
        base = g * stride
        start = ends[base - 1] if base > 0 else 0
        if ends[base] == start:  # no history: a new customer, whatever else it holds
            continue
        first_time, first_amount, first_id = n_times, n_amounts, n_ids
        for k in range(8):
            pos = ends[base + k - 1] if base + k > 0 else 0
            end = ends[base + k]
            if k == 3:  # the count: [tag, varint], or absent
                if pos < end:
                    if data[pos] != tags[4]:
                        return failed
                    value, pos = _get_varint(data, pos + 1, end)
                    if pos != end:
                        return failed
                    stats[g, 0] = value
                continue
            if k >= 4:  # a double: [tag, 8 bytes], or absent
                if pos < end:
                    if end - pos != 9 or data[pos] != tags[5]:
                        return failed
                    stats[g, k - 3] = _get_fixed64(data, pos + 1)
                continue
            if k == 0:  # the times, packed varints (see _read_number_list)
                n_times = _read_number_list(data, pos, end, tags[0], tags[3], False, times, n_times)
                if n_times < 0:
                    return failed
                continue
            if k == 1:  # the amounts, packed doubles
                n_amounts = _read_number_list(data, pos, end, tags[1], tags[3], True, bits,
                                              n_amounts)  # fmt: skip
                if n_amounts < 0:
                    return failed
                continue
            # k == 2, the ids: [tag, length, [val, width, bytes] per id] (empty: [tag, 0])
            if end - pos < 2 or data[pos] != tags[k]:
                return failed
            length, pos = _get_varint(data, pos + 1, end)
            if pos < 0 or pos + length != end:
                return failed
            while pos < end:
                if data[pos] != tags[3]:
                    return failed
                wide, pos = _get_varint(data, pos + 1, end)
                size = np.int64(wide)
                if pos < 0 or pos + size > end or size <= 0 or (width >= 0 and size != width):
                    return failed
                width = size
                for b in range(size):
                    byte = data[pos + b]
                    if byte == 0 or byte >= 0x80:
                        return failed
                    ids[n_ids * size + b] = byte
                pos += size
                n_ids += 1
        count = n_times - first_time
        if n_amounts - first_amount != count or n_ids - first_id != count:
            return failed
        lengths[g] = count
    width = max(width, np.int64(0))
    return True, lengths, times[:n_times], bits[:n_amounts], ids[: n_ids * width], width, stats
