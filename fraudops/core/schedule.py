"""Recurring jobs (``materialize --every``, ``nightly``, ``monitor --every``, ``retrain
--every``): APScheduler, one run at a time, a run still going when the next is due skipped
and logged, failures logged and the schedule kept."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)


def one_at_a_time(
    name: str,
    job: Callable[[], object],
    every_seconds: float | None = None,
    at: str | None = None,
    scheduler_class: Any = None,
) -> Any:
    """A scheduler running ``job`` every ``every_seconds`` (first run now), or every day at
    ``at`` (HH:MM UTC). Blocking unless given another scheduler class (tests use the
    background one). ``name`` says what runs, in the log."""
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES
    from apscheduler.schedulers.blocking import BlockingScheduler

    scheduler = (scheduler_class or BlockingScheduler)(timezone=UTC)

    def on_event(event) -> None:  # type: ignore[no-untyped-def]
        if event.code == EVENT_JOB_MAX_INSTANCES:
            log.warning("previous %s still running: skipped this one", name)
        else:
            log.error("%s failed: %s", name, event.exception)

    scheduler.add_listener(on_event, EVENT_JOB_ERROR | EVENT_JOB_MAX_INSTANCES)
    once = {"max_instances": 1, "coalesce": True, "id": name.replace(" ", "-")}
    if at is not None:
        hour, minute = (int(part) for part in at.split(":"))
        scheduler.add_job(job, "cron", hour=hour, minute=minute, **once)
    else:
        scheduler.add_job(
            job, "interval", seconds=every_seconds, next_run_time=datetime.now(UTC), **once
        )
    return scheduler


def run_until_interrupted(scheduler: Any) -> None:
    """Run a blocking scheduler until Ctrl-C (or SIGTERM's SystemExit)."""
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        log.info("scheduler stopped")
