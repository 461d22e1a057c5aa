"""Training windows: by default the test window holds only transactions whose labels are
known now (a fraud not reported yet must not be scored as a legitimate transaction)."""

from __future__ import annotations

import pandas as pd

from fraudops.core import contract as c
from fraudops.model.training import plan_windows, split

DAY = pd.Timedelta(days=1)
START = pd.Timestamp("2026-03-01", tz="UTC")


def history(days: int, per_day: int = 24, delay: pd.Timedelta = 7 * DAY) -> pd.DataFrame:
    times = START + pd.to_timedelta(range(days * per_day), unit="h") * (24 / per_day)
    return pd.DataFrame({c.TIMESTAMP: times, c.LABEL_TIMESTAMP: times + delay, c.IS_FRAUD: 0})


def test_the_default_test_window_ends_before_the_first_unknown_label() -> None:
    tx = history(40)
    now = START + 30 * DAY + pd.Timedelta(hours=12)  # labels known up to day 23, 12:00
    w = plan_windows(tx, None, 7, 7, 7, now=now)
    assert w.test_end == START + 23 * DAY  # day 23 is half known: left out
    test = tx[(tx[c.TIMESTAMP] >= w.test_start) & (tx[c.TIMESTAMP] < w.test_end)]
    assert (test[c.LABEL_TIMESTAMP] <= now).all() and len(test) == 7 * 24


def test_a_label_late_beyond_the_usual_delay_ends_the_window_earlier() -> None:
    tx = history(50)
    late = tx.index[tx[c.TIMESTAMP] == START + 28 * DAY + pd.Timedelta(hours=5)]
    tx.loc[late, c.LABEL_TIMESTAMP] = START + 60 * DAY  # a chargeback still to come
    w = plan_windows(tx, None, 7, 7, 7, now=START + 40 * DAY + pd.Timedelta(hours=12))
    assert w.test_end == START + 28 * DAY


def test_split_keeps_test_rows_known_now() -> None:
    tx = history(30)
    w = plan_windows(tx, START.date(), 7, 7, 7)
    now = START + 25 * DAY  # test window days 14-21; labels known up to day 18
    parts = split(tx, w, now)
    assert (parts["test"][c.LABEL_TIMESTAMP] <= now).all()
    assert parts["test"][c.TIMESTAMP].max() == START + 18 * DAY < w.test_end
    assert len(split(tx, w)["test"]) == 7 * 24  # without ``now``: the whole window


def test_the_history_and_a_window_are_read_from_the_file_as_from_the_frame(settings) -> None:
    """``fraudops train`` plans from an aggregate query and reads only its window: the same
    windows and rows as from the whole file loaded in pandas (unlabelled rows ignored, a
    label still to come ends the default window, a missing label time counts as pending)."""
    from fraudops.data.ingest import write_parquet_atomic
    from fraudops.data.simulator import simulate
    from fraudops.model.training import LabelledHistory, labelled_history, read_labelled

    tx = simulate(customers=60, terminals=120, days=40, seed=2)
    tx[c.IS_FRAUD] = tx[c.IS_FRAUD].astype("float64")
    tx.loc[tx.index[-50:], c.IS_FRAUD] = None  # not labelled yet: never read
    tx.loc[tx.index[len(tx) * 7 // 8], c.LABEL_TIMESTAMP] = pd.NaT  # labelled, time unknown
    write_parquet_atomic(tx, settings.transactions_path)
    loaded = pd.read_parquet(settings.transactions_path)
    labelled = loaded[loaded[c.IS_FRAUD].notna()]
    first = labelled[c.TIMESTAMP].min().floor("D")
    for now in (first + 36 * DAY, first + 90 * DAY):
        history = labelled_history(settings, now)
        assert history == LabelledHistory.of(labelled, now)
        assert plan_windows(history, None, 7, 7, 7, now) == plan_windows(
            labelled, None, 7, 7, 7, now
        )
    assert history.first_pending is not None  # the row without a label time
    w = plan_windows(labelled, (first + 10 * DAY).date(), 7, 7, 7)
    window = read_labelled(settings, w.train_start, w.test_end)
    times = labelled[c.TIMESTAMP]
    expected = labelled[(times >= w.train_start) & (times < w.test_end)]
    pd.testing.assert_frame_equal(window.reset_index(drop=True), expected.reset_index(drop=True))
    assert len(window) > 1000
