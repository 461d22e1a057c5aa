"""Offline features: point-in-time correct model inputs for labelled transactions, read
with ``get_historical_features(features=<the feature service>)``, as training reads them."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from feast import FeatureService, FeatureStore

from fraudops.core import contract as c
from fraudops.features import maths as f
from fraudops.features.feast_store import service_feature_names

log = logging.getLogger(__name__)


def entity_frame(tx: pd.DataFrame) -> pd.DataFrame:
    """Entity rows for Feast: keys, the event time, and the request fields on-demand
    features need."""
    return pd.DataFrame(
        {
            c.TRANSACTION_ID: tx[c.TRANSACTION_ID].to_numpy(),
            c.CUSTOMER_ID: tx[c.CUSTOMER_ID].to_numpy(),
            c.TERMINAL_ID: tx[c.TERMINAL_ID].to_numpy(),
            "event_timestamp": tx[c.TIMESTAMP].to_numpy(),
            "amount": tx[c.AMOUNT].to_numpy(dtype=np.float64),
            "tx_time_us": f.to_micros(tx[c.TIMESTAMP]),
        }
    ).astype({"event_timestamp": "datetime64[ns, UTC]"})


def offline_features(
    store: FeatureStore, service: FeatureService, tx: pd.DataFrame
) -> pd.DataFrame:
    """``tx`` (in its order) with the service's features as of each transaction's time.

    Rows a view has no value for (an unknown terminal, a row older than the view's TTL)
    get :data:`fraudops.features.maths.MISSING_FEATURE_VALUE`, as online.
    """
    names = service_feature_names(service)
    entities = entity_frame(tx)
    joined = store.get_historical_features(entity_df=entities, features=service).to_df()
    joined = joined.set_index(c.TRANSACTION_ID).loc[entities[c.TRANSACTION_ID]]
    features = joined[names].astype(np.float64).fillna(f.MISSING_FEATURE_VALUE)
    return pd.concat([tx.reset_index(drop=True), features.reset_index(drop=True)], axis=1)
