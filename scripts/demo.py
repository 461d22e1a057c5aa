"""The whole FraudOps loop on embedded defaults, with no services: ``make demo``.

Each step runs the command a user would (``fraudops ...``, ``bentoml serve``), so the demo
doubles as a walkthrough:

1. simulate two months of card transactions ending yesterday (the last day drifted);
2. ingest all but the last two days as labelled history;
3. build features, register them with Feast, materialize the online store;
4. train, evaluate and register a model in MLflow, promote it to @champion;
5. train a challenger on two weeks instead of one: registered as @challenger;
6. start ``bentoml serve`` with ``FRAUDOPS_SHADOW=true`` in the background and replay the
   last two days through it: the champion decides, the challenger scores in shadow;
7. chargebacks for the first replayed day arrive: ingest them as labels, then the nightly
   job takes the scored traffic and the labels into the history (``fraudops nightly``);
8. run the monitor on the replayed traffic, compare the challenger with the champion on
   the same replayed transactions (``fraudops compare``); print what happened and where
   to look.

State lives in ``data/demo`` (``--data-dir``); running it again starts afresh. The demo
uses the embedded defaults whatever ``FRAUDOPS_*`` variables or ``.env`` say, so it never
writes to the Redis, database or MLflow server of a real installation; ``--use-settings``
runs it against those services instead (the end-to-end test does, on services of its own).
"""

from __future__ import annotations

import argparse
import json
import math
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
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
console = Console(highlight=False)
STEPS = 14
# The challenger trains on two weeks where the champion has FRAUDOPS_TRAIN_DAYS (7), ending
# on the same day, so both are tested on the same window. It is trained before the replay,
# to score the replayed days in shadow: trained after them, it could learn nothing from
# them anyway (labels come 7 days late, and training takes only the labels known when the
# test window starts): with the same window and seed it would be the champion again.
CHALLENGER_TRAIN_DAYS = 14


class StepFailed(Exception):
    """A step's command failed; its output is in the demo's log."""


