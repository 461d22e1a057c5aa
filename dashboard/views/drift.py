"""Drift: what the monitor found, run after run, and its latest Evidently report."""

from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import data
from fraudops.monitoring.monitor import MonitorSettings

st.title("Drift")
f = data.current_filters()
runs = data.monitor_runs(f)
if runs.empty:
    st.info(
        "No monitor run in this time range. Run `fraudops monitor --window 1d` (or "
        "`--every 1h` to keep it running) to compare live traffic with the model's training "
        "data.",
        icon=":material/info:",
    )
    st.stop()

limits = MonitorSettings()
latest = runs.iloc[-1]
st.caption(
    f"Latest run: {latest['window_start']:%Y-%m-%d %H:%M} to {latest['window_end']:%Y-%m-%d %H:%M}"
    f" UTC, model v{latest['model_version']}, {latest['predictions']:,} predictions."
)
cols = st.columns(4)
checked = f" of {latest['features_checked']}"
cols[0].metric(
    "Drifted features",
    data.number(latest["drifted_features"], ".0f") + checked,
    help=f"Alert at {limits.alert_drift_share:.0%} of the features.",
)
cols[1].metric(
    "Score drift",
    data.number(latest["score_drift"]),
    help=f"{limits.drift_method} distance; alert at {limits.alert_score_drift}.",
)
cols[2].metric(
    "ROC AUC (labelled)",
    data.number(latest["roc_auc"]),
    help=f"{latest['labelled']:,} labelled predictions",
)
cols[3].metric("Alerts raised", int(latest["alerts"]))

trend = runs.melt(
    id_vars="window_end", value_vars=["drift_share", "score_drift"], var_name="measure"
).dropna()
figure = px.line(
    trend,
    x="window_end",
    y="value",
    color="measure",
    markers=True,
    title="Drift share and score drift per monitor run",
    labels={"window_end": "window end"},
)
figure.add_hline(y=limits.alert_drift_share, line_dash="dot", annotation_text="drift share alert")
figure.add_hline(y=limits.alert_score_drift, line_dash="dash", annotation_text="score drift alert")
st.plotly_chart(data.time_axis(figure, trend["window_end"]), key="trend")

per_feature = data.feature_drift(f)
if not per_feature.empty:
    grid = per_feature.pivot_table(index="feature", columns="window_end", values="score")
    grid = grid.loc[grid.max(axis=1).sort_values(ascending=False).index]
    # runs as labels, not a time axis (one run would get sub-millisecond ticks)
    grid.columns = pd.to_datetime(grid.columns).strftime("%Y-%m-%d %H:%M")
    heatmap = px.imshow(
        grid,
        aspect="auto",
        color_continuous_scale="OrRd",
        title=f"Per-feature drift score ({limits.drift_method}; drifted at "
        f"{limits.drift_threshold})",
        labels={"x": "window end", "y": "", "color": "score"},
        height=max(400, 18 * len(grid)),
    )
    st.plotly_chart(heatmap, key="heatmap")
    newest = per_feature[per_feature["window_end"] == per_feature["window_end"].max()]
    st.subheader("Latest run, most drifted features")
    st.dataframe(
        newest.sort_values("score", ascending=False)[
            ["feature", "score", "threshold", "drifted", "counted"]
        ].head(10),
        hide_index=True,
        column_config={
            "counted": st.column_config.CheckboxColumn(
                help="Counted in the drift share (FRAUDOPS_DRIFT_IGNORE_FEATURES excludes some)."
            )
        },
    )

st.subheader("Latest Evidently report")
html_path = latest["drift_report_path"]
html = data.report_html(html_path) if isinstance(html_path, str) else None
if not isinstance(html_path, str):
    st.info("The latest run saved no report (it had no predictions of the monitored model).")
elif html is None:
    st.warning(f"The latest run's report is gone from {html_path}.")
else:
    st.caption(f"{html_path}  (also in `evidently ui` if the run used a workspace)")
    st.iframe(Path(html_path), height=900)
quality_path = latest["quality_report_path"]
has_quality = isinstance(quality_path, str) and data.report_html(quality_path) is not None
# Each report is a few megabytes of HTML: send the second one only when asked for.
label = "Show the classification quality report (labelled part of the window)"
if has_quality and st.toggle(label, key="show_quality"):
    st.iframe(Path(quality_path), height=900)
