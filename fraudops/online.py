"""Online features: the model inputs of new transactions, read through the FeatureService.

For each view of the service (``fraud_model_v1``):

- on-demand views (``transaction_features``) are computed from the request with the same
  function their Feast UDF calls;
- views tagged ``online_source`` (``customer_activity``) are computed from the real-time
  state view they name (``customer_state``) with :func:`fraudops.realtime.score_and_advance`,
  the function the offline build uses;
- other views (``terminal_daily``) are read from the online store, with the view's TTL
  applied as offline point-in-time joins apply it.

After scoring, :meth:`OnlineFeatures.commit` pushes the advanced customer states, so the
next transaction of the customer sees this one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from feast import FeatureService, FeatureStore, FeatureView, OnDemandFeatureView

from fraudops import contract as c
from fraudops import features as f
from fraudops import kernels
from fraudops.feast_store import service_feature_names
from fraudops.realtime import (
    CustomerState,
    StateBatch,
    advance_batch,
    batch_for,
    score_and_advance_one,
)
from fraudops.settings import get_settings

if TYPE_CHECKING:
    from fraudops.redis_fast import FastRedisReader

STATE_VIEW_TAG = "online_source"
STATE_FIELDS = (
    "history_time_us", "history_amount", "history_terminal_id", "tx_count",
    "amount_mean", "amount_m2", "hour_sin_sum", "hour_cos_sum",
)  # fmt: skip


class FeatureContractError(RuntimeError):
    """The feature service and what FraudOps knows how to serve disagree."""


@dataclass
class ScoredFeatures:
    """Model inputs in service order, plus the state updates to commit after scoring."""

    matrix: np.ndarray
    names: list[str]
    states: dict[str, CustomerState] | StateBatch

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.matrix, columns=self.names)


Columns = Mapping[str, Any]
"""Transactions as columns: a DataFrame, or a dict of arrays (the scorer's hot path) that
may carry ``time_us`` (int64 µs since the epoch) instead of ``timestamp``."""


def time_us_of(tx: Columns) -> np.ndarray:
    if "time_us" in tx:
        return np.asarray(tx["time_us"], dtype=np.int64)
    return f.to_micros(tx[c.TIMESTAMP])


def assemble(
    names: list[str],
    tx: Columns,
    states: dict[str, CustomerState] | StateBatch,
    looked_up: dict[str, np.ndarray],
) -> ScoredFeatures:
    """Model inputs (in ``names`` order) for transactions, from the customers' states and
    the batch features read for them. Pure: the online path and the model tests share it."""
    time_us = time_us_of(tx)
    amount = np.asarray(tx[c.AMOUNT], dtype=np.float64)
    values: dict[str, np.ndarray] = dict(f.request_features(amount, time_us))
    values.update(looked_up)
    terminals = np.asarray(tx[c.TERMINAL_ID], dtype=object)
    customers = np.asarray(tx[c.CUSTOMER_ID], dtype=object)
    if len(time_us) == 1:  # one request: scalar maths, same results (tests/unit)
        if isinstance(states, StateBatch):
            states = states.as_dict()
        customer = customers[0]
        row, state = score_and_advance_one(
            states.get(customer) or CustomerState.empty(), int(time_us[0]), float(amount[0]),
            str(terminals[0]),
        )  # fmt: skip
        scalars = {name: column[0] for name, column in values.items()}
        scalars.update(zip(f.CUSTOMER_ACTIVITY_FEATURES, row, strict=True))
        matrix = np.array([[scalars[name] for name in names]], dtype=np.float64)
        return ScoredFeatures(matrix, list(names), {**states, customer: state})
    group, batch = batch_for(customers, states)
    activity, batch = advance_batch(batch, group, time_us, amount, terminals)
    values.update(activity)
    matrix = np.column_stack([values[name] for name in names])
    return ScoredFeatures(matrix, list(names), batch)


class OnlineFeatures:
    def __init__(self, store: FeatureStore, service: FeatureService, fast: bool | None = None):
        self.store = store
        self.service = service
        self.names = service_feature_names(service)
        self.lookups: list[tuple[FeatureView, list[str]]] = []
        self.state_view: str | None = None
        self._state_view_cache: FeatureView | None = None
        for projection in service.feature_view_projections:
            view = self._view(projection.name)
            features = [feat.name for feat in projection.features]
            if isinstance(view, OnDemandFeatureView):
                unknown = set(features) - set(f.REQUEST_FEATURES)
            elif STATE_VIEW_TAG in view.tags:
                self.state_view = view.tags[STATE_VIEW_TAG]
                unknown = set(features) - set(f.CUSTOMER_ACTIVITY_FEATURES)
            else:
                self.lookups.append((view, features))
                unknown = set()
            if unknown:
                raise FeatureContractError(
                    f"view {projection.name} of {service.name} has features FraudOps cannot "
                    f"compute online: {sorted(unknown)}"
                )
        kernels.warm_up()  # compiled here, at start-up, not at the first request
        self.fast = fast if fast is not None else get_settings().online_store == "redis"
        if self.fast:  # Feast's own keys and values, one pipelined round trip (redis_fast)
            from fraudops.redis_fast import FastRedisReader, FastRedisWriter, redis_client

            lookups = [(view.name, names) for view, names in self.lookups]
            if self.state_view:
                lookups.append((self.state_view, list(STATE_FIELDS)))
            settings = get_settings()
            client = redis_client(settings, timeout=settings.redis_timeout_seconds)
            self._reader = FastRedisReader(store, lookups, client=client, arrays=True)
            self._writer = FastRedisWriter(store, client=client)

    @property
    def reader(self) -> FastRedisReader:
        """The Redis fast path's reader (online store ``redis`` only)."""
        if not self.fast:
            from fraudops.redis_fast import OnlineStoreNotRedisError

            raise OnlineStoreNotRedisError("the fast reader needs the Redis online store")
        return self._reader

    def _view(self, name: str) -> FeatureView | OnDemandFeatureView:
        try:
            return self.store.get_feature_view(name)
        except Exception:  # Feast raises FeatureViewNotFoundException for on-demand views
            return self.store.get_on_demand_feature_view(name)

    def read_states(self, customer_ids: list[str]) -> dict[str, CustomerState]:
        if not self.state_view:
            return {}
        unique = list(dict.fromkeys(customer_ids))
        response = self.store.get_online_features(
            features=[f"{self.state_view}:{name}" for name in STATE_FIELDS],
            entity_rows=[{c.CUSTOMER_ID: customer} for customer in unique],
        ).to_dict()
        return {
            customer: CustomerState.from_row({name: response[name][i] for name in STATE_FIELDS})
            for i, customer in enumerate(unique)
        }

    def _lookup(self, tx: Columns, time_us: np.ndarray) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for view, features in self.lookups:
            key = view.entity_columns[0].name
            response = self.store.get_online_features(
                features=[f"{view.name}:{name}" for name in features],
                entity_rows=[{key: value} for value in tx[key]],
            ).to_dict(include_event_timestamps=True)
            for name in features:
                values = np.array([np.nan if v is None else v for v in response[name]], float)
                if view.ttl:  # older than the TTL: what an offline point-in-time join returns
                    written = np.asarray(response[f"{name}__ts"], dtype=np.int64) * f.MICROS
                    values[time_us - written > view.ttl.total_seconds() * f.MICROS] = np.nan
                out[name] = np.nan_to_num(values, nan=f.MISSING_FEATURE_VALUE)
        return out

    def compute(self, tx: Columns) -> ScoredFeatures:
        """Features for transactions in the contract (one or many, any customers)."""
        time_us = time_us_of(tx)
        states: dict[str, CustomerState] | StateBatch
        if self.fast and len(time_us) == 1:
            states, looked_up = self._read_fast_one(tx, int(time_us[0]))
        elif self.fast:
            states, looked_up = self._read_fast(tx, time_us)
        else:
            looked_up = self._lookup(tx, time_us)
            customers = list(tx[c.CUSTOMER_ID])
            states = self.read_states(customers) if self.state_view else {}
        return assemble(self.names, tx, states, looked_up)

    def _read_fast(
        self, tx: Columns, time_us: np.ndarray
    ) -> tuple[StateBatch | dict[str, CustomerState], dict[str, np.ndarray]]:
        from fraudops.redis_fast import (
            decode_event_times_us,
            decode_number_matrix,
            decode_state_batch,
        )

        read = self._reader.read_replies({key: tx[key] for key in self._reader.join_keys})
        looked_up: dict[str, np.ndarray] = {}
        for (view, features), view_read, spec in zip(
            self.lookups, read, self._reader.views, strict=False
        ):
            positions = np.asarray(view_read.positions, dtype=np.int64)
            values = decode_number_matrix(view_read.replies, spec.types)[positions]
            if view.ttl:  # older than the TTL: what an offline point-in-time join returns
                stamps = decode_event_times_us([r[-1] for r in view_read.replies])
                values[time_us - stamps[positions] > view.ttl.total_seconds() * f.MICROS] = np.nan
            values = np.nan_to_num(values, nan=f.MISSING_FEATURE_VALUE)
            looked_up.update((name, values[:, k]) for k, name in enumerate(features))
        if not self.state_view:
            return {}, looked_up
        state_read = read[-1]
        return decode_state_batch(state_read.entities, state_read.replies), looked_up

    def _read_fast_one(
        self, tx: Columns, time_us: int
    ) -> tuple[dict[str, CustomerState], dict[str, np.ndarray]]:
        """:meth:`_read_fast` for one transaction, without the column bookkeeping."""
        entity = {key: np.asarray(tx[key], dtype=object)[0] for key in self._reader.join_keys}
        values, stamps = self._reader.read_one(entity)
        looked_up = {}
        for view, features in self.lookups:
            stamp = stamps[view.name]
            ttl_us = view.ttl.total_seconds() * f.MICROS if view.ttl else None
            stale = ttl_us is not None and stamp is not None and time_us - stamp * f.MICROS > ttl_us
            for name in features:
                value = values[name]
                missing = stale or value is None or value != value  # None, NaN: no value
                looked_up[name] = np.array([f.MISSING_FEATURE_VALUE if missing else value], float)
        states = {}
        if self.state_view:
            customer = np.asarray(tx[c.CUSTOMER_ID], dtype=object)[0]
            states[customer] = CustomerState.from_row({name: values[name] for name in STATE_FIELDS})
        return states, looked_up

    def commit(
        self, scored: ScoredFeatures, written_at: datetime | None = None, wait: bool = True
    ) -> None:
        """Write the advanced customer states to the online store, in Feast's format.

        The write time (not the event time) versions the state: Redis keeps only the newest
        write, so a later batch materialization of older state cannot overwrite it. (This
        is what ``store.push`` to ``customer_state_push`` does, without its ~15 ms of
        registry work per call.) With ``wait=False`` a Redis write returns once sent, and
        its reply is read by the next read (see ``redis_fast._pipelined``).
        """
        if not scored.states or not self.state_view:
            return
        if self.fast:
            self._writer.write_states(
                self.state_view, scored.states, written_at or datetime.now(UTC), wait=wait
            )
            return
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import python_values_to_proto_values

        view = self._state_view_object()
        stamp = written_at or datetime.now(UTC)
        states = scored.states
        if isinstance(states, StateBatch):
            states = states.as_dict()
        customers = list(states)
        rows = [state.to_row() for state in states.values()]
        columns = {
            feat.name: python_values_to_proto_values(
                [row[feat.name] for row in rows], feat.dtype.to_value_type()
            )
            for feat in view.features
        }
        data: list[tuple[EntityKey, dict[str, Value], datetime, datetime | None]] = [
            (
                EntityKey(join_keys=[c.CUSTOMER_ID], entity_values=[Value(string_val=customer)]),
                {name: values[i] for name, values in columns.items()},
                stamp,
                None,
            )
            for i, customer in enumerate(customers)
        ]
        self.store._get_provider().online_write_batch(self.store.config, view, data, None)

    def _state_view_object(self) -> FeatureView:
        if self._state_view_cache is None:
            assert self.state_view is not None
            self._state_view_cache = self.store.get_feature_view(self.state_view)
        return self._state_view_cache
