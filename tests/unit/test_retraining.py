"""The retraining schedule: runs at the interval, one at a time (a run still going when the
next is due is skipped and logged), as ``materialize --every``."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from fraudops.model.retraining import build_scheduler


def test_runs_on_schedule_one_at_a_time(caplog: pytest.LogCaptureFixture) -> None:
    running, most, runs = 0, 0, 0
    lock = threading.Lock()

    def slow_job() -> None:
        nonlocal running, most, runs
        with lock:
            running += 1
            runs += 1
            most = max(most, running)
        time.sleep(0.35)
        with lock:
            running -= 1

    scheduler = build_scheduler(slow_job, 0.1, BackgroundScheduler)
    with caplog.at_level(logging.WARNING, logger="fraudops.model.retraining"):
        scheduler.start()
        time.sleep(1.3)
        scheduler.shutdown(wait=True)
    assert most == 1
    assert 2 <= runs <= 4
    assert "previous retraining still running: skipped this one" in caplog.text


def test_a_failed_run_is_logged_and_the_schedule_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = []

    def failing_job() -> None:
        calls.append(1)
        raise ValueError("no transaction has a known label yet")

    scheduler = build_scheduler(failing_job, 0.1, BackgroundScheduler)
    with caplog.at_level(logging.ERROR, logger="fraudops.model.retraining"):
        scheduler.start()
        time.sleep(0.45)
        scheduler.shutdown(wait=True)
    assert len(calls) >= 2
    assert "retraining failed: no transaction has a known label yet" in caplog.text
