"""docker-compose.yml is valid, runs only commands this project has, and configures only
settings FraudOps knows."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from fraudops.cli.app import app
from fraudops.core.settings import Settings
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
OUR_IMAGE = "fraudops:latest"


def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_compose_file_validates() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        message = "docker-compose is not installed (apt-get install docker-compose)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    env = {**os.environ, "POSTGRES_PASSWORD": "x", "FRAUDOPS_API_KEY": "y"}
    result = subprocess.run(
        [binary, "-f", str(COMPOSE), "config", "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_every_service_has_a_healthcheck_or_waits_on_healthy_dependencies() -> None:
    for name, service in services().items():
        conditions = [d.get("condition") for d in (service.get("depends_on") or {}).values()]
        assert "healthcheck" in service or conditions, name
        assert all(c == "service_healthy" for c in conditions), name


def test_every_command_exists_in_the_project() -> None:
    cli = get_command(app)
    for name, service in services().items():
        if service.get("image") != OUR_IMAGE:
            continue
        command = service["command"]
        match command[0]:
            case "fraudops":
                assert command[1] in cli.commands, f"{name}: fraudops {command[1]} does not exist"
            case "bentoml":
                assert command[1] == "serve" and (ROOT / "bentofile.yaml").exists(), name
            case "streamlit":
                assert (ROOT / command[2]).exists(), f"{name}: {command[2]} missing"
            case "mlflow":
                assert (
                    shutil.which("mlflow") or (Path(os.sys.executable).parent / "mlflow").exists()
                )
            case other:
                pytest.fail(f"{name}: unknown program {other}")


def test_every_fraudops_variable_is_a_setting() -> None:
    known = {f"FRAUDOPS_{field.upper()}" for field in Settings.model_fields}
    for name, service in services().items():
        variables = set((service.get("environment") or {}).keys())
        unknown = {v for v in variables if v.startswith("FRAUDOPS_")} - known
        assert not unknown, f"{name}: {unknown}"


def test_only_the_scorer_is_published_beyond_this_host() -> None:
    """MLflow and the dashboard have no authentication (and the scorer follows whatever
    @champion MLflow names): they listen on the host's loopback only. The scorer's API
    needs its key."""
    open_ports = {
        name: port
        for name, service in services().items()
        for port in service.get("ports", [])
        if not str(port).startswith("127.0.0.1:")
    }
    assert open_ports == {"scorer": "3000:3000"}


def test_the_image_carries_the_dashboards_streamlit_settings() -> None:
    """.streamlit/config.toml turns off Streamlit's usage statistics: the image has it where
    the dashboard runs (WORKDIR /app)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "WORKDIR /app" in dockerfile and "COPY .streamlit ./.streamlit" in dockerfile
    assert "gatherUsageStats = false" in (ROOT / ".streamlit" / "config.toml").read_text()
