"""Offline features: point-in-time correct model inputs for labelled transactions, read
with ``get_historical_features(features=<the feature service>)``, as training reads them.

The entity rows go to Feast in chunks of whole days (``FRAUDOPS_OFFLINE_ROWS_PER_READ``),
and each chunk's result is kept as float columns only: a point-in-time read holds its
whole join in memory (and Feast's on-demand features convert all of it to pandas), so a
35-day window at 10x the Handbook's size peaked at 8.1 GB read at once, 4.5 GB in chunks
of 1M rows (docs/spark.md, "Measured scaling"). Each read scans the feature tables whole,
so fewer, larger chunks are faster.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureService, FeatureStore

from fraudops.core import contract as c
from fraudops.core.settings import get_settings
from fraudops.features import maths as f
from fraudops.features.feast_store import service_feature_names

log = logging.getLogger(__name__)

MICROS_PER_DAY = 86_400_000_000


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


def day_chunks(times: pd.Series, rows_per_chunk: int) -> list[np.ndarray]:
    """Row positions of ``times`` by UTC day, cut into chunks of whole days: a chunk
    takes the days that start within its ``rows_per_chunk`` rows (so it can exceed it by
    one day's rows). Equal times fall in one chunk."""
    if len(times) == 0:
        return []
    day = f.to_micros(times) // MICROS_PER_DAY
    order = np.argsort(day, kind="stable")
    sorted_days = day[order]
    day_starts = np.flatnonzero(np.diff(sorted_days, prepend=sorted_days[0] - 1))
    _, first_of_chunk = np.unique(day_starts // rows_per_chunk, return_index=True)
    return np.split(order, day_starts[first_of_chunk][1:])


def offline_features(
    store: FeatureStore,
    service: FeatureService,
    tx: pd.DataFrame,
    rows_per_read: int | None = None,
) -> pd.DataFrame:
    """``tx`` (in its order) with the service's features as of each transaction's time.

    Rows a view has no value for (an unknown terminal, a row older than the view's TTL)
    get :data:`fraudops.features.maths.MISSING_FEATURE_VALUE`, as online. ``rows_per_read``
    (default ``FRAUDOPS_OFFLINE_ROWS_PER_READ``): entity rows per Feast read; a row's
    features depend on its own keys and time only, so the chunking never changes them.
    """
    names = service_feature_names(service)
    rows_per_read = rows_per_read or get_settings().offline_rows_per_read
    values = np.empty((len(tx), len(names)), dtype=np.float64)
    chunks = day_chunks(tx[c.TIMESTAMP], rows_per_read)
    for number, rows in enumerate(chunks, 1):
        entities = entity_frame(tx.iloc[rows])
        joined = store.get_historical_features(entity_df=entities, features=service).to_arrow()
        ids = joined.column(c.TRANSACTION_ID)
        # where each result row goes in the chunk (Feast's join does not keep the order)
        at = pc.index_in(ids, value_set=pa.array(entities[c.TRANSACTION_ID], type=ids.type))
        unique = pc.count_distinct(at).as_py()
        if at.null_count or unique != len(rows) or joined.num_rows != len(rows):
            raise ValueError(
                f"the point-in-time read returned {joined.num_rows:,} rows for {len(rows):,} "
                "transactions: transaction ids must be unique"
            )
        targets = rows[at.to_numpy()]
        for j, name in enumerate(names):
            values[targets, j] = joined.column(name).to_numpy().astype(np.float64, copy=False)
        log.debug("point-in-time read %d/%d: %d rows", number, len(chunks), len(rows))
    values[np.isnan(values)] = f.MISSING_FEATURE_VALUE
    features = pd.DataFrame(values, columns=names)  # no copy of ``values``, nor below
    return pd.concat([tx.reset_index(drop=True), features], axis=1, copy=False)
