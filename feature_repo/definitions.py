"""FraudOps feature definitions: the data dictionary of every model input.

    feast -c feature_repo apply
    feast -c feature_repo materialize-incremental $(date -u +%Y-%m-%dT%H:%M:%S)
    feast -c feature_repo feature-views list

How the views fit together (see docs/feature-store.md):

- ``terminal_daily``: batch features per terminal and day, from labels known at the start of
  the day; materialized to the online store on a schedule.
- ``customer_activity``: per transaction, the customer's behaviour before it (windows,
  velocity, z-score, usual hour, recency). Offline it is the table ``fraudops features
  build`` computes; online the scorer computes the same values at request time from
  ``customer_state`` with the same functions (``fraudops.features.maths``), so it is not
  materialized (``online=False``).
- ``customer_state``: the real-time state behind ``customer_activity``: the last 30 days of
  the customer's transactions and running Welford statistics, as of the batch build. The
  online state lives in FraudOps' real-time state store (``fraudops.features.realtime``), which
  commits each scored transaction atomically; ``fraudops materialize`` seeds it with the
  customers it does not know yet.
- ``transaction_request``: on-demand features of the request itself.
- ``fraud_model_v1``: the one list of model inputs, for training and serving.
"""

from datetime import timedelta

import pandas as pd
from feast import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    RequestSource,
    ValueType,
)
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Float64, Int64, String

from fraudops.features import maths as f
from fraudops.features.feast_store import offline_source
from fraudops.features.realtime import STATE

_STATE_TYPES = {
    "int64[]": Array(Int64),
    "float64[]": Array(Float64),
    "string[]": Array(String),
    "int64": Int64,
    "float64": Float64,
}

# --- entities ---------------------------------------------------------------------------
customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A card holder (customer_id from the transaction).",
)
terminal = Entity(
    name="terminal",
    join_keys=["terminal_id"],
    value_type=ValueType.STRING,
    description="A point of sale or merchant terminal (terminal_id from the transaction).",
)
transaction = Entity(
    name="transaction",
    join_keys=["transaction_id"],
    value_type=ValueType.STRING,
    description="One card transaction; keys the per-transaction offline feature rows.",
)

# --- sources ----------------------------------------------------------------------------
# FileSource (DuckDB) or SparkSource (Spark), as FRAUDOPS_OFFLINE_STORE says
customer_activity_source = offline_source(
    "customer_activity", "Built by `fraudops features build`: one row per transaction."
)
customer_state_source = offline_source(
    "customer_state", "Built by `fraudops features build`: one row per customer, its latest state."
)
terminal_daily_source = offline_source(
    "terminal_daily", "Built by `fraudops features build`: one row per terminal and day start."
)
transaction_request = RequestSource(
    name="transaction_request",
    schema=[
        Field(name="amount", dtype=Float64, description="Transaction amount."),
        Field(name="tx_time_us", dtype=Int64, description="Transaction time, µs since epoch."),
    ],
    description="Fields of the scoring request used by on-demand features.",
)

# --- feature views ----------------------------------------------------------------------
_ACTIVITY_DESCRIPTIONS = {
    "tx_count": "Number of the customer's transactions in the {w} before this one.",
    "amount_avg": "Mean amount of the customer's transactions in the {w} before this one.",
    "amount_std": "Std (population) of the customer's amounts in the {w} before this one.",
    "amount_sum": "Total amount of the customer's transactions in the {w} before this one.",
    "terminal_count": "Distinct terminals the customer used in the {w} before this one.",
}
_SPECIAL_DESCRIPTIONS = {
    "customer_amount_zscore": "(amount - customer's running mean) / max(running std, 1), "
    "Welford statistics over all earlier transactions; 0 with fewer than 2.",
    "customer_hour_deviation": "Circular distance in hours between this transaction's hour "
    "and the customer's usual hour (circular mean of earlier transactions).",
    "customer_seconds_since_last_tx": "Seconds since the customer's previous transaction, "
    "capped at 30 days (also the value for a first transaction).",
    "customer_terminal_is_new": "1 if the customer did not use this terminal in the last "
    "30 days, else 0.",
}


def _activity_description(name: str) -> str:
    if name in _SPECIAL_DESCRIPTIONS:
        return _SPECIAL_DESCRIPTIONS[name]
    stat, window = name.removeprefix("customer_").rsplit("_", 1)
    return _ACTIVITY_DESCRIPTIONS[stat].format(w=window)


customer_activity = FeatureView(
    name="customer_activity",
    description="Customer behaviour before each transaction; computed online at request time "
    "from customer_state with the same functions as offline.",
    entities=[transaction],
    ttl=timedelta(0),
    schema=[
        Field(name=name, dtype=Float64, description=_activity_description(name))
        for name in f.CUSTOMER_ACTIVITY_FEATURES
    ],
    source=customer_activity_source,
    online=False,
    tags={"online_source": "customer_state"},
)

customer_state = FeatureView(
    name="customer_state",
    description="Real-time customer state: the last 30 days of transactions and running stats.",
    entities=[customer],
    ttl=timedelta(0),
    schema=[
        Field(name=name, dtype=_STATE_TYPES[kind], description=description)
        for name, kind, description in STATE
    ],
    source=customer_state_source,
    online=False,  # the scorers keep it in FraudOps' own keys (fraudops.features.realtime), seeded
    # from this table by `fraudops materialize`: a blind overwrite by Feast would lose the
    # transactions scored since the batch build
)

_TERMINAL_DESCRIPTIONS = {
    "tx_count": "Transactions at the terminal in the {d} before the start of the day.",
    "risk": "Share of fraud among the terminal's transactions of the {d} (plus the label "
    "delay) before the start of the day whose label was already known then.",
}
terminal_daily = FeatureView(
    name="terminal_daily",
    description="Terminal volume and label-based risk as of the start of each day.",
    entities=[terminal],
    ttl=timedelta(days=2),
    schema=[
        Field(
            name=name,
            dtype=Float64,
            description=_TERMINAL_DESCRIPTIONS["risk" if "risk" in name else "tx_count"].format(
                d=name.rsplit("_", 1)[1]
            ),
        )
        for name in f.TERMINAL_FEATURES
    ],
    source=terminal_daily_source,
    online=True,
)


# --- on-demand feature views --------------------------------------------------------------
# Feast 0.67 drops descriptions of on-demand fields when it reads the registry back
# (OnDemandFeatureView._parse_features_from_proto) and then refuses the service projection,
# so these fields are described in the view's description instead.
@on_demand_feature_view(
    sources=[transaction_request],
    schema=[Field(name=name, dtype=Float64) for name in f.REQUEST_FEATURES],
    mode="pandas",
    description="Features of the transaction itself, computed from the request: "
    "tx_amount (the amount), tx_amount_log (log(1 + amount)), tx_hour (UTC hour of day, "
    "fractional), tx_is_night (1 between 00:00 and 06:00 UTC), tx_is_weekend (1 on "
    "Saturday and Sunday).",
)
def transaction_features(inputs: pd.DataFrame) -> pd.DataFrame:
    # Feast stores this function's source and runs it without this module's globals.
    import pandas as pd

    from fraudops.features.maths import request_features

    features = request_features(inputs["amount"].to_numpy(), inputs["tx_time_us"].to_numpy())
    return pd.DataFrame(features, index=inputs.index)


# --- feature services ---------------------------------------------------------------------
fraud_model_v1 = FeatureService(
    name="fraud_model_v1",
    features=[transaction_features, customer_activity, terminal_daily],
    description="Inputs of the fraud model, version 1: the one list for training and serving.",
    tags={"version": "1"},
)
