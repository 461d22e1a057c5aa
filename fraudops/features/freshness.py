"""Freshness of the batch features: is a view's newest value for an entity older than the
view's budget? Stale features are never silent (issue #20): readiness, ``/metrics``, the
monitor, the dashboard and each affected response say so.

A view's **budget** is its Feast TTL unless ``FRAUDOPS_FRESHNESS_BUDGETS`` sets another
(``terminal_daily=36h``). Views the scorer keeps current itself (``customer_state``, the
source of a view tagged ``online_source``) and views without a TTL or budget have none.

Two clocks, on purpose:

- **per transaction** (:func:`staleness`): the transaction's own timestamp against the
  time its entity's row was written for (event time), so a replay of history behaves as
  live traffic does;
- **per store** (:func:`store_freshness`, readiness and the monitor): there is no
  transaction, so the wall clock against the newest row the online store itself holds
  (:func:`newest_in_online_store`); a store that holds nothing for a view, empty or
  flushed, is stale.

The pure functions come first (arrays and times in, masks and verdicts out); reading the
online store's newest times is the last section.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MICROS = 1_000_000
STATE_VIEW_TAG = (
    "online_source"  # as fraudops.serving.online: the view it names is kept by the scorer
)
STALE_REASON_PREFIX = "stale_features: "
NO_ROW = np.iinfo(np.int64).min  # written time of an entity the view has no row for


def stale_reason(view: str) -> str:
    """The reason a response carries when ``view``'s features were stale for it."""
    return f"{STALE_REASON_PREFIX}{view}"


# --- budgets --------------------------------------------------------------------------------
def view_budgets(
    views: Iterable[Any], overrides: Mapping[str, timedelta] | None = None
) -> dict[str, timedelta]:
    """Freshness budget per online batch view: ``overrides`` (settings) first, else the
    view's TTL. ``views``: Feast ``FeatureView`` objects (``name``, ``online``, ``ttl``,
    ``tags``). Real-time state views and views without a TTL or override get none."""
    views = list(views)
    overrides = dict(overrides or {})
    state_views = {v.tags[STATE_VIEW_TAG] for v in views if STATE_VIEW_TAG in (v.tags or {})}
    budgets: dict[str, timedelta] = {}
    for view in views:
        if not view.online or view.name in state_views:
            continue
        budget = overrides.get(view.name, view.ttl)
        if budget is not None and budget > timedelta(0):
            budgets[view.name] = budget
    unknown = sorted(set(overrides) - {v.name for v in views})
    if unknown:
        log.warning("freshness budgets for views Feast does not know: %s", ", ".join(unknown))
    return budgets


# --- per transaction ---------------------------------------------------------------------------
def stale_rows(written_us: np.ndarray, tx_time_us: np.ndarray, budget: timedelta) -> np.ndarray:
    """Which transactions' rows of a view are older than ``budget`` at the transaction's
    own time. ``written_us``: the event time (µs since the epoch) of the row read for each
    transaction's entity, :data:`NO_ROW` where the view has none (an entity never seen is
    unknown, not stale)."""
    written = np.asarray(written_us, dtype=np.int64)
    tx_time = np.asarray(tx_time_us, dtype=np.int64)
    has_row = written != NO_ROW
    age = np.where(has_row, tx_time - np.where(has_row, written, 0), 0)
    return has_row & (age > budget / timedelta(microseconds=1))


@dataclass(frozen=True)
class Staleness:
    """Which transactions of a batch were scored on stale batch features."""

    by_view: dict[str, np.ndarray]  # view -> bool per transaction
    stale: np.ndarray  # bool per transaction: any view stale
    reasons: list[list[str]]  # per transaction, e.g. ["stale_features: terminal_daily"]

    @property
    def any(self) -> bool:
        return bool(self.stale.any())


def staleness(
    budgets: Mapping[str, timedelta],
    written_us: Mapping[str, np.ndarray],
    tx_time_us: np.ndarray,
) -> Staleness:
    """Per transaction and view, whether the row read was stale, and the reasons to put
    in each response. ``written_us``: per view, the written time read for each
    transaction's entity (:data:`NO_ROW` for none); views without a budget are never
    stale."""
    tx_time = np.asarray(tx_time_us, dtype=np.int64)
    by_view = {
        view: stale_rows(written, tx_time, budgets[view])
        for view, written in written_us.items()
        if view in budgets
    }
    stale = np.zeros(len(tx_time), dtype=bool)
    for mask in by_view.values():
        stale |= mask
    reasons: list[list[str]] = [[] for _ in range(len(tx_time))]
    for view, mask in by_view.items():
        for i in np.flatnonzero(mask).tolist():
            reasons[i].append(stale_reason(view))
    return Staleness(by_view, stale, reasons)


def last_known_values(
    values: np.ndarray, expired: np.ndarray, stale: np.ndarray, missing_value: float
) -> np.ndarray:
    """A view's feature values (rows x features, as read, before any TTL) for scoring:
    rows past the view's TTL (``expired``) get ``missing_value`` (what an offline
    point-in-time join gives), except stale rows, which keep their last known values: a
    terminal whose row expired is not scored as a terminal nobody has seen."""
    out = np.array(values, dtype=np.float64, copy=True)
    out[np.asarray(expired, bool) & ~np.asarray(stale, bool)] = np.nan
    return np.nan_to_num(out, nan=missing_value)


