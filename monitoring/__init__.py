"""The monitor as a deployable: ``python -m monitoring`` (same options as ``fraudops monitor``).

    python -m monitoring --window 1d --every 1h --workspace data/evidently

All logic lives in :mod:`fraudops.monitoring.monitor`; this folder only wires it to a process
(a cron job, a container, a systemd unit).
"""
