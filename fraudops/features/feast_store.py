"""Everything FraudOps knows about Feast's API, in one module.

- :class:`FraudOpsOnlineStore` and :class:`FraudOpsRegistryStore` are named in
  ``feature_repo/feature_store.yaml``: they read the online store backend (SQLite or Redis)
  and the registry location from :mod:`fraudops.core.settings`, so the plain ``feast`` CLI and
  ``fraudops`` see the same configuration for the same environment.
- :func:`get_store`, :func:`apply_definitions`, :func:`materialize` and
  :func:`historical_features` are what the rest of the library calls.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import pandas as pd
from feast import FeatureService, FeatureStore, FileSource
from feast.data_format import ParquetFormat
from feast.infra.online_stores.online_store import OnlineStore
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
from feast.infra.registry.file import FileRegistryStore
from feast.infra.supported_async_methods import SupportedAsyncMethods
from feast.repo_config import FeastConfigBaseModel, RegistryConfig, RepoConfig

from fraudops.core.settings import Settings, get_settings
from fraudops.core.tables import table_path

log = logging.getLogger(__name__)

FEATURE_REPO = Path(__file__).resolve().parents[2] / "feature_repo"


def offline_table_path(name: str, settings: Settings | None = None) -> str:
    """Where ``fraudops features build`` writes a feature table and Feast reads it (the
    layout: :mod:`fraudops.core.tables`)."""
    settings = settings or get_settings()
    if settings.offline_store == "spark":
        return settings.spark_table_uri(name)
    return str(table_path(settings.offline_dir / "features", name))


def offline_source(name: str, description: str, settings: Settings | None = None) -> Any:
    """The Feast source of a feature table the build writes: a parquet ``FileSource`` (on
    the day-partitioned directory, or the file) for DuckDB, a ``SparkSource`` over the
    day-partitioned table for Spark."""
    settings = settings or get_settings()
    path = offline_table_path(name, settings)
    if settings.offline_store == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import (
            SparkSource,
        )

        from fraudops.features.spark_build import EVENT_DATE

        return SparkSource(
            name=f"{name}_source",
            path=path,
            file_format="parquet",
            timestamp_field="event_timestamp",
            date_partition_column=EVENT_DATE,
            date_partition_column_format="%Y-%m-%d",
            description=description,
        )
    return FileSource(
        name=f"{name}_source",
        path=path,
        file_format=ParquetFormat(),  # a directory's name does not say it
        timestamp_field="event_timestamp",
        description=description,
    )


def feast_redis_connection_string(url: str) -> str:
    """``redis://[:password@]host:port/db`` in Feast's ``host:port,db=N,password=...`` form."""
    parsed = urlparse(url)
    parts = [f"{parsed.hostname or 'localhost'}:{parsed.port or 6379}"]
    parts.append(f"db={int((parsed.path or '/0').lstrip('/') or 0)}")
    if parsed.username and parsed.username != "default":
        parts.append(f"username={unquote(parsed.username)}")
    if parsed.password:
        parts.append(f"password={unquote(parsed.password)}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def inner_online_config(settings: Settings) -> Any:
    if settings.online_store == "redis" and settings.redis_mode == "cluster":
        node = feast_redis_connection_string(settings.redis_url).split(",db=")[0]
        return RedisOnlineStoreConfig(redis_type="redis_cluster", connection_string=node)
    if settings.online_store == "redis":
        return RedisOnlineStoreConfig(
            connection_string=feast_redis_connection_string(settings.redis_url)
        )
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    return SqliteOnlineStoreConfig(path=str(settings.feast_dir / "online_store.db"))


# --- classes named in feature_store.yaml ---------------------------------------------------
class FraudOpsOnlineStoreConfig(FeastConfigBaseModel):
    type: Literal["fraudops.features.feast_store.FraudOpsOnlineStore"] = (
        "fraudops.features.feast_store.FraudOpsOnlineStore"
    )


class FraudOpsOnlineStore(OnlineStore):
    """Feast's own SQLite or Redis online store, chosen by FRAUDOPS_ONLINE_STORE.

    Keys and values are exactly those of the delegate, so either store can be read and
    written by Feast's tools; this class only decides which one and where.
    """

    def __init__(self) -> None:
        settings = get_settings()
        self.backend = settings.online_store
        self.inner: OnlineStore = (
            RedisOnlineStore() if self.backend == "redis" else SqliteOnlineStore()
        )
        self._inner_config = inner_online_config(settings)
        self._configs: dict[int, RepoConfig] = {}

    def _config(self, config: RepoConfig) -> RepoConfig:
        """A copy of the repo config whose ``online_store`` is the delegate's config."""
        key = id(config)
        if key not in self._configs:
            inner = copy.copy(config)
            inner.online_config = self._inner_config
            # RepoConfig caches its parsed online store in this private attribute (feast
            # 0.67.0) and has no setter: the copy would keep the outer (FraudOps) one.
            # Not a fast path; test_feature_store.py's sqlite and Redis cases cover it.
            inner._online_store = self._inner_config
            self._configs = {key: inner}
        return self._configs[key]

    @property
    def async_supported(self) -> SupportedAsyncMethods:
        return self.inner.async_supported

    def online_write_batch(self, config, table, data, progress):  # type: ignore[no-untyped-def]
        return self.inner.online_write_batch(self._config(config), table, data, progress)

    def online_read(self, config, table, entity_keys, requested_features=None):  # type: ignore[no-untyped-def]
        return self.inner.online_read(self._config(config), table, entity_keys, requested_features)

    def update(
        self,
        config,
        tables_to_delete,
        tables_to_keep,
        entities_to_delete,  # type: ignore[no-untyped-def]
        entities_to_keep,
        partial,
    ):
        return self.inner.update(
            self._config(config),
            tables_to_delete,
            tables_to_keep,
            entities_to_delete,
            entities_to_keep,
            partial,
        )

    def teardown(self, config, tables, entities):  # type: ignore[no-untyped-def]
        return self.inner.teardown(self._config(config), tables, entities)

    def plan(self, config, desired_registry_proto):  # type: ignore[no-untyped-def]
        return self.inner.plan(self._config(config), desired_registry_proto)

    def get_online_features(self, config, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self.inner.get_online_features(self._config(config), *args, **kwargs)

    async def get_online_features_async(self, config, *args, **kwargs):  # type: ignore[no-untyped-def]
        return await self.inner.get_online_features_async(self._config(config), *args, **kwargs)

    async def online_read_async(self, config, table, entity_keys, requested_features=None):  # type: ignore[no-untyped-def]
        return await self.inner.online_read_async(
            self._config(config), table, entity_keys, requested_features
        )

    async def online_write_batch_async(self, config, table, data, progress):  # type: ignore[no-untyped-def]
        return await self.inner.online_write_batch_async(
            self._config(config), table, data, progress
        )

    async def initialize(self, config: RepoConfig) -> None:
        await self.inner.initialize(self._config(config))

    async def close(self) -> None:
        await self.inner.close()


class FraudOpsOfflineStoreConfig:
    """Feast's DuckDB or Spark offline store config, chosen by FRAUDOPS_OFFLINE_STORE.

    ``feature_store.yaml`` names ``fraudops.features.feast_store.FraudOpsOfflineStore``;
    Feast builds its config by calling this class, then finds the store from the config's
    class. Making Feast's own config (``__new__``) has Feast use its own store, unwrapped.
    The Spark config carries FraudOps' session settings, so a session Feast starts is the one
    ``fraudops.features.spark_build`` would (FRAUDOPS_SPARK_MASTER, FRAUDOPS_SPARK_CONF)."""

    def __new__(cls, **_: Any) -> Any:
        settings = get_settings()
        if settings.offline_store == "spark":
            from feast.infra.offline_stores.contrib.spark_offline_store.spark import (
                SparkOfflineStoreConfig,
            )

            from fraudops.features.spark_build import session_conf, use_this_python_locally

            use_this_python_locally(settings)
            return SparkOfflineStoreConfig(type="spark", spark_conf=session_conf(settings))
        from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig

        return DuckDBOfflineStoreConfig(type="duckdb")


class FraudOpsRegistryStore(FileRegistryStore):
    """Feast's file registry, at ``<data_dir>/feast/registry.db`` from the settings."""

    def __init__(self, registry_config: RegistryConfig, repo_path: Path):
        settings = get_settings()
        settings.feast_dir.mkdir(parents=True, exist_ok=True)
        path = settings.feast_dir / "registry.db"
        super().__init__(registry_config.model_copy(update={"path": str(path)}), repo_path)


# --- what the rest of FraudOps calls ---------------------------------------------------------
def get_store(repo_path: Path = FEATURE_REPO) -> FeatureStore:
    return FeatureStore(repo_path=str(repo_path))


def load_definitions(repo_path: Path = FEATURE_REPO) -> list[Any]:
    """The Feast objects defined in the feature repository's ``definitions.py``.

    (Feast's own ``parse_repo`` imports relative to the working directory; this does not.)
    """
    from feast import Entity, FeatureView, OnDemandFeatureView
    from feast.data_source import DataSource

    spec = importlib.util.spec_from_file_location(
        "fraudops_feature_definitions", repo_path / "definitions.py"
    )
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"no definitions.py in {repo_path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kinds = (Entity, DataSource, FeatureView, OnDemandFeatureView, FeatureService)
    return [value for value in vars(module).values() if isinstance(value, kinds)]


def apply_definitions(store: FeatureStore, repo_path: Path = FEATURE_REPO) -> None:
    """``feast apply`` in-process: register entities, sources, views and services."""
    store.apply(load_definitions(repo_path))


def feature_service(store: FeatureStore, name: str | None = None) -> FeatureService:
    return store.get_feature_service(name or get_settings().feature_service)


def service_feature_names(service: FeatureService) -> list[str]:
    """The ordered model feature list: the service's views in order, features in order."""
    return [
        feature.name
        for projection in service.feature_view_projections
        for feature in projection.features
    ]


def materialize(store: FeatureStore, end: datetime, views: Sequence[str] | None = None) -> None:
    store.materialize_incremental(end_date=end, feature_views=list(views) if views else None)


def historical_features(
    store: FeatureStore, entity_df: pd.DataFrame, service: FeatureService
) -> pd.DataFrame:
    return store.get_historical_features(entity_df=entity_df, features=service).to_df()
