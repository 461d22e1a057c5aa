"""Materialization: batch features into the online store, once or on a schedule.

    fraudops materialize              # = feast -c feature_repo materialize-incremental <now>
    fraudops materialize --every 15m     # a scheduler; or cron the plain feast command

The scheduler (APScheduler) never overlaps runs: a run still going when the next is due is
skipped (``max_instances=1``) and logged, and the next one picks up where it ended, since
materialize-incremental remembers its high-water mark in the registry.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fraudops.core.settings import Settings

log = logging.getLogger(__name__)


class NothingToMaterialize(RuntimeError):
    """No online feature view is registered with Feast."""


def materialize_once(
    end: datetime | None = None,
    start: datetime | None = None,
    rebuild: bool = False,
    engine: str = "auto",
) -> None:
    """One materialization run. ``engine``: ``feast`` (Feast's own), ``fast`` (FraudOps'
    Redis writer: same keys and values, ~9x faster, see ``fraudops.adapters.feast``) or
    ``auto`` (fast with Redis, Feast otherwise, and with Spark's offline store)."""
    from fraudops.core.settings import get_settings
    from fraudops.features.feast_store import get_store

    settings = get_settings()
    if rebuild:
        from fraudops.features.build import build_from_offline_store
        from fraudops.features.nightly import take_into_offline_store

        take_into_offline_store(settings)  # scored traffic is history too
        build_from_offline_store(settings)
    end = (end or datetime.now(UTC)).replace(tzinfo=(end.tzinfo if end else UTC) or UTC)
    start = start.replace(tzinfo=start.tzinfo or UTC) if start is not None else None
    started = time.monotonic()
    store = get_store()
    if not any(view.online for view in store.list_feature_views()):
        raise NothingToMaterialize(
            "no feature views are registered with Feast: run `fraudops features apply` first"
        )
    # the fast writer needs a single Redis and reads parquet FileSources (not Spark's tables)
    fast_possible = (
        settings.online_store == "redis"
        and settings.redis_mode == "single"
        and settings.offline_store != "spark"
    )
    if engine == "fast" or (engine == "auto" and fast_possible):
        from fraudops.adapters.feast import fast_materialize

        rows = fast_materialize(store, start=start, end=end)
        log.info("wrote %s", ", ".join(f"{view}: {n:,} rows" for view, n in rows.items()))
    elif start is not None:
        store.materialize(start_date=start, end_date=end)
    else:
        # Feast's first incremental run only looks back one TTL from now; a view never
        # materialized starts from the beginning of its data instead, as fast_materialize does.
        fresh = [
            v.name
            for v in store.list_feature_views()
            if v.online and not v.materialization_intervals
        ]
        if fresh:
            store.materialize(
                start_date=datetime(1970, 1, 2, tzinfo=UTC), end_date=end, feature_views=fresh
            )
        store.materialize_incremental(end_date=end)
    record_newest_rows(settings, store, end)
    seeded = seed_customer_states(settings)
    log.info(
        "materialized up to %s in %.1f s (%d new customer states)",
        end.isoformat(),
        time.monotonic() - started,
        seeded,
    )


def seed_customer_states(settings: Settings) -> int:
    """Give the real-time state store the customers it does not know yet, from the offline
    build's ``customer_state`` table. A customer it knows keeps its state: the scorers keep
    it current, and it is newer than any batch build. Returns how many were new."""
    import pyarrow.parquet as pq

    from fraudops.features.realtime import state_store

    if settings.offline_store == "spark":  # the Spark build's table, streamed to the driver
        from fraudops.features.realtime import STATE_FIELDS
        from fraudops.features.spark_build import table_rows

        rows = table_rows(settings, "customer_state", ["customer_id", *STATE_FIELDS])
        return state_store(settings).seed(rows) if rows is not None else 0
    path = settings.offline_dir / "features" / "customer_state.parquet"
    if not path.exists():
        return 0
    store = state_store(settings)
    seeded = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
        seeded += store.seed(batch.to_pylist())
    return seeded


def record_newest_rows(settings, store, end: datetime) -> None:  # type: ignore[no-untyped-def]
    """Tell readiness the newest row each budgeted view now holds (the marker Redis keeps
    beside Feast's rows, see fraudops.features.freshness)."""
    from pathlib import Path

    from feast import FileSource

    from fraudops.core.tables import newest_event_time
    from fraudops.features.freshness import record_materialized, view_budgets

    newest = {}
    budgets = view_budgets(store.list_feature_views(), settings.freshness_budgets)
    for view in store.list_feature_views():
        if view.name not in budgets:
            continue
        if settings.offline_store == "spark":
            from fraudops.features import spark_build

            found = spark_build.newest_event_time(settings, view.batch_source.path, end)
        elif isinstance(view.batch_source, FileSource):
            path = FileSource.get_uri_for_file_path(store.config.repo_path, view.batch_source.path)
            found = newest_event_time(Path(str(path)), end)
        else:
            continue
        if found is not None:
            newest[view.name] = found
    record_materialized(settings, newest)


def run_schedule(every_seconds: int, rebuild: bool = False, engine: str = "auto") -> None:
    from fraudops.core.schedule import one_at_a_time, run_until_interrupted

    scheduler = one_at_a_time(
        "materialization",
        lambda: materialize_once(rebuild=rebuild, engine=engine),
        every_seconds,
    )
    log.info("materializing every %d s; Ctrl-C to stop", every_seconds)
    run_until_interrupted(scheduler)
