"""The demo path on small data against real services: Redis (online store), PostgreSQL
(prediction log and MLflow's store) and an `mlflow server` process, as in production
without Docker. The numbers the demo reports must match the database, the live comparison
of the challenger scored in shadow included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow(100)]
ROOT = Path(__file__).resolve().parents[2]


def test_demo_against_redis_postgresql_and_an_mlflow_server(
    tmp_path: Path, redis_server: str, postgres_server: str
) -> None:
    import redis

    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    suffix = uuid.uuid4().hex[:8]
    databases = [f"fraudops_e2e_{suffix}", f"fraudops_e2e_mlflow_{suffix}"]
    with admin.connect() as conn:
        for name in databases:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = sa.engine.make_url(postgres_server)
    log_url, mlflow_db = (
        base.set(database=n).render_as_string(hide_password=False) for n in databases
    )
    port = free_port()
    mlflow_log = (tmp_path / "mlflow.log").open("w")
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen(
        [
            str(bin_dir / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            mlflow_db,
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            # one worker, not MLflow's default four: the others' start-up took CPU from
            # the demo's first steps on a 2-core machine, and one client needs one worker
            "--workers",
            "1",
        ],
        stdout=mlflow_log,
        stderr=subprocess.STDOUT,
    )
    redis_db = f"{redis_server}/8"
    redis.Redis.from_url(redis_db).flushdb()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDOPS_")}
        env.update(
            {
                "FRAUDOPS_DATA_DIR": str(tmp_path / "data"),
                "FRAUDOPS_ONLINE_STORE": "redis",
                "FRAUDOPS_REDIS_URL": redis_db,
                "FRAUDOPS_DATABASE_URL": log_url,
                "FRAUDOPS_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
            }
        )
        # The demo starts while MLflow does: its first steps (simulate, ingest, features,
        # materialize) do not use MLflow, and should `fraudops train` come before MLflow is
        # up, MLflow's client retries the refused connection (MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        # some 4 minutes in all), as it would while a server restarts.
        out_path, err_path = tmp_path / "demo.out", tmp_path / "demo.err"
        with out_path.open("w") as out, err_path.open("w") as err:
            running = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "scripts" / "demo.py"),
                    "--use-settings",
                    "--data-dir",
                    str(tmp_path / "data"),
                    "--customers",
                    "300",
                    "--terminals",
                    "600",
                    "--days",
                    "36",  # the challenger trains on 14 days: 35 before today
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=err,
            )
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert server.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
            returncode = running.wait(timeout=900)
        finally:
            if running.poll() is None:
                running.kill()
                running.wait()
        stdout, stderr = out_path.read_text(), err_path.read_text()
        assert returncode == 0, stdout[-3000:] + stderr[-3000:]
        summary = json.loads((tmp_path / "data" / "summary.json").read_text())
        replay = summary["replay"]
        assert replay["sent"] == summary["live_transactions"] > 0
        assert replay["errors"] == 0 and replay["scored"] == replay["sent"]
        assert f"Replayed {replay['sent']} transactions" in stdout
        engine = sa.create_engine(log_url)
        with engine.connect() as conn:
            logged = conn.execute(sa.text("select count(*) from predictions")).scalar_one()
            shadow = conn.execute(
                sa.text("select model_version, count(*) from shadow_predictions group by 1")
            ).all()
            labelled = conn.execute(
                sa.text(
                    "select count(*), coalesce(sum(l.is_fraud), 0) from labels l join "
                    "predictions p on p.transaction_id = l.transaction_id"
                )
            ).one()
        engine.dispose()
        assert logged == replay["scored"]  # rows logged = transactions replayed
        # the challenger scored every replayed transaction in shadow, and the summary's
        # comparison is on those rows and the chargebacks' labels
        challenger, comparison = summary["challenger"], summary["comparison"]
        assert [(str(v), n) for v, n in shadow] == [(challenger["model_version"], logged)]
        assert comparison["challenger_version"] == challenger["model_version"]
        assert comparison["champion_version"] == summary["train"]["model_version"]
        assert comparison["transactions"] == logged
        assert (comparison["labelled"], comparison["frauds"]) == tuple(labelled)
        assert 0 < comparison["frauds"] < comparison["labelled"] < logged
        for role in ("champion", "challenger"):
            assert 0.5 < comparison["metrics"][role]["roc_auc"]["value"] <= 1
        assert (
            f"Compared @challenger v{comparison['challenger_version']} with @champion "
            f"v{comparison['champion_version']} on {logged} live transactions: same decision "
            f"{comparison['decision_agreement']:.4f}, {comparison['labelled']} labelled "
            f"({comparison['frauds']} frauds)." in stdout
        )
        version = httpx.get(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/model-versions/get",
            params={"name": "fraud-detector", "version": challenger["model_version"]},
        ).json()["model_version"]
        tags = {t["key"]: t["value"] for t in version.get("tags", [])}
        assert tags["live.transactions"] == str(logged)  # recorded where people promote
        assert redis.Redis.from_url(redis_db).dbsize() > 0  # the online store was Redis
        search = {"experiment_ids": ["1"], "max_results": 10}
        runs = httpx.post(f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search", json=search)
        assert runs.status_code == 200 and runs.json().get("runs"), runs.text
    finally:
        server.terminate()
        server.wait(timeout=30)
        mlflow_log.close()
        redis.Redis.from_url(redis_db).flushdb()
        with admin.connect() as conn:
            for name in databases:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
