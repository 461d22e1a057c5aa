"""Charts over time read sanely with a single point (one monitor run, one hour of traffic):
plotly alone zooms onto it until the ticks are sub-millisecond apart."""

from __future__ import annotations

import pandas as pd
import plotly.express as px

from dashboard.data import time_axis


def test_one_point_gets_the_day_around_it() -> None:
    runs = pd.DataFrame({"window_end": [pd.Timestamp("2026-05-12", tz="UTC")], "value": [0.2]})
    figure = time_axis(px.line(runs, x="window_end", y="value", markers=True), runs["window_end"])
    low, high = (pd.Timestamp(v) for v in figure.layout.xaxis.range)
    assert high - low == pd.Timedelta(hours=24)
    assert low < pd.Timestamp("2026-05-12", tz="UTC") < high
    assert figure.layout.xaxis.tickformat == "%Y-%m-%d %H:%M"


def test_several_points_keep_plotly_s_own_range() -> None:
    times = pd.Series(pd.date_range("2026-05-12", periods=3, freq="D", tz="UTC"))
    frame = pd.DataFrame({"window_end": times, "value": [0.1, 0.2, 0.3]})
    figure = time_axis(px.line(frame, x="window_end", y="value"), frame["window_end"])
    assert figure.layout.xaxis.range is None
