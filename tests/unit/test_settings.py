"""Settings: embedded defaults under one data directory, switched by environment only."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraudops.core.settings import Settings, get_settings


def test_defaults_are_embedded_under_the_data_dir(settings: Settings) -> None:
    data = settings.data_dir
    assert settings.online_store == "sqlite"
    assert settings.resolved_database_url == f"sqlite:///{data / 'predictions.db'}"
    assert settings.resolved_mlflow_tracking_uri == f"sqlite:///{data / 'mlflow.db'}"
    assert settings.transactions_path.is_relative_to(data)
    assert settings.feast_dir.is_relative_to(data)


def test_environment_switches_services(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDOPS_ONLINE_STORE", "redis")
    monkeypatch.setenv("FRAUDOPS_REDIS_URL", "redis://cache:6379/2")
    monkeypatch.setenv("FRAUDOPS_DATABASE_URL", "postgresql+psycopg://u@db/fraud")
    monkeypatch.setenv("FRAUDOPS_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    get_settings.cache_clear()
    s = get_settings()
    assert s.online_store == "redis"
    assert s.redis_url == "redis://cache:6379/2"
    assert s.resolved_database_url == "postgresql+psycopg://u@db/fraud"
    assert s.mlflow_tracking_uri == "http://mlflow:5000"
    assert s.resolved_mlflow_tracking_uri == "http://mlflow:5000"


def test_get_settings_is_cached(settings: Settings) -> None:
    assert get_settings() is get_settings()


def test_dotenv_file_is_read(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("FRAUDOPS_TRAIN_DAYS=21\n")
    get_settings.cache_clear()
    assert get_settings().train_days == 21


def test_bad_value_is_refused(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDOPS_ONLINE_STORE", "memcached")
    with pytest.raises(ValueError, match="online_store"):
        Settings()
    monkeypatch.setenv("FRAUDOPS_ONLINE_STORE", "sqlite")
    monkeypatch.setenv("FRAUDOPS_LOG_FLUSH_SECONDS", "0")
    with pytest.raises(ValueError, match="log_flush_seconds"):
        Settings()


@pytest.mark.parametrize(
    ("key", "message"),
    [("changeme", "is a placeholder"), (None, "is not set"), ("short-key", "has 9 characters")],
)
def test_production_needs_a_real_api_key(key: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(environment="production", api_key=key)
    assert Settings(environment="local", api_key=key).environment == "local"
    good = "k" * 16
    assert Settings(environment="production", api_key=good).api_key.get_secret_value() == good


def test_env_example_names_only_known_settings() -> None:
    example = Path(__file__).parents[2] / ".env.example"
    names = [
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in example.read_text().splitlines()
        if "=" in line and line.lstrip("# ").startswith("FRAUDOPS_")
    ]
    assert names, ".env.example lists no settings"
    known = {f"FRAUDOPS_{name.upper()}" for name in Settings.model_fields}
    assert set(names) <= known, set(names) - known


def test_configuration_page_settings_table_is_generated_from_the_settings_class() -> None:
    from fraudops.core.docs import CONFIGURATION_PAGE, render

    text = CONFIGURATION_PAGE.read_text()
    assert render(text) == text, "run `python -m fraudops.core.docs` to regenerate the table"


def test_the_table_shows_every_default_as_a_variable_would_be_written() -> None:
    """Defaults made by a factory are shown too (not pydantic's 'undefined'), and each
    shown default, set as the variable, gives the default back."""
    from fraudops.core.docs import settings_table

    rows = [line.split(" | ") for line in settings_table().splitlines()[2:]]
    assert not [row for row in rows if "Undefined" in row[1]]
    assert any(row[1] == "`tx_is_weekend`" for row in rows)  # a list, from default_factory
    assert Settings(drift_ignore_features="tx_is_weekend").drift_ignore_features == (
        Settings().drift_ignore_features
    )
