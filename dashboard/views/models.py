"""Models: registered versions, their aliases, test metrics side by side, promotion history,
and the @challenger against the @champion on the same live transactions (shadow scoring)."""

import json

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard import data
from fraudops.model.comparison import LABELS
from fraudops.model.comparison import METRICS as LIVE_METRICS

METRICS = {
    "test_roc_auc": "ROC AUC",
    "test_average_precision": "average precision",
    "test_precision_at_recall_70": "precision at 70 % recall",
    "test_card_precision_at_100": "card precision@100",
    "test_brier": "Brier score (lower is better)",
}

st.title("Models")
link, command = data.mlflow_ui_link()
st.markdown(f"[Open the model in the MLflow UI]({link})")
if command:
    st.caption(f"Tracking is a local store: start the UI with `{command}`.")

versions = data.model_versions()
name = data.settings().model_name
if versions.empty:
    st.info(
        f"No version of {name} is registered yet: `fraudops train` registers one, "
        "`fraudops promote` makes it @champion.",
        icon=":material/info:",
    )
    st.stop()

for column in METRICS:
    if column not in versions:
        versions[column] = float("nan")
    versions[column] = pd.to_numeric(versions[column], errors="coerce")

champion = versions[versions["aliases"].str.contains("@champion")]
if not champion.empty:
    row = champion.iloc[0]
    cols = st.columns(4)
    cols[0].metric("Champion", f"v{row['version']}")
    cols[1].metric("ROC AUC (test)", data.number(row["test_roc_auc"]))
    cols[2].metric("Average precision (test)", data.number(row["test_average_precision"]))
    cols[3].metric("Registered versions", len(versions))
else:
    st.warning(f"No version of {name} is @champion: the scorer cannot serve.")

st.subheader("Versions")
shown = ["version", "aliases", "status", "created"]
shown += ["train_start"] if "train_start" in versions else []
st.dataframe(
    versions[[*shown, *METRICS]].rename(columns=METRICS),
    hide_index=True,
    column_config={"created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")},
)

long = versions.melt(id_vars="version", value_vars=list(METRICS), var_name="metric").dropna()
if not long.empty:
    long["metric"] = long["metric"].map(METRICS)
    long["version"] = "v" + long["version"]
    st.plotly_chart(
        px.bar(
            long,
            x="metric",
            y="value",
            color="version",
            barmode="group",
            title="Test metrics side by side (each version on its own test window)",
        ),
        key="metrics",
    )

st.subheader("Promotion history")
if "promotion.decision" not in versions:
    versions["promotion.decision"] = None
promoted = versions.dropna(subset=["promotion.decision"])
if promoted.empty:
    st.info("No promotion recorded yet: `fraudops promote`.", icon=":material/info:")
else:
    history = pd.DataFrame(
        {
            "when": pd.to_datetime(promoted["promotion.at"], utc=True, errors="coerce"),
            "version": "v" + promoted["version"],
            "decision": promoted["promotion.decision"],
            "compared with": promoted.get("promotion.compared_with"),
            "window": promoted.get("promotion.window"),
            "by": promoted.get("promotion.by"),
            "reason": promoted.get("promotion.reason"),
        }
    ).sort_values("when", ascending=False)
    st.dataframe(
        history,
        hide_index=True,
        column_config={"when": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")},
    )
    with st.expander("Metrics compared at each promotion"):
        for _, row in promoted.iterrows():
            challenger = json.loads(row.get("promotion.challenger_metrics") or "{}")
            incumbent = json.loads(row.get("promotion.champion_metrics") or "{}")
            if challenger or incumbent:
                st.markdown(f"**v{row['version']}** against v{row['promotion.compared_with']}")
                st.dataframe(
                    pd.DataFrame({"challenger": challenger, "champion": incumbent}).round(4)
                )

st.subheader("Champion against challenger on live traffic")
comparison, why = data.live_comparison(data.current_filters())
if comparison is None:
    st.info(why, icon=":material/info:")
    st.stop()
st.caption(
    f"@challenger v{comparison.challenger_version} scored in shadow beside @champion "
    f"v{comparison.champion_version} on the same transactions of the time range, as "
    "`fraudops compare` reports (and records on the version in MLflow)."
)
cols = st.columns(4)
cols[0].metric("Scored by both", f"{comparison.transactions:,}")
cols[1].metric("Same decision", f"{comparison.decision_agreement:.1%}")
cols[2].metric("Score rank correlation", data.number(comparison.score_rank_correlation))
cols[3].metric("Labelled frauds", f"{comparison.frauds:,} of {comparison.labelled:,}")

mix = pd.DataFrame(comparison.decision_mix).rename_axis("decision").reset_index()
mix = mix.melt(id_vars="decision", var_name="model", value_name="share")
st.plotly_chart(
    px.bar(
        mix,
        x="model",
        y="share",
        color="decision",
        color_discrete_map=data.DECISION_COLORS,
        title="Decision mix on the same transactions",
    ),
    key="live_mix",
)

if comparison.flips:
    flips = pd.DataFrame(
        [
            {"flip": key, "count": count, **example}
            for key, count in comparison.flips.items()
            for example in comparison.flip_examples.get(key, [])
        ]
    ).sort_values("count", ascending=False, kind="stable")
    st.markdown("**Decision flips** (champion -> challenger), largest score changes first")
    st.dataframe(flips, hide_index=True, key="live_flips")
else:
    st.success("Both models took the same decision on every transaction.")

if comparison.metrics:
    quality = pd.DataFrame(
        [
            {
                "metric": LABELS[name],
                **{
                    role: comparison.metrics[role][name].text(
                        ".3f" if role != "difference" else "+.3f"
                    )
                    for role in ("champion", "challenger", "difference")
                },
            }
            for name in LIVE_METRICS
        ]
    ).rename(columns={"difference": "challenger - champion"})
    st.markdown(
        f"**Labelled transactions** ({comparison.confidence:.0%} bootstrap intervals, "
        f"{comparison.resamples} resamples)"
    )
    st.dataframe(quality, hide_index=True, key="live_quality")
else:
    st.info(
        "No labelled transactions of both classes among them yet: quality figures come "
        "once labels arrive (`fraudops labels ingest`, or the review queue).",
        icon=":material/info:",
    )
