"""Shared fixtures: isolated settings, and the real services the integration tests need.

Services are found or started, never faked:
- Redis: ``FRAUDOPS_TEST_REDIS_URL``; else, with ``CI=true`` and in one process,
  127.0.0.1:6379; else a throwaway ``redis-server`` on a free port for the session, one per
  worker under ``pytest -n N`` (a user's Redis is never flushed, and two workers never
  flush each other's DBs).
- PostgreSQL: ``FRAUDOPS_TEST_DATABASE_URL`` (alias ``FRAUDOPS_TEST_POSTGRES_URL``); else,
  with ``CI=true``, postgresql://postgres@127.0.0.1:5432/test; else the PostgreSQL tests skip
  saying why. Each test creates a database of its own and drops it (a user's databases are
  never touched).
Outside CI a missing service skips the tests that need it (listed at the end of the run);
with ``CI=true`` it is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# the test processes: pytest -n N (make test) runs N workers, each with its own fixtures
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules marked ``slow(seconds)`` first, the longest first: the workers of
    ``pytest -n N --dist loadfile`` (`make test`) take whole modules in this order, and the
    short ones then fill the gaps; the longest taken last would leave one worker running it
    alone."""

    def seconds(item: pytest.Item) -> float:
        slow = item.get_closest_marker("slow")
        return float(slow.args[0]) if slow is not None and slow.args else 0.0

    items.sort(key=seconds, reverse=True)  # stable: a module's tests keep their order


_unavailable: dict[str, str] = {}


