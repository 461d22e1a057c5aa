"""Overview: how much traffic, what was decided, how much of it was fraud, how fast."""

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import data

st.title("Overview")
for reason in data.stale_features().values():
    st.error(
        f"Stale batch features: {reason}. The scorer's /readyz fails until they are "
        "fresh again; check the nightly job (`fraudops nightly`, docs/nightly-job.md).",
        icon=":material/schedule:",
    )
f = data.current_filters()
frame = data.predictions(f)
if frame.empty:
    data.empty_log_message()
    st.stop()

labelled = frame["is_fraud"].notna()
mix = frame["decision"].value_counts(normalize=True)
p50, p95, p99 = np.percentile(frame["latency_ms"], [50, 95, 99])
cols = st.columns(6)
cols[0].metric("Predictions", f"{len(frame):,}")
cols[1].metric("Approved", f"{mix.get('approve', 0):.1%}")
cols[2].metric("Sent to review", f"{mix.get('review', 0):.1%}")
cols[3].metric("Blocked", f"{mix.get('block', 0):.1%}")
cols[4].metric(
    "Fraud rate (labelled)",
    f"{frame.loc[labelled, 'is_fraud'].mean():.2%}" if labelled.any() else "no labels yet",
    help=f"{int(labelled.sum()):,} of {len(frame):,} predictions have a label "
    "(chargebacks, analysts).",
)
cols[5].metric("Latency p99", f"{p99:.1f} ms", help=f"p50 {p50:.1f} ms, p95 {p95:.1f} ms")
degraded = frame["degraded"].mean()
if degraded > 0:
    st.warning(
        f"{degraded:.1%} of these predictions were scored in degraded mode (online store "
        "unreachable: default features).",
        icon=":material/warning:",
    )

bucket = data.bucketed(frame, f.freq)
unit = "hour" if f.freq == "h" else "day"
volume = frame.groupby([bucket, "decision"]).size().rename("predictions").reset_index()
st.plotly_chart(
    px.bar(
        volume, x="event_timestamp", y="predictions", color="decision",
        color_discrete_map=data.DECISION_COLORS, title=f"Predictions per {unit} by decision",
        labels={"event_timestamp": ""},
    ),
    key="volume",
)  # fmt: skip

left, right = st.columns(2)
latency = (
    frame.groupby(bucket)["latency_ms"]
    .quantile([0.5, 0.95, 0.99])
    .unstack()
    .rename(columns={0.5: "p50", 0.95: "p95", 0.99: "p99"})
    .reset_index()
    .melt(id_vars="event_timestamp", var_name="percentile", value_name="latency_ms")
)
left.plotly_chart(
    px.line(latency, x="event_timestamp", y="latency_ms", color="percentile",
            title=f"Scoring latency per {unit} (ms)", labels={"event_timestamp": ""}),
    key="latency",
)  # fmt: skip

rate = frame[labelled].groupby(bucket[labelled])["is_fraud"].agg(["mean", "size"]).reset_index()
if rate.empty:
    right.info("No labels in this range yet: `fraudops labels ingest chargebacks.csv`, or "
               "label transactions in the review queue.", icon=":material/info:")  # fmt: skip
else:
    figure = px.line(
        rate, x="event_timestamp", y="mean", markers=True, hover_data={"size": True},
        title=f"Fraud rate of labelled predictions per {unit}",
        labels={"event_timestamp": "", "mean": "fraud rate", "size": "labelled"},
    )  # fmt: skip
    figure.update_yaxes(tickformat=".1%")
    right.plotly_chart(figure, key="fraud_rate")

by_version = frame.groupby("model_version").agg(
    predictions=("decision", "size"),
    block_rate=("decision", lambda d: (d == "block").mean()),
    first=("event_timestamp", "min"),
    last=("event_timestamp", "max"),
)
st.subheader("By model version")
st.dataframe(
    by_version.reset_index().assign(block_rate=lambda d: d["block_rate"].map("{:.1%}".format)),
    hide_index=True,
    column_config={"first": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
                   "last": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")},
)  # fmt: skip
st.caption(
    f"Predictions by event time, {f.start:%Y-%m-%d} to {f.end - pd.Timedelta(days=1):%Y-%m-%d} UTC."
)
