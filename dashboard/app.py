"""The FraudOps dashboard, for fraud analysts and ML engineers.

    streamlit run dashboard/app.py

Reads the FraudOps database and the MLflow registry named by the usual settings
(``FRAUDOPS_*`` variables or ``.env``), never the model files. Pages: Overview, Scores,
Drift, Models, Review queue, Alerts; the sidebar's time range and model versions apply to
all of them.
"""

import streamlit as st

from dashboard import data

st.set_page_config(page_title="FraudOps", page_icon=":material/shield:", layout="wide")

# The pages live in views/, not pages/: Streamlit treats a pages/ folder next to the entry
# script as a legacy multipage app and runs a deep-linked page without this script.
pages = st.navigation(
    {
        "Traffic": [
            st.Page(
                "views/overview.py", title="Overview", icon=":material/monitoring:", default=True
            ),
            st.Page("views/scores.py", title="Scores", icon=":material/bar_chart:"),
        ],
        "Model health": [
            st.Page("views/drift.py", title="Drift", icon=":material/timeline:"),
            st.Page("views/models.py", title="Models", icon=":material/model_training:"),
        ],
        "Analysts": [
            st.Page("views/review.py", title="Review queue", icon=":material/fact_check:"),
            st.Page("views/alerts.py", title="Alerts", icon=":material/notifications:"),
        ],
    }
)
st.session_state["filters"] = data.sidebar()
pages.run()