class Steps:
    """The demo's steps on one progress bar: each runs the command a user would, its
    output (library INFO lines, warnings, the command's own progress bars) appended to
    the log file, and only the step and its time on screen."""

    def __init__(self, total: int, log_path: Path, env: dict[str, str]):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.env = env
        self.log_path = log_path
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task("starting", total=total)
        self.done = 0

    def __enter__(self) -> Steps:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def run(self, title: str, *args: str, capture: bool = False) -> str:
        """Run one step; its stdout is returned when ``capture`` (JSON results)."""
        shown = " ".join(Path(a).name if a.startswith(str(BIN)) else a for a in args)
        self.progress.update(self.task, description=title)
        started = time.monotonic()
        with self.log_path.open("a") as log:
            log.write(f"\n$ {' '.join(args)}\n")
            log.flush()
            out = subprocess.run(
                args,
                cwd=ROOT,
                env=self.env,
                text=True,
                stdout=subprocess.PIPE if capture else log,
                stderr=log,
            )
        seconds = time.monotonic() - started
        if out.returncode != 0:
            console.print(f"[red]x[/] {title}   [dim]$ {shown}[/]", soft_wrap=True)
            raise StepFailed(f"`{shown}` exited with status {out.returncode}")
        self.step_done(title, seconds, shown)
        return out.stdout or ""

    def step_done(self, title: str, seconds: float, shown: str) -> None:
        self.done += 1
        self.progress.advance(self.task)
        # soft_wrap: commands and paths stay whole, to copy
        console.print(f"[green]v[/] {title} [dim]({seconds:.1f} s)   $ {shown}[/]", soft_wrap=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with status {proc.returncode}; see serve.log")
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
        env.update(
            {
                "FRAUDOPS_ENVIRONMENT": "local",
                "FRAUDOPS_ONLINE_STORE": "sqlite",
                "FRAUDOPS_DATABASE_URL": f"sqlite:///{data / 'predictions.db'}",
                "FRAUDOPS_MLFLOW_TRACKING_URI": f"sqlite:///{data / 'mlflow.db'}",
            }
        )
    return env


def tracking_uri(data: Path, env: dict[str, str], use_settings: bool) -> str:
    """Where the demo's runs and models went: the embedded store, or with
    ``use_settings`` the tracking URI the settings resolve to (environment or ``.env``)."""
    if not use_settings:
        return env["FRAUDOPS_MLFLOW_TRACKING_URI"]
    from fraudops.core.settings import Settings

    return Settings(data_dir=data).resolved_mlflow_tracking_uri


def fresh_data_dir(data: Path) -> None:
    """Start from an empty ``data``: delete it only if an earlier demo made it."""
    if data.exists():
        if any(data.iterdir()) and not (data / MARKER).exists():
            raise SystemExit(
                f"error: {data} exists and was not made by the demo, so the demo will not "
                "delete it: choose another --data-dir, or empty it yourself"
            )
        shutil.rmtree(data)
    data.mkdir(parents=True)
    (data / MARKER).write_text("made by scripts/demo.py; deleted when the demo runs again\n")


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Run the whole FraudOps loop on embedded defaults."
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=ROOT / "data" / "demo",
        help="where the demo keeps its state (deleted and made afresh at each run)",
    )
    parser.add_argument(
        "--use-settings",
        action="store_true",
        help="use the FRAUDOPS_* settings of the environment and .env (Redis, PostgreSQL, "
        "an MLflow server) instead of the embedded defaults: the demo then trains, promotes "
        "and writes there",
    )
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--terminals", type=int, default=2000)
    # enough days for a 30-day customer history before the challenger's training window
    # (35 days before today: 14 of training, 7 of delay, 7 of test, 7 of label delay)
    parser.add_argument("--days", type=int, default=65)
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
    log_path = data / "demo.log"
    console.print(
        f"FraudOps demo in {data}\n[dim]every command's output (library INFO lines, "
        f"warnings): {log_path}[/]\n",
        soft_wrap=True,
    )
    fraudops = str(BIN / "fraudops")
    server = None
    try:
        with Steps(STEPS, log_path, env) as steps:
            steps.run(
                f"simulate {args.days} days of transactions (the last one drifted)",
                fraudops,
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
            )
            everything = pd.read_parquet(raw / "all.parquet")
            cut = pd.Timestamp(replay_from, tz="UTC")
            history = everything[everything["timestamp"] < cut]
            history.to_parquet(raw / "history.parquet", index=False)
            live = everything[everything["timestamp"] >= cut]
            live.drop(columns=["is_fraud", "label_timestamp", "fraud_scenario"]).to_parquet(
                raw / "live.parquet", index=False
            )
            steps.run(
                f"ingest {len(history):,} labelled transactions",
                fraudops,
                "ingest",
                str(raw / "history.parquet"),
            )
            steps.run("build features", fraudops, "features", "build")
            steps.run("register features with Feast", fraudops, "features", "apply")
            steps.run("materialize the online store", fraudops, "materialize")
            report = json.loads(steps.run("train a model", fraudops, "train", capture=True))
            promotion = json.loads(
                steps.run("promote it to @champion", fraudops, "promote", capture=True)
            )
            challenger = json.loads(
                steps.run(
                    f"train a challenger on {CHALLENGER_TRAIN_DAYS} days (@challenger)",
                    fraudops,
                    "train",
                    "--train-days",
                    str(CHALLENGER_TRAIN_DAYS),
                    capture=True,
                )
            )

            port = free_port()
            url = f"http://127.0.0.1:{port}"
            steps.progress.update(steps.task, description="start the scoring API, shadow on")
            serve_started = time.monotonic()
            server = subprocess.Popen(  # the challenger scores every transaction in shadow
                [str(BIN / "bentoml"), "serve", "--port", str(port)],
                cwd=ROOT,
                # BENTOML_HOME of its own: a starting `bentoml serve` empties its home's
                # Prometheus directory, which would blank the /metrics of a scorer of yours
                env={**env, "FRAUDOPS_SHADOW": "true", "BENTOML_HOME": str(data / "bentoml")},
                stdout=(data / "serve.log").open("w"),
                stderr=subprocess.STDOUT,
            )
            wait_ready(url, server)
            steps.step_done(
                "start the scoring API, shadow on",
                time.monotonic() - serve_started,
                f"FRAUDOPS_SHADOW=true bentoml serve --port {port}   (its log: "
                f"{data / 'serve.log'})",
            )
            replay_json = data / "replay.json"
            steps.run(
                f"replay the last 2 days through the API ({len(live):,} transactions)",
                fraudops,
                "replay",
                str(raw / "live.parquet"),
                "--to",
                "http",
                "--url",
                url,
                "--json-out",
                str(replay_json),
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
            steps.run(
                "ingest chargebacks of the first replayed day",
                fraudops,
                "labels",
                "ingest",
                str(raw / "chargebacks.csv"),
            )
            steps.run(  # the scored traffic becomes history: terminal features stay fresh
                "run the nightly job (scored traffic and labels into the history)",
                fraudops,
                "nightly",
            )
            monitor = json.loads(
                steps.run(
                    "monitor the replayed days (Evidently)",
                    fraudops,
                    "monitor",
                    "--start",
                    replay_from.isoformat(),
                    "--end",
                    today.isoformat(),
                    capture=True,
                )
            )
            comparison = json.loads(
                steps.run(
                    "compare @challenger with @champion on the replayed days",
                    fraudops,
                    "compare",
                    "--start",
                    replay_from.isoformat(),
                    "--end",
                    today.isoformat(),
                    "--json",
                    capture=True,
                )
            )
    except (StepFailed, RuntimeError, TimeoutError) as exc:
        console.print(f"\n[bold red]error:[/] the demo stopped: {exc}")
        tail = log_path.read_text(errors="replace").splitlines()[-15:] if log_path.exists() else []
        if tail:
            console.print(f"last lines of {log_path}:\n" + "\n".join(tail), markup=False)
        return 1
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    summary(
        data,
        report,
        promotion,
        challenger,
        replay,
        monitor,
        comparison,
        time.monotonic() - started,
        tracking_uri(data, env, args.use_settings),
        drift_day,
        log_path,
    )
    (data / "summary.json").write_text(
        json.dumps(
            {
                "train": report,
                "promotion": promotion,
                "challenger": challenger,
                "replay": replay,
                "monitor": monitor,
                "comparison": comparison,
                "live_transactions": int(len(live)),
            },
            indent=2,
            default=str,
        )
    )
    return 0


INTENDED = {"feature_drift", "score_drift"}  # the demo drifts its last day on purpose


def summary(
    data: Path,
    report: dict,
    promotion: dict,
    challenger: dict,
    replay: dict,
    monitor: dict,
    comparison: dict,
    seconds: float,
    tracking_uri: str,
    drift_day: object,
    log_path: Path,
) -> None:
    """What happened, as one table, then where to look."""
    client = replay.get("latency_ms", {})
    table = Table(
        title=f"FraudOps demo finished in {seconds / 60:.1f} min",
        show_header=False,
        title_justify="left",
    )
    table.add_column(style="bold")
    table.add_column()
    table.add_row(
        "model",
        f"version {report['model_version']} ({promotion['decision']} to @champion); "
        f"{_tested(report)}",
    )
    windows = challenger["windows"]
    table.add_row(
        "challenger",
        f"version {challenger['model_version']} (@challenger, trained on "
        f"{windows['train_start']}..{windows['train_end']}); {_tested(challenger)}",
    )
    decisions = ", ".join(f"{k} {v:,}" for k, v in replay.get("decisions", {}).items())
    table.add_row(
        "replay",
        f"{replay.get('sent', 0):,} sent, {replay.get('scored', 0):,} scored, "
        f"{replay.get('errors', 0):,} errors; {decisions}",
    )
    table.add_row(
        "latency, client",
        f"p50 {_ms(client.get('p50'))}, p99 {_ms(client.get('p99'))} (HTTP round trip, "
        "measured by fraudops replay)",
    )
    table.add_row(
        "latency, server",
        f"p50 {_ms(monitor.get('latency_p50_ms'))}, p99 {_ms(monitor.get('latency_p99_ms'))} "
        "(scoring time in the service, from the prediction log)",
    )
    table.add_row(
        "drift",
        f"{monitor.get('drifted_features')} of {monitor.get('features_checked')} features "
        f"drifted; score drift {_num(monitor.get('score_drift'))}",
    )
    for alert in monitor.get("alerts", []):
        why = (
            f"[green]intended[/]: the demo shifts behaviour from {drift_day}"
            if alert["kind"] in INTENDED
            else "[red]not intended[/]"
        )
        table.add_row(f"alert {alert['kind']}", f"{why}; {alert['message']}")
    for name, text in comparison_rows(comparison):
        table.add_row(name, text)
    console.print()
    console.print(table)
    # plain lines too, for scripts and the end-to-end test
    console.print(
        f"Replayed {replay.get('sent')} transactions through the API: "
        f"{replay.get('scored')} scored, {replay.get('errors')} errors."
    )
    console.print(
        f"Compared @challenger v{comparison['challenger_version']} with @champion "
        f"v{comparison['champion_version']} on {comparison['transactions']} live "
        f"transactions: same decision {comparison['decision_agreement']:.4f}, "
        f"{comparison['labelled']} labelled ({comparison['frauds']} frauds).",
        soft_wrap=True,
    )
    console.print("\nWhere to look:")
    for line in [*where_to_look(data, tracking_uri), f"log:           {log_path}"]:
        console.print(f"  {line}", markup=False, soft_wrap=True)


def _tested(report: dict) -> str:
    m = report["metrics"]
    return (
        f"test {report['windows']['test_start']}..{report['windows']['test_end']}: ROC AUC "
        f"{m['roc_auc']:.3f}, average precision {m['average_precision']:.3f}, card "
        f"precision@100 {m['card_precision_at_100']:.3f}, Brier {m['brier']:.4f}"
    )


# the metrics of `fraudops compare` the summary shows, as the model rows name them
LIVE_METRICS = {
    "roc_auc": "ROC AUC",
    "average_precision": "average precision",
    "card_precision_at_100": "card precision@100",
}


def comparison_rows(comparison: dict) -> list[tuple[str, str]]:
    """The summary's rows for ``fraudops compare --json``: agreement and decision flips
    on the replayed transactions, and each model's metrics on the labelled ones."""
    flips = sorted(comparison["flips"].items(), key=lambda kv: -kv[1])
    rows = [
        (
            "shadow",
            f"v{comparison['challenger_version']} scored the same {comparison['transactions']:,} "
            f"replayed transactions as v{comparison['champion_version']}: same decision "
            f"{comparison['decision_agreement']:.1%}, score rank correlation "
            f"{comparison['score_rank_correlation']:.3f}, mean |score difference| "
            f"{comparison['score_mean_abs_difference']:.4f}",
        ),
        ("decision flips", ", ".join(f"{k} {n:,}" for k, n in flips) or "none"),
    ]
    metrics = comparison["metrics"]
    if not metrics:
        rows.append(
            (
                "live, labelled",
                f"{comparison['labelled']:,} labelled ({comparison['frauds']:,} frauds): "
                "too few for metrics",
            )
        )
        return rows
    lines = [
        f"{comparison['labelled']:,} labelled ({comparison['frauds']:,} frauds), "
        f"{comparison['confidence']:.0%} bootstrap intervals:"
    ]
    for name, label in LIVE_METRICS.items():
        champion, challenger, difference = (
            metrics[role][name] for role in ("champion", "challenger", "difference")
        )
        lines.append(
            f"{label}: champion {_estimate(champion)}, challenger {_estimate(challenger)}, "
            f"difference {_estimate(difference, '+.3f')}"
        )
    rows.append(("live, labelled", "\n".join(lines)))
    return rows


def _estimate(e: dict, spec: str = ".3f") -> str:
    if e["value"] is None or math.isnan(e["value"]):
        return "n/a"
    return f"{e['value']:{spec}} [{e['low']:{spec}}, {e['high']:{spec}}]"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


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
        f"scoring API:   {env} uv run bentoml serve   (then see docs/scoring-api.md)",
        f"comparison:    {env} uv run fraudops compare   (flip examples; then fraudops "
        "promote --evidence live, docs/model-lifecycle.md)",
    ]


if __name__ == "__main__":
    sys.exit(main())
