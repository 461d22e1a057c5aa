"""Connections to the online store's Redis, single or cluster, from the settings."""

from __future__ import annotations

from typing import Any

from fraudops.core.settings import Settings


def redis_client(settings: Settings, timeout: float | None = None) -> Any:
    """A client of the online store's Redis, or of its cluster (``FRAUDOPS_REDIS_MODE``);
    ``timeout`` bounds each connect and reply, in seconds."""
    import redis
    from redis.cluster import RedisCluster

    options: dict[str, Any] = {}
    if timeout is not None:
        options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if settings.redis_mode == "cluster":
        return RedisCluster.from_url(settings.redis_url, **options)
    return redis.Redis.from_url(settings.redis_url, **options)