def service_missing(name: str, reason: str) -> NoReturn:
    """Skip (locally) or fail (in CI) because a service the test needs is not there."""
    _unavailable[name] = reason
    if IN_CI:
        pytest.fail(f"{name} is required in CI but unavailable: {reason}", pytrace=False)
    pytest.skip(f"{name} unavailable: {reason}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker of ``pytest -n N`` hands the services it missed to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["unavailable"] = dict(_unavailable)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: none without pytest-xdist
def pytest_testnodedown(node, error) -> None:  # type: ignore[no-untyped-def]
    """The controller of ``pytest -n N`` gathers the services its workers missed."""
    _unavailable.update(getattr(node, "workeroutput", {}).get("unavailable", {}))


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if _unavailable:
        terminalreporter.section("services not available (their tests were skipped)")
        for name, reason in _unavailable.items():
            terminalreporter.write_line(f"{name}: {reason}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings pointing at a fresh data directory; clears the settings cache around it."""
    from fraudops.core.settings import get_settings

    for key in list(os.environ):
        if key.startswith("FRAUDOPS_") and not key.startswith("FRAUDOPS_TEST_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("FRAUDOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no stray .env from the working tree
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


# --- Redis ------------------------------------------------------------------------------
def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def start_redis_server(*args: str) -> tuple[subprocess.Popen[bytes], int]:
    """A throwaway ``redis-server`` on a free port (nothing saved to disk)."""
    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("redis", "redis-server is not installed (apt install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _redis_answers(f"redis://127.0.0.1:{port}"):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            service_missing("redis", f"a throwaway redis-server on port {port} did not start")
        time.sleep(0.02)
    return proc, port


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """Base URL (no DB number) of a Redis server the tests may flush.

    ``FRAUDOPS_TEST_REDIS_URL`` if set; in CI, in one process, the machine's own Redis on
    127.0.0.1:6379; otherwise a throwaway ``redis-server`` started for the session (for each
    test worker, as `make test` runs them), so that a user's own Redis is never touched and
    two workers never flush each other's DBs."""
    url = os.environ.get("FRAUDOPS_TEST_REDIS_URL")
    if url is not None and WORKERS > 1:
        pytest.fail(
            "FRAUDOPS_TEST_REDIS_URL names one server for several test workers, which would "
            "flush each other's DBs: run the tests in one process (make test TEST_WORKERS=1)",
            pytrace=False,
        )
    if url is None and IN_CI and WORKERS == 1 and _redis_answers("redis://127.0.0.1:6379"):
        url = "redis://127.0.0.1:6379"
    if url is not None:
        if not _redis_answers(url):
            service_missing("redis", f"nothing answers at {url}")
        yield url
        return
    proc, port = start_redis_server()
    try:
        yield f"redis://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """A Redis DB of our own (DB 13), flushed before and after the test."""
    import redis

    url = f"{redis_server.rstrip('/')}/13"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


# --- PostgreSQL ---------------------------------------------------------------------------
CI_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NO_POSTGRES = (
    "set FRAUDOPS_TEST_DATABASE_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test) "
    "to a server where the tests may create and drop databases; outside CI they never use "
    "one you did not name"
)


def postgres_test_url(environ: dict[str, str] | os._Environ[str]) -> str | None:
    """The PostgreSQL server the tests may use: ``FRAUDOPS_TEST_DATABASE_URL`` (or its older
    name ``FRAUDOPS_TEST_POSTGRES_URL``); with ``CI=true`` the machine's 127.0.0.1:5432;
    otherwise none, so that a user's own server is never touched."""
    url = environ.get("FRAUDOPS_TEST_DATABASE_URL") or environ.get("FRAUDOPS_TEST_POSTGRES_URL")
    if url is None and environ.get("CI", "").lower() in {"1", "true", "yes"}:
        url = CI_POSTGRES_URL
    if url is not None and url.startswith("postgresql://"):  # the driver the project uses
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return url


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """A PostgreSQL server where each test creates a database of its own and drops it."""
    import sqlalchemy as sa

    url = postgres_test_url(os.environ)
    if url is None:
        service_missing("postgresql", NO_POSTGRES)
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 2})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except sa.exc.OperationalError as exc:
        service_missing("postgresql", f"cannot connect to {url}: {str(exc).splitlines()[0]}")
    return url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"fraudops_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = sa.engine.make_url(postgres_server)
    yield base.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# --- Redis Cluster --------------------------------------------------------------------------
@dataclass
class RedisClusterNodes:
    """A throwaway 3-master Redis Cluster: ``url`` names one node; ``procs`` by port."""

    url: str
    ports: list[int]
    procs: dict[int, subprocess.Popen[bytes]]
    directory: Path

    def kill(self, port: int) -> None:
        self.procs[port].kill()
        self.procs[port].wait()

    def restart(self, port: int) -> None:
        self.procs[port] = _cluster_node(port, self.directory)


def _cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus ports (port + 10000) are free too."""
    import random

    def free(port: int) -> bool:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20_000, 29_999)
        if port not in ports and free(port) and free(port + 10_000):
            ports.append(port)
    return ports


def _cluster_node(port: int, directory: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary is not None
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"nodes-{port}.conf",
            "--cluster-node-timeout",
            "1000",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not _redis_answers(f"redis://127.0.0.1:{port}"):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            service_missing("redis-cluster", f"a cluster node on port {port} did not start")
        time.sleep(0.02)
    return proc


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """A real 3-master Redis Cluster started from ``redis-server`` on spare ports (and
    ``redis-cli --cluster create``), removed after the session."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        service_missing(
            "redis-cluster", "redis-server and redis-cli are needed (apt install redis)"
        )
    directory = tmp_path_factory.mktemp("redis-cluster")
    ports = _cluster_ports(3)
    procs = {port: _cluster_node(port, directory) for port in ports}
    nodes = RedisClusterNodes(f"redis://127.0.0.1:{ports[0]}", ports, procs, directory)
    try:
        created = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            service_missing("redis-cluster", f"redis-cli --cluster create failed: {created.stdout}")
        deadline = time.monotonic() + 30
        while True:  # every node, not the first only: each learns the slots on its own
            infos = [
                subprocess.run(
                    ["redis-cli", "-p", str(port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                ).stdout
                for port in ports
            ]
            if all("cluster_state:ok" in info for info in infos):
                break
            if time.monotonic() > deadline:
                service_missing("redis-cluster", "the cluster did not reach state ok in 30 s")
            time.sleep(0.1)
        yield nodes
    finally:
        for proc in nodes.procs.values():
            stop(proc)
