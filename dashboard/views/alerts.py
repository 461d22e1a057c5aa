"""Alerts: what the monitor flagged (drift, latency, degraded scoring, quality); open ones
stay here until someone acknowledges them."""

import streamlit as st

from dashboard import data
from fraudops.monitoring.monitor import acknowledge_alerts

SEVERITY_ICONS = {"critical": "🔴", "warning": "🟠"}
COLUMNS = [
    "id",
    "severity",
    "kind",
    "message",
    "value",
    "threshold",
    "window_start",
    "window_end",
    "model_version",
    "created_at",
]
TIME = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")

st.title("Alerts")
f = data.current_filters()
if notice := st.session_state.pop("alerts_notice", None):
    st.success(notice, icon=":material/check_circle:")

found = data.alerts(f)
if found.empty:
    st.info(
        "No alert: the monitor (`fraudops monitor`) has flagged nothing in this time range.",
        icon=":material/notifications_off:",
    )
    st.stop()
found["severity"] = found["severity"].map(lambda s: f"{SEVERITY_ICONS.get(s, '')} {s}")
config = {
    "window_start": TIME,
    "window_end": TIME,
    "created_at": TIME,
    "acknowledged_at": TIME,
    "message": st.column_config.TextColumn(width="large"),
}

open_alerts = found[~found["acknowledged"]]
st.subheader(f"Open ({len(open_alerts)})")
if open_alerts.empty:
    st.success("No open alert.", icon=":material/task_alt:")
else:
    st.dataframe(open_alerts[COLUMNS], hide_index=True, column_config=config)
    with st.form("acknowledge", clear_on_submit=True):
        chosen = st.multiselect(
            "Alerts to acknowledge",
            open_alerts["id"].tolist(),
            key="to_acknowledge",
            format_func=lambda i: f"#{i} {open_alerts.set_index('id').loc[i, 'kind']}",
        )
        submitted = st.form_submit_button("Acknowledge", type="primary", key="acknowledge_button")
    if submitted:
        who = data.analyst()
        if not chosen:
            st.warning("Choose at least one alert.")
        elif not who:
            st.warning("Enter your name in the sidebar: acknowledgements record who made them.")
        else:
            count = acknowledge_alerts(data.engine(), [int(i) for i in chosen], who)
            data.clear_caches()
            st.session_state["alerts_notice"] = f"Acknowledged {count} alert(s) as {who}."
            st.rerun()

past = found[found["acknowledged"]]
st.subheader(f"Acknowledged in this time range ({len(past)})")
if not past.empty:
    st.dataframe(
        past[[*COLUMNS, "acknowledged_by", "acknowledged_at"]],
        hide_index=True,
        column_config=config,
    )
