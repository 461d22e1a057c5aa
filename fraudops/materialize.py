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

log = logging.getLogger(__name__)


def materialize_once(
    end: datetime | None = None, start: datetime | None = None, rebuild: bool = False
) -> None:
    from fraudops.feast_store import get_store

    if rebuild:
        from fraudops.feature_build import build_from_offline_store
        from fraudops.settings import get_settings

        build_from_offline_store(get_settings())
    end = (end or datetime.now(UTC)).replace(tzinfo=(end.tzinfo if end else UTC) or UTC)
    started = time.monotonic()
    store = get_store()
    if start is not None:
        store.materialize(start_date=start.replace(tzinfo=start.tzinfo or UTC), end_date=end)
    else:
        store.materialize_incremental(end_date=end)
    log.info("materialized up to %s in %.1f s", end.isoformat(), time.monotonic() - started)


def run_schedule(every_seconds: int, rebuild: bool = False) -> None:
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES
    from apscheduler.schedulers.blocking import BlockingScheduler

    scheduler = BlockingScheduler(timezone=UTC)

    def on_event(event) -> None:  # type: ignore[no-untyped-def]
        if event.code == EVENT_JOB_MAX_INSTANCES:
            log.warning("previous materialization still running: skipped this one")
        else:
            log.error("materialization failed: %s", event.exception)

    scheduler.add_listener(on_event, EVENT_JOB_ERROR | EVENT_JOB_MAX_INSTANCES)
    scheduler.add_job(
        materialize_once,
        "interval",
        seconds=every_seconds,
        kwargs={"rebuild": rebuild},
        max_instances=1,
        coalesce=True,
        next_run_time=datetime.now(UTC),
        id="materialize",
    )
    log.info("materializing every %d s; Ctrl-C to stop", every_seconds)
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        log.info("scheduler stopped")
