"""The scoring API fuzzed from its own OpenAPI schema: schemathesis generates valid and
invalid requests for every operation of a real ``bentoml serve`` (trained and promoted
model, Redis online store, PostgreSQL prediction log, API key), and no answer may be a 5xx.

    pytest tests/integration/test_api_fuzz.py -m integration

Bounded: ``MAX_EXAMPLES`` requests per operation and mode (positive: valid by the schema;
negative: violating it), no shrinking (a failure shows its request as a curl command and
the server's traceback). The fuzzing takes seconds; building the stack (simulate, train,
promote, serve) most of the minute or so.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.integration.conftest import Server, bentoml_serve, prepare_trained_environment

pytestmark = [pytest.mark.integration, pytest.mark.slow(25)]
API_KEY = "fuzz-key-not-a-secret"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
REDIS_DB = 15  # this module's own: flushed before and after
MAX_EXAMPLES = 40


@pytest.fixture(scope="module")
def server(tmp_path_factory, redis_server: str, postgres_server: str) -> Iterator[Server]:
    import redis

    db_name = f"fraudops_fuzz_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{db_name}"'))
    redis_url = f"{redis_server.rstrip('/')}/{REDIS_DB}"
    redis.Redis.from_url(redis_url).flushdb()
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    values = {
        "FRAUDOPS_DATA_DIR": str(data_dir),
        "FRAUDOPS_ONLINE_STORE": "redis",
        "FRAUDOPS_REDIS_URL": redis_url,
        "FRAUDOPS_DATABASE_URL": sa.engine.make_url(postgres_server)
        .set(database=db_name)
        .render_as_string(hide_password=False),
        "FRAUDOPS_API_KEY": API_KEY,
        # this server runs two workers, without BentoML's access log
        "FRAUDOPS_WORKERS": "2",
        "FRAUDOPS_ACCESS_LOG": "false",
    }
    try:
        prepare_trained_environment(values)
        with bentoml_serve(values, data_dir.parent / "serve.log") as running:
            yield running
    finally:
        redis.Redis.from_url(redis_url).flushdb()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def api_schema(server: Server) -> schemathesis.BaseSchema:
    """The schema BentoML serves for the scorer, requests going to the same server."""
    schema = schemathesis.openapi.from_url(f"{server.url}/docs.json", timeout=30)
    schema.config.update(base_url=server.url)
    return schema


# Hypothesis directly on each operation's strategy: schemathesis' own pytest integration
# (schemathesis.pytest.from_fixture + @schema.parametrize) fails under pytest 9.2 with
# "'Function' object has no attribute '_nodeid'" (schemathesis 4.32).
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_no_request_gets_a_server_error(
    api_schema: schemathesis.BaseSchema, server: Server, mode: GenerationMode
) -> None:
    # /readyz answers 503 by design while the batch features are stale, as they are here
    # (the stack's history ended months ago): its own tests are in test_service.py
    operations = [result.ok() for result in api_schema.get_all_operations()]
    operations = [op for op in operations if op.path != "/readyz"]
    assert {op.path for op in operations} >= {"/score", "/score_batch", "/admin/status"}
    failures: dict[str, str] = {}
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,  # milliseconds per request, but the first ones warm up caches
            database=None,  # no .hypothesis directory in the working tree
            phases=[Phase.explicit, Phase.generate],  # a failure reports its curl command
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=AUTH, checks=[not_a_server_error], timeout=30)

        try:
            fuzz()
        except Unsatisfiable:  # no invalid input exists (an operation without parameters)
            assert mode == GenerationMode.NEGATIVE, operation.label
        except (AssertionError, BaseExceptionGroup) as exc:  # schemathesis' check failures
            failures[operation.label] = str(exc)
    assert not failures, "\n\n".join(
        [*(f"{label}: {error}" for label, error in failures.items()), server_tracebacks(server)]
    )


def server_tracebacks(server: Server, last: int = 3) -> str:
    """The server's last tracebacks of errors (BentoML also logs one for every 400): what
    a reader of a 5xx failure needs next."""
    lines = server.log_path.read_text(errors="replace").splitlines()
    blocks = []
    for start in (i for i, line in enumerate(lines) if line.startswith("Traceback")):
        end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), start)
        if "ValidationError" not in lines[end]:
            blocks.append("\n".join(lines[start : end + 1]))
    return "--- bentoml serve, last tracebacks ---\n" + "\n\n".join(blocks[-last:])


@pytest.mark.parametrize(
    "change",
    [
        {"timestamp": "0001-01-01T00:00:00Z"},  # outside pandas' nanosecond range
        {"timestamp": "9999-12-31T23:59:59.999999Z"},
        {"timestamp": "2026-05-11T10:00:00+14:00"},
        {"amount": 1e308},
        {"amount": 5e-324},
        {"customer_id": "ç\u0000🙂" * 40, "terminal_id": "\u202e" * 128},
    ],
    ids=["year-1", "year-9999", "utc+14", "huge-amount", "tiny-amount", "odd-ids"],
)
def test_extreme_valid_transactions_are_not_server_errors(server: Server, change: dict) -> None:
    """Edge values the schema allows, which random generation reaches only by luck."""
    import httpx

    tx = {
        "transaction_id": f"edge-{uuid.uuid4().hex[:8]}",
        "timestamp": "2026-05-11T10:00:00Z",
        "customer_id": "c_00001",
        "terminal_id": "t_00002",
        "amount": 25.0,
        **change,
    }
    for path, body in (("/score", {"transaction": tx}), ("/score_batch", {"transactions": [tx]})):
        response = httpx.post(server.url + path, json=body, headers=AUTH, timeout=30)
        assert response.status_code < 500, f"{path}: {response.text}\n{server_tracebacks(server)}"


def test_the_access_log_can_be_turned_off(server: Server) -> None:
    """FRAUDOPS_ACCESS_LOG=false (this module's server): no line per request, errors still
    logged, request metrics still counted."""
    import httpx

    tx = {
        "transaction_id": "quiet-1",
        "timestamp": "2026-05-11T10:00:00Z",
        "customer_id": "c_00001",
        "terminal_id": "t_00002",
        "amount": 25.0,
    }
    assert httpx.post(server.url + "/score", json={"transaction": tx}, headers=AUTH).is_success
    bad = {"transaction": {**tx, "amount": "quiet-bad-amount"}}
    assert httpx.post(server.url + "/score", json=bad, headers=AUTH).status_code == 400
    log = server.log(tail=None)
    assert "path=/score," not in log and "Service fraud_scorer initialized" in log
    assert "quiet-bad-amount" in log  # BentoML's own error log for the 400
    metrics = httpx.get(server.url + "/metrics").text
    assert 'endpoint="/score"' in metrics


def test_each_worker_holds_a_spool_of_its_own(server: Server) -> None:
    """FRAUDOPS_WORKERS=2 (this module's server): two workers, each holding the lock of its
    own prediction spool while it runs."""
    import fcntl

    spool_dir = server.log_path.parent / "data" / "spool"
    locks = sorted(p.name for p in spool_dir.glob("*.lock"))
    assert locks == ["predictions-1.jsonl.lock", "predictions.jsonl.lock"]
    for name in locks:
        with (spool_dir / name).open("ab") as lock, pytest.raises(BlockingIOError):
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
