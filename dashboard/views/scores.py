"""Scores: the fraud probability's distribution, by model version and over time."""

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import data

BINS = np.linspace(0, 1, 51)

st.title("Scores")
f = data.current_filters()
frame = data.predictions(f)
if frame.empty:
    data.empty_log_message()
    st.stop()

# Histograms are binned here, not in the browser: 100,000 raw points would be a slow page.
shares = []
for version, scores in frame.groupby("model_version")["fraud_probability"]:
    counts, _ = np.histogram(scores.to_numpy(), bins=BINS)
    shares.append(
        pd.DataFrame(
            {
                "fraud_probability": (BINS[:-1] + BINS[1:]) / 2,
                "share": counts / max(len(scores), 1),
                "model_version": f"v{version}",
            }
        )
    )
histogram = px.line(
    pd.concat(shares),
    x="fraud_probability",
    y="share",
    color="model_version",
    log_y=True,
    line_shape="hvh",
    title="Score distribution by model version (share of predictions, log)",
)
st.plotly_chart(histogram, key="histogram")

bucket = data.bucketed(frame, f.freq)
unit = "hour" if f.freq == "h" else "day"
quantiles = (
    frame.groupby([bucket, "model_version"])["fraud_probability"]
    .quantile([0.5, 0.9, 0.99])
    .rename("fraud_probability")
    .reset_index()
    .rename(columns={"level_2": "quantile"})
)
quantiles["series"] = (
    "v"
    + quantiles["model_version"]
    + " p"
    + (quantiles["quantile"] * 100).round().astype(int).astype(str)
)
st.plotly_chart(
    data.time_axis(
        px.line(
            quantiles,
            x="event_timestamp",
            y="fraud_probability",
            color="series",
            markers=True,
            title=f"Score quantiles per {unit}",
            labels={"event_timestamp": ""},
        ),
        quantiles["event_timestamp"],
    ),
    key="quantiles",
)

st.subheader("By model version")
summary = frame.groupby("model_version")["fraud_probability"].describe(percentiles=[0.5, 0.9, 0.99])
summary["count"] = summary["count"].astype(int)
st.dataframe(summary.round(4).reset_index(), hide_index=True)
