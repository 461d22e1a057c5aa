"""The training-set read in chunks of whole days (fraudops.offline.day_chunks)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fraudops.features.offline import day_chunks


def times(per_day: list[int]) -> pd.Series:
    """``per_day[d]`` transactions on day d, shuffled, at distinct times of that day."""
    start = pd.Timestamp("2026-03-01", tz="UTC")
    values = [
        start + pd.Timedelta(days=d, seconds=17 * i)
        for d, n in enumerate(per_day)
        for i in range(n)
    ]
    return pd.Series(values).sample(frac=1, random_state=3).reset_index(drop=True)


def test_chunks_cover_every_row_once_in_day_order_in_whole_days() -> None:
    ts = times([5, 3, 0, 8, 2, 6, 1])
    chunks = day_chunks(ts, 7)
    rows = np.concatenate(chunks)
    assert sorted(rows.tolist()) == list(range(len(ts)))
    assert ts.iloc[rows].dt.floor("D").is_monotonic_increasing  # chunk after chunk
    days = [set(ts.iloc[chunk].dt.floor("D")) for chunk in chunks]
    for a, b in zip(days, days[1:], strict=False):
        assert not a & b  # a day is never split between chunks
    assert len(chunks) > 2


def test_a_chunk_takes_the_days_starting_within_its_rows() -> None:
    # days start at rows 0, 5, 8, 16, 18, 24 (sorted); chunks of 7 rows: days starting
    # in [0, 7) -> 0, 5; in [7, 14) -> 8; in [14, 21) -> 16, 18; in [21, 28) -> 24
    sizes = [len(chunk) for chunk in day_chunks(times([5, 3, 8, 2, 6, 1]), 7)]
    assert sizes == [8, 8, 8, 1]


def test_one_chunk_when_everything_fits_and_none_when_empty() -> None:
    ts = times([4, 4, 4])
    assert [len(chunk) for chunk in day_chunks(ts, 1_000)] == [12]
    assert day_chunks(pd.Series([], dtype="datetime64[us, UTC]"), 10) == []
