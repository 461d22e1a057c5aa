"""What the dashboard reads, cached: the FraudOps database (prediction log, labels, monitor
runs, alerts) and the MLflow registry. Never the model files.

Queries return only the columns a page plots and aggregate in pandas, so a page over
100,000 predictions stays well under two seconds; results are cached for ``TTL`` seconds
(and cleared at once when the dashboard itself writes a label or an acknowledgement).
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
import streamlit as st

from fraudops.core import db
from fraudops.core.settings import Settings, get_settings

TTL = 60  # seconds: fresh enough for monitoring, cheap enough for many analysts
REVIEW_QUEUE_LIMIT = 500
DECISION_COLORS = {"approve": "#2e7d32", "review": "#f9a825", "block": "#c62828"}


# --- connections ------------------------------------------------------------------------------
@st.cache_resource
def settings() -> Settings:
    return get_settings()


@st.cache_resource
def engine() -> sa.Engine:
    """The database, migrated once per process: the dashboard records labels and
    acknowledgements, so the tables must exist even before the first monitor run."""
    url = settings().resolved_database_url
    db.upgrade(url)
    return db.create_db_engine(url)


@st.cache_data(ttl=TTL, show_spinner=False)
def stale_features() -> dict[str, str]:
    """Batch views whose newest row in the online store is past its freshness budget, and
    why (what /readyz and the monitor's stale_features alert say); {} when the store or the
    feature registry cannot be read (the alerts page shows the monitor's view then)."""
    from fraudops.features.feast_store import get_store
    from fraudops.features.freshness import check_online_store, stale_views

    try:
        return stale_views(check_online_store(settings(), get_store()))
    except Exception:  # no registry yet, store unreachable: nothing to say here
        return {}


def clear_caches() -> None:
    st.cache_data.clear()


# --- filters (set in the sidebar by app.py, read by every page) -----------------------------
@dataclass(frozen=True)
class Filters:
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    versions: tuple[str, ...]  # empty: all

    @property
    def days(self) -> float:
        return (self.end - self.start).total_seconds() / 86400

    @property
    def freq(self) -> str:
        """Chart bucket: hours for short ranges, days for long ones."""
        return "h" if self.days <= 3 else "D"


def sidebar() -> Filters:
    """Time range, model versions and the analyst's name (``analyst()``), in the sidebar."""
    first, last, versions = bounds()
    today = datetime.now(UTC).date()
    last_day = last.date() if last is not None else today
    first_day = first.date() if first is not None else last_day - timedelta(days=6)
    default = (max(first_day, last_day - timedelta(days=6)), last_day)
    st.sidebar.header("Filters")
    picked = st.sidebar.date_input(
        "Time range (UTC, event time)",
        value=default,
        min_value=min(first_day, default[0]),
        max_value=max(last_day, today),
        key="time_range",
    )
    start_day, end_day = _range(picked, default)
    chosen = st.sidebar.multiselect(
        "Model versions", versions, placeholder="All versions", key="model_versions"
    )
    st.sidebar.text_input(
        "Your name",
        value=_default_analyst(),
        key="analyst",
        help="Recorded with the labels you give and the alerts you acknowledge.",
    )
    st.sidebar.caption(f"Data refreshes every {TTL} s.")
    if st.sidebar.button("Refresh now", icon=":material/refresh:"):
        clear_caches()
    return Filters(
        datetime.combine(start_day, datetime.min.time(), UTC),
        datetime.combine(end_day + timedelta(days=1), datetime.min.time(), UTC),
        tuple(sorted(chosen, key=_version_key)),
    )


def _range(picked: Any, default: tuple[date, date]) -> tuple[date, date]:
    """st.date_input gives one date while the user is picking the second."""
    if isinstance(picked, date):
        return picked, picked
    picked = tuple(picked)
    if len(picked) == 2:
        return picked[0], picked[1]
    if len(picked) == 1:
        return picked[0], picked[0]
    return default


def _default_analyst() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in containers without a passwd entry
        return ""


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (1 << 30, version)


def current_filters() -> Filters:
    return st.session_state["filters"]


def analyst() -> str:
    return str(st.session_state.get("analyst", "")).strip()


# --- prediction log ---------------------------------------------------------------------------
def _fetch(query: sa.Select) -> pd.DataFrame:
    """Run ``query`` into a DataFrame straight from the driver's rows: at 100,000 rows,
    building SQLAlchemy Row objects and parsing SQLite's text timestamps one by one costs
    several times the query. Values are the driver's own (SQLite: timestamps and JSON as
    text, booleans as 0/1); callers convert columns, timestamps in one vectorised call."""
    with engine().connect() as conn:
        result = conn.execute(query)
        columns = list(result.keys())
        rows = result.cursor.fetchall() if result.cursor is not None else []
    return pd.DataFrame.from_records(rows, columns=columns)


def _utc(values: pd.Series) -> pd.Series:
    if values.dtype == object and len(values) and isinstance(values.iloc[0], str):
        return pd.to_datetime(values, utc=True, format="ISO8601")
    return pd.to_datetime(values, utc=True)


def _as_utc(value: Any) -> datetime | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)
    return stamp.to_pydatetime()


def _window(query: sa.Select, column: Any, f: Filters) -> sa.Select:
    return query.where(column >= f.start, column < f.end)


@st.cache_data(ttl=TTL, show_spinner=False)
def bounds() -> tuple[datetime | None, datetime | None, list[str]]:
    """First and last event time in the log, and the model versions that scored."""
    p = db.predictions.c
    with engine().connect() as conn:
        first, last = conn.execute(
            sa.select(sa.func.min(p.event_timestamp), sa.func.max(p.event_timestamp))
        ).one()
        versions = conn.execute(sa.select(p.model_version).distinct()).scalars().all()
    return (
        _as_utc(first),
        _as_utc(last),
        sorted(versions, key=_version_key),
    )


@st.cache_data(ttl=TTL, show_spinner=False)
def predictions(f: Filters) -> pd.DataFrame:
    """Event time, score, decision, version, latency, degraded and label (NaN: none yet) of
    every prediction in the range."""
    p, lab = db.predictions.c, db.labels.c
    labelled = db.predictions.outerjoin(db.labels, p.transaction_id == lab.transaction_id)
    query = sa.select(
        p.event_timestamp,
        p.fraud_probability,
        p.decision,
        p.model_version,
        p.latency_ms,
        p.degraded,
        lab.is_fraud,
    ).select_from(labelled)
    query = _window(query, p.event_timestamp, f)
    if f.versions:
        query = query.where(p.model_version.in_(f.versions))
    frame = _fetch(query)
    frame["event_timestamp"] = _utc(frame["event_timestamp"])
    frame["is_fraud"] = pd.to_numeric(frame["is_fraud"]).astype(np.float64)
    return frame.astype({"degraded": bool, "model_version": str})


@st.cache_data(ttl=TTL, show_spinner=False)
def review_queue(f: Filters) -> pd.DataFrame:
    """Transactions decided ``review`` that nobody has labelled yet, riskiest first."""
    p, lab = db.predictions.c, db.labels.c
    query = (
        sa.select(
            p.transaction_id,
            p.event_timestamp,
            p.customer_id,
            p.terminal_id,
            p.amount,
            p.fraud_probability,
            p.model_version,
            p.reasons,
        )
        .select_from(db.predictions.outerjoin(db.labels, p.transaction_id == lab.transaction_id))
        .where(p.decision == "review", lab.transaction_id.is_(None))
        .order_by(p.fraud_probability.desc())
        .limit(REVIEW_QUEUE_LIMIT)
    )
    query = _window(query, p.event_timestamp, f)
    if f.versions:
        query = query.where(p.model_version.in_(f.versions))
    frame = _fetch(query)
    if frame.empty:
        return frame
    frame["event_timestamp"] = _utc(frame["event_timestamp"])
    frame["reasons"] = frame["reasons"].map(format_reasons)
    return frame.drop_duplicates("transaction_id")


def time_axis(figure: Any, times: pd.Series, pad: timedelta = timedelta(hours=12)) -> Any:
    """A time axis that reads sanely with one point in time: plotly zooms onto a single
    point until its ticks are sub-millisecond apart, so show the day around it."""
    distinct = pd.to_datetime(pd.Series(times)).dropna().unique()
    if len(distinct) == 1:
        at = pd.Timestamp(distinct[0])
        figure.update_xaxes(range=[at - pad, at + pad], tickformat="%Y-%m-%d %H:%M")
    return figure


def format_reasons(reasons: Any) -> str:
    """``[{"feature", "value", "contribution"}, ...]`` as one readable line."""
    if isinstance(reasons, str):
        reasons = json.loads(reasons)
    return "; ".join(
        f"{r['feature']} = {r['value']:,.4g} ({r['contribution']:+.2f})" for r in reasons or []
    )


@st.cache_data(ttl=TTL, show_spinner=False)
def recent_analyst_labels(limit: int = 20) -> pd.DataFrame:
    lab = db.labels.c
    query = (
        sa.select(lab.transaction_id, lab.is_fraud, lab.labelled_by, lab.labelled_at)
        .where(lab.source == "analyst")
        .order_by(lab.labelled_at.desc())
        .limit(limit)
    )
    frame = _fetch(query)
    frame["labelled_at"] = _utc(frame["labelled_at"])
    return frame


# --- monitoring -------------------------------------------------------------------------------
@st.cache_data(ttl=TTL, show_spinner=False)
def monitor_runs(f: Filters) -> pd.DataFrame:
    """Monitor runs whose window overlaps the range, oldest first."""
    runs = db.monitor_runs.c
    query = (
        sa.select(db.monitor_runs)
        .where(runs.window_start < f.end, runs.window_end > f.start)  # overlaps the range
        .order_by(runs.window_end)
    )
    if f.versions:
        query = query.where(runs.model_version.in_(f.versions))
    frame = _fetch(query)
    for column in ("window_start", "window_end", "started_at", "finished_at"):
        frame[column] = _utc(frame[column])
    for col in db.monitor_runs.columns:
        if isinstance(col.type, sa.Float):  # NULL: NaN, not None
            frame[col.name] = pd.to_numeric(frame[col.name]).astype(np.float64)
    return frame


@st.cache_data(ttl=TTL, show_spinner=False)
def feature_drift(f: Filters) -> pd.DataFrame:
    fd, runs = db.feature_drift.c, db.monitor_runs.c
    query = sa.select(
        fd.run_id,
        fd.feature,
        fd.window_end,
        fd.score,
        fd.threshold,
        fd.drifted,
        fd.counted,
        runs.model_version,
    ).select_from(db.feature_drift.join(db.monitor_runs, fd.run_id == runs.run_id))
    query = query.where(runs.window_start < f.end, runs.window_end > f.start)
    if f.versions:
        query = query.where(runs.model_version.in_(f.versions))
    frame = _fetch(query)
    frame["window_end"] = _utc(frame["window_end"])
    return frame.astype({"drifted": bool, "counted": bool, "score": np.float64})


@st.cache_data(ttl=TTL, show_spinner=False)
def report_html(path: str) -> str | None:
    file = Path(path)
    return file.read_text(encoding="utf-8") if file.is_file() else None


@st.cache_data(ttl=TTL, show_spinner=False)
def alerts(f: Filters) -> pd.DataFrame:
    """Every open alert, and the acknowledged ones whose window overlaps the range; newest
    first."""
    a = db.alerts.c
    in_range = sa.and_(a.window_start < f.end, a.window_end > f.start)
    query = (
        sa.select(db.alerts)
        .where(sa.or_(a.acknowledged.is_(False), in_range))
        .order_by(a.created_at.desc(), a.id.desc())
    )
    frame = _fetch(query)
    for column in ("created_at", "window_start", "window_end", "acknowledged_at"):
        frame[column] = _utc(frame[column])
    return frame.astype({"acknowledged": bool})


# --- MLflow registry --------------------------------------------------------------------------
@st.cache_data(ttl=TTL, show_spinner=False)
def model_versions() -> pd.DataFrame:
    """Every registered version: aliases, status, test metrics and promotion tags."""
    from mlflow.exceptions import MlflowException

    from fraudops.model import registry

    s = settings()
    client = registry.configure(s)
    try:
        model = client.get_registered_model(s.model_name)
        found = client.search_model_versions(f"name = '{s.model_name}'")
    except MlflowException:  # not registered yet
        return pd.DataFrame()
    # search results do not carry aliases in every MLflow store; the registered model does
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(f"@{alias}")
    rows = []
    for mv in found:
        row: dict[str, Any] = {
            "version": str(mv.version),
            "aliases": ", ".join(sorted(aliases.get(str(mv.version), []))),
            "created": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC"),
            "run_id": mv.run_id,
            "status": mv.status,
        }
        row.update(mv.tags)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values("version", key=lambda v: v.map(_version_key)).reset_index(drop=True)


@st.cache_data(ttl=TTL, show_spinner="Comparing champion and challenger...")
def live_comparison(f: Filters) -> tuple[Any, str | None]:
    """The current @champion against the @challenger scored in shadow, on the range's
    transactions (see ``fraudops compare``); or None and why there is nothing to show."""
    from fraudops.model.comparison import compare_pairs, read_shadow_pairs

    versions = model_versions()
    if versions.empty:
        return None, "No version is registered yet."
    aliases = dict(zip(versions["aliases"], versions["version"], strict=True))
    champion = next((v for a, v in aliases.items() if "@champion" in a), None)
    challenger = next((v for a, v in aliases.items() if "@challenger" in a), None)
    if challenger is None or challenger == champion:
        return None, (
            "No @challenger apart from the champion: `fraudops train` or `fraudops retrain` "
            "registers one."
        )
    pairs = read_shadow_pairs(engine(), f.start, f.end, challenger, champion)
    if pairs.empty:
        return None, (
            f"No shadow results of @challenger v{challenger} against @champion v{champion} in "
            "this time range: score traffic with FRAUDOPS_SHADOW=true (scorer or stream "
            "consumer), or widen the time range."
        )
    return compare_pairs(pairs, f.start, f.end), None


def mlflow_ui_link() -> tuple[str, str | None]:
    """Where the registered model is in the MLflow UI, and how to start the UI if tracking
    is a local store."""
    from fraudops.monitoring.monitor import MonitorSettings

    s = settings()
    uri = s.resolved_mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/models/{s.model_name}", None
    base = MonitorSettings().mlflow_ui_url.rstrip("/")
    return f"{base}/#/models/{s.model_name}", f"mlflow ui --backend-store-uri {uri}"


# --- shared bits for pages -------------------------------------------------------------------
def bucketed(frame: pd.DataFrame, freq: str) -> pd.Series:
    return frame["event_timestamp"].dt.floor(freq)


def empty_log_message() -> None:
    st.info(
        "No predictions in this time range. Predictions appear once the scoring service "
        "(`bentoml serve`) or the stream consumer scores traffic; widen the time range in "
        "the sidebar to see older ones.",
        icon=":material/info:",
    )


def number(value: Any, spec: str = ".3f") -> str:
    """A metric for display; "n/a" for a missing one (NULL in the database, NaN here)."""
    return "n/a" if value is None or pd.isna(value) else format(value, spec)
