"""The whole FraudOps loop on embedded defaults, with no services: ``make demo``.

Each step runs the command a user would (``fraudops ...``, ``bentoml serve``), so the demo
doubles as a walkthrough:

1. simulate two months of card transactions ending yesterday (the last day drifted);
2. ingest all but the last two days as labelled history;
3. build features, register them with Feast, materialize the online store;
4. train, evaluate and register a model in MLflow, promote it to @champion;
5. start ``bentoml serve`` in the background and replay the last two days through it;
6. chargebacks for the first replayed day arrive: ingest them as labels;
7. run the monitor on the replayed traffic; print what happened and where to look.

State lives in ``data/demo`` (``--data-dir``); running it again starts afresh. The demo
uses the embedded defaults whatever ``FRAUDOPS_*`` variables or ``.env`` say, so it never
writes to the Redis, database or MLflow server of a real installation; ``--use-settings``
runs it against those services instead (the end-to-end test does, on services of its own).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*args: str, env: dict[str, str], capture: bool = False) -> str:
    print(f"\n$ {' '.join(args)}", flush=True)
    started = time.monotonic()
    out = subprocess.run(
        args, check=True, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE if capture else None
    )
    print(f"  ({time.monotonic() - started:.1f} s)", flush=True)
    return out.stdout or ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("bentoml serve exited; see its log above")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as error:  # 503 naming stale views: up and scoring
            if error.code == 503 and b"stale_views" in error.read():
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"bentoml serve not ready after {timeout} s")


MARKER = ".fraudops-demo"  # in a data directory the demo made, and may delete


def demo_environment(data: Path, use_settings: bool) -> dict[str, str]:
    """The environment of the demo's commands: the embedded defaults under ``data``
    (``FRAUDOPS_*`` of the caller dropped, and set explicitly so that a ``.env`` cannot
    point the demo at real services), or the caller's settings with ``use_settings``.
    The API key is a new random one: no known key is ever accepted by the demo's API."""
    env = {k: v for k, v in os.environ.items() if use_settings or not k.startswith("FRAUDOPS_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["FRAUDOPS_DATA_DIR"] = str(data)
    env["FRAUDOPS_API_KEY"] = secrets.token_urlsafe(24)
    if not use_settings:
        env.update({
            "FRAUDOPS_ENVIRONMENT": "local",
            "FRAUDOPS_ONLINE_STORE": "sqlite",
            "FRAUDOPS_DATABASE_URL": f"sqlite:///{data / 'predictions.db'}",
            "FRAUDOPS_MLFLOW_TRACKING_URI": f"sqlite:///{data / 'mlflow.db'}",
        })  # fmt: skip
    return env


def tracking_uri(data: Path, env: dict[str, str], use_settings: bool) -> str:
    """Where the demo's runs and models went: the embedded store, or with
    ``use_settings`` the tracking URI the settings resolve to (environment or ``.env``)."""
    if not use_settings:
        return env["FRAUDOPS_MLFLOW_TRACKING_URI"]
    from fraudops.settings import Settings

    return Settings(data_dir=data).resolved_mlflow_tracking_uri


def fresh_data_dir(data: Path) -> None:
    """Start from an empty ``data``: delete it only if an earlier demo made it."""
    if data.exists():
        if any(data.iterdir()) and not (data / MARKER).exists():
            raise SystemExit(
                f"{data} exists and was not made by the demo, so the demo will not delete it: "
                "choose another --data-dir, or empty it yourself"
            )
        shutil.rmtree(data)
    data.mkdir(parents=True)
    (data / MARKER).write_text("made by scripts/demo.py; deleted when the demo runs again\n")


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Run the whole FraudOps loop on embedded defaults."
    )
    parser.add_argument(
        "--data-dir", type=Path, default=ROOT / "data" / "demo",
        help="where the demo keeps its state (deleted and made afresh at each run)",
    )  # fmt: skip
    parser.add_argument(
        "--use-settings", action="store_true",
        help="use the FRAUDOPS_* settings of the environment and .env (Redis, PostgreSQL, "
        "an MLflow server) instead of the embedded defaults: the demo then trains, promotes "
        "and writes there",
    )  # fmt: skip
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--terminals", type=int, default=2000)
    # enough days for a 30-day customer history before the training window
    parser.add_argument("--days", type=int, default=60)
    args = parser.parse_args()
    data = args.data_dir.expanduser().resolve()
    fresh_data_dir(data)
    env = demo_environment(data, args.use_settings)
    raw = data / "raw"
    today = datetime.now(UTC).date()
    start = today - timedelta(days=args.days)
    drift_day = today - timedelta(days=1)
    replay_from = today - timedelta(days=2)
    started = time.monotonic()
    server = None
    try:
        run(
            str(BIN / "fraudops"),
            "simulate",
            "--customers",
            str(args.customers),
            "--terminals",
            str(args.terminals),
            "--days",
            str(args.days),
            "--start-date",
            start.isoformat(),
            "--drift-date",
            drift_day.isoformat(),
            "--out",
            str(raw / "all.parquet"),
            env=env,
        )
        everything = pd.read_parquet(raw / "all.parquet")
        cut = pd.Timestamp(replay_from, tz="UTC")
        everything[everything["timestamp"] < cut].to_parquet(raw / "history.parquet", index=False)
        live = everything[everything["timestamp"] >= cut]
        live.drop(columns=["is_fraud", "label_timestamp", "fraud_scenario"]).to_parquet(
            raw / "live.parquet", index=False
        )
        run(str(BIN / "fraudops"), "ingest", str(raw / "history.parquet"), env=env)
        run(str(BIN / "fraudops"), "features", "build", env=env)
        run(str(BIN / "fraudops"), "features", "apply", env=env)
        run(str(BIN / "fraudops"), "materialize", env=env)
        report = json.loads(run(str(BIN / "fraudops"), "train", env=env, capture=True))
        promotion = json.loads(run(str(BIN / "fraudops"), "promote", env=env, capture=True))

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        print(f"\n$ bentoml serve --port {port}   (in the background)", flush=True)
        server = subprocess.Popen(
            [str(BIN / "bentoml"), "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=(data / "serve.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        wait_ready(url, server)
        replay_json = data / "replay.json"
        run(
            str(BIN / "fraudops"),
            "replay",
            str(raw / "live.parquet"),
            "--to",
            "http",
            "--url",
            url,
            "--json-out",
            str(replay_json),
            env=env,
        )
        replay = json.loads(replay_json.read_text())

        first_day = everything[
            (everything["timestamp"] >= cut)
            & (everything["timestamp"] < cut + pd.Timedelta(days=1))
        ]
        labels = first_day[["transaction_id", "is_fraud"]].assign(
            label_timestamp=pd.Timestamp.now(tz="UTC").floor("s")
        )
        labels.to_csv(raw / "chargebacks.csv", index=False)
        run(str(BIN / "fraudops"), "labels", "ingest", str(raw / "chargebacks.csv"), env=env)
        monitor = run(
            str(BIN / "fraudops"),
            "monitor",
            "--start",
            replay_from.isoformat(),
            "--end",
            today.isoformat(),
            env=env,
            capture=True,
        )
    except (subprocess.CalledProcessError, RuntimeError, TimeoutError) as exc:
        print(f"\ndemo stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    summary(data, report, promotion, replay, monitor, time.monotonic() - started,
            tracking_uri(data, env, args.use_settings))  # fmt: skip
    (data / "summary.json").write_text(
        json.dumps(
            {
                "train": report,
                "promotion": promotion,
                "replay": replay,
                "live_transactions": int(len(live)),
            },
            indent=2,
            default=str,
        )
    )
    return 0


def summary(
    data: Path,
    report: dict,
    promotion: dict,
    replay: dict,
    monitor: str,
    seconds: float,
    tracking_uri: str,
) -> None:
    m = report["metrics"]
    print("\n" + "=" * 78)
    print(f"FraudOps demo finished in {seconds / 60:.1f} min. Data: {data}")
    print(
        f"\nModel version {report['model_version']} ({promotion['decision']} to @champion), "
        f"test window {report['windows']['test_start']}..{report['windows']['test_end']}:"
    )
    print(
        f"  ROC AUC {m['roc_auc']:.3f}  average precision {m['average_precision']:.3f}  "
        f"card precision@100 {m['card_precision_at_100']:.3f}  Brier {m['brier']:.4f}"
    )
    print(
        f"\nReplayed {replay.get('sent')} transactions through the API: "
        f"{replay.get('scored')} scored, "
        f"{replay.get('errors')} errors; latency p50 {replay.get('latency_ms', {}).get('p50')} ms, "
        f"p99 {replay.get('latency_ms', {}).get('p99')} ms; decisions {replay.get('decisions')}"
    )
    print("\nMonitor:\n" + monitor.strip())
    print("\nWhere to look:")
    for line in where_to_look(data, tracking_uri):
        print(f"  {line}")
    print("=" * 78)


def where_to_look(data: Path, tracking_uri: str) -> list[str]:
    """The commands that show what the demo made: an MLflow server is opened, a local
    store is served by ``mlflow ui``."""
    env = f"FRAUDOPS_DATA_DIR={data}"
    if tracking_uri.startswith(("http://", "https://")):
        mlflow = f"{tracking_uri}   (the MLflow server of your settings)"
    else:
        mlflow = f"uv run mlflow ui --backend-store-uri {tracking_uri}"
    return [
        f"dashboard:     {env} uv run streamlit run dashboard/app.py",
        f"MLflow UI:     {mlflow}",
        f"Evidently UI:  uv run evidently ui --workspace {data}/evidently",
        f"scoring API:   {env} uv run bentoml serve   (then see README, 'Scoring API')",
    ]


if __name__ == "__main__":
    sys.exit(main())
