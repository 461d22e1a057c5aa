"""Review queue: transactions the model sent to review; an analyst decides fraud or not,
and the decision is recorded as a label (who and when) for monitoring and training."""

import streamlit as st

from dashboard import data
from fraudops.data.labels import record_analyst_labels

st.title("Review queue")
f = data.current_filters()
if notice := st.session_state.pop("review_notice", None):
    st.success(notice, icon=":material/check_circle:")

queue = data.review_queue(f)
if queue.empty:
    st.info(
        "Nothing to review in this time range: every transaction sent to review has a label.",
        icon=":material/task_alt:",
    )
else:
    st.caption(
        f"{len(queue):,} unlabelled transaction(s) decided `review`, riskiest first"
        + (
            f" (the first {data.REVIEW_QUEUE_LIMIT})"
            if len(queue) >= data.REVIEW_QUEUE_LIMIT
            else ""
        )
        + ". Reasons: the features that pushed the score up most."
    )
    st.dataframe(
        queue,
        hide_index=True,
        column_order=[
            "transaction_id",
            "event_timestamp",
            "fraud_probability",
            "amount",
            "customer_id",
            "terminal_id",
            "model_version",
            "reasons",
        ],
        column_config={
            "event_timestamp": st.column_config.DatetimeColumn(
                "time", format="YYYY-MM-DD HH:mm:ss"
            ),
            "fraud_probability": st.column_config.ProgressColumn(
                "fraud probability", min_value=0.0, max_value=1.0, format="%.3f"
            ),
            "amount": st.column_config.NumberColumn(format="%.2f"),
            "reasons": st.column_config.TextColumn(width="large"),
        },
    )
    with st.form("verdict", clear_on_submit=True):
        chosen = st.multiselect("Transactions", queue["transaction_id"].tolist(), key="to_label")
        verdict = st.radio("Verdict", ["Fraud", "Legitimate"], horizontal=True, key="verdict")
        submitted = st.form_submit_button("Record label", type="primary", key="record_label")
    if submitted:
        who = data.analyst()
        if not chosen:
            st.warning("Choose at least one transaction.")
        elif not who:
            st.warning("Enter your name in the sidebar: labels record who gave them.")
        else:
            count = record_analyst_labels(data.engine(), chosen, verdict == "Fraud", who)
            data.clear_caches()
            st.session_state["review_notice"] = (
                f"Recorded {count} label(s) as {verdict.lower()} by {who}."
            )
            st.rerun()

recent = data.recent_analyst_labels()
if not recent.empty:
    st.subheader("Recently labelled by analysts")
    recent["is_fraud"] = recent["is_fraud"].map({1: "fraud", 0: "legitimate"})
    st.dataframe(recent, hide_index=True)
    st.caption(
        "Analysts' labels reach the offline store (features, training) with `fraudops labels sync`."
    )
