"""The tests never touch a service a user runs: which PostgreSQL server they may use."""

from __future__ import annotations

import pytest

from tests.conftest import CI_POSTGRES_URL, postgres_test_url

NAMED = "postgresql+psycopg://me@db.example:5433/scratch"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),  # a user's 127.0.0.1:5432 is left alone: the tests skip, saying why
        ({"CI": "true"}, CI_POSTGRES_URL),
        ({"FRAUDOPS_TEST_DATABASE_URL": NAMED}, NAMED),
        ({"FRAUDOPS_TEST_POSTGRES_URL": NAMED}, NAMED),  # the older name, still honoured
        ({"FRAUDOPS_TEST_DATABASE_URL": NAMED, "CI": "true"}, NAMED),
        ({"FRAUDOPS_TEST_DATABASE_URL": "postgresql://me@h/db"}, "postgresql+psycopg://me@h/db"),
    ],
)
def test_postgres_only_when_named_or_in_ci(environ: dict[str, str], expected: str | None) -> None:
    assert postgres_test_url(environ) == expected