# --- per store (readiness, metrics, monitor) -----------------------------------------------------
@dataclass(frozen=True)
class ViewFreshness:
    """How fresh the online store's newest row of a view is, by the clock."""

    view: str
    newest: datetime | None  # the newest event time the store holds; None: no row at all
    age_seconds: float | None
    budget_seconds: float
    stale: bool

    @property
    def reason(self) -> str:
        if self.newest is None:
            return f"{self.view}: the online store holds no row (never materialized, or flushed)"
        return (
            f"{self.view}: newest row {self.newest.isoformat()} is {_hours(self.age_seconds)} "
            f"old, budget {_hours(self.budget_seconds)}"
        )


def _hours(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds / 3600:.1f} h"


def store_freshness(
    budgets: Mapping[str, timedelta],
    newest: Mapping[str, datetime | None],
    now: datetime,
) -> dict[str, ViewFreshness]:
    """Each budgeted view's verdict: stale when its newest row in the online store is older
    than its budget at ``now``, or when the store holds none."""
    verdicts = {}
    for view, budget in budgets.items():
        written = newest.get(view)
        age = None if written is None else round((now - written).total_seconds(), 1)
        verdicts[view] = ViewFreshness(
            view,
            written,
            age,
            budget.total_seconds(),
            stale=age is None or age > budget.total_seconds(),
        )
    return verdicts


def stale_views(verdicts: Mapping[str, ViewFreshness]) -> dict[str, str]:
    """The stale views and why, for readiness and alerts."""
    return {view: v.reason for view, v in verdicts.items() if v.stale}


def freshness_summary(verdicts: Mapping[str, ViewFreshness]) -> dict[str, Any]:
    """What ``/readyz``, ``/admin/status`` and the dashboard show."""
    return {
        "feature_age_seconds": {view: v.age_seconds for view, v in verdicts.items()},
        "feature_budget_seconds": {view: v.budget_seconds for view, v in verdicts.items()},
        "stale_views": stale_views(verdicts),
    }


# --- what the online store holds --------------------------------------------------------------
def marker_key(prefix: str, view: str) -> str:
    """The Redis key holding the newest event time (µs) materialized for ``view``: in the
    online store's own database, so a flush takes it with the rows."""
    return f"{prefix}:freshness:{view}"


def newest_in_online_store(
    settings: Any, store: Any, views: Iterable[str]
) -> dict[str, datetime | None]:
    """The newest event time the online store holds per view (None: nothing).

    SQLite: ``MAX(event_ts)`` of Feast's table for the view. Redis: the marker
    :func:`record_materialized` keeps beside Feast's rows (scanning every entity's hash
    would cost a pass over the store per probe)."""
    views = list(views)
    if settings.online_store == "redis":
        from fraudops.core.connections import redis_client

        client = redis_client(settings, timeout=settings.redis_timeout_seconds)
        try:
            values = client.mget([marker_key(settings.redis_key_prefix, v) for v in views])
        finally:
            client.close()
        return {view: _from_micros(value) for view, value in zip(views, values, strict=True)}
    return _newest_in_sqlite(settings.feast_dir / "online_store.db", store.project, views)


def _newest_in_sqlite(path: Any, project: str, views: list[str]) -> dict[str, datetime | None]:
    import sqlite3

    newest: dict[str, datetime | None] = dict.fromkeys(views)
    if not path.exists():
        return newest
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
        for view in views:
            try:
                (value,) = conn.execute(f'SELECT MAX(event_ts) FROM "{project}_{view}"').fetchone()
            except sqlite3.OperationalError:  # no table: never materialized
                continue
            if isinstance(value, int | float):  # Feast 0.5x+: seconds since the epoch
                newest[view] = datetime.fromtimestamp(value, UTC)
            elif value is not None:  # older Feast: an ISO text
                stamp = datetime.fromisoformat(str(value))
                newest[view] = stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
    return newest


def record_materialized(settings: Any, newest: Mapping[str, datetime]) -> None:
    """After a materialization into Redis: raise each view's marker to ``newest`` (never
    lower it: rows already there are no older for a run that wrote fewer)."""
    if settings.online_store != "redis" or not newest:
        return
    from fraudops.core.connections import redis_client

    client = redis_client(settings, timeout=max(settings.redis_timeout_seconds, 5.0))
    try:
        for view, stamp in newest.items():
            key = marker_key(settings.redis_key_prefix, view)
            micros = int(stamp.timestamp() * MICROS)
            current = client.get(key)
            if current is None or int(current) < micros:
                client.set(key, micros)
    finally:
        client.close()


def _from_micros(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(int(value) / MICROS, UTC)


def check_online_store(
    settings: Any, store: Any, now: datetime | None = None
) -> dict[str, ViewFreshness]:
    """Each budgeted view's verdict for the store the scorer reads, by the clock."""
    views = store.list_feature_views()
    budgets = view_budgets(views, settings.freshness_budgets)
    newest = newest_in_online_store(settings, store, budgets)
    return store_freshness(budgets, newest, now or datetime.now(UTC))


def online_store_status(settings: Any, store: Any) -> dict[str, Any]:
    """:func:`freshness_summary` of the online store, for readiness and metrics; if the
    store cannot be read, that is what the stale views say."""
    try:
        return freshness_summary(check_online_store(settings, store))
    except Exception as exc:  # unreachable store: not ready, and why
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        stale = {"online_store": f"cannot read the online store: {reason}"}
        return {"feature_age_seconds": {}, "feature_budget_seconds": {}, "stale_views": stale}
