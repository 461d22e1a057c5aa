"""The request contract: what the API and the stream accept, and the error that names the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fraudops.contract import Transaction

GOOD = {"transaction_id": "t1", "timestamp": "2026-01-05T10:00:00Z", "customer_id": "c1",
        "terminal_id": "t9", "amount": 12.5}  # fmt: skip


def test_a_good_transaction_is_normalised_to_utc() -> None:
    tx = Transaction.model_validate({**GOOD, "timestamp": "2026-01-05T12:00:00+02:00"})
    assert tx.timestamp.isoformat() == "2026-01-05T10:00:00+00:00"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timestamp", "0001-01-01T00:00:00Z", "between 1970-01-01 and 2100-01-01"),
        ("timestamp", "9999-12-31T00:00:00Z", "between 1970-01-01 and 2100-01-01"),
        ("timestamp", "2026-01-05T10:00:00", "must include a timezone"),
        ("amount", -5, "finite number greater than 0"),
        ("amount", "NaN", "finite number greater than 0"),
        ("customer_id", "", "at least 1 character"),
        ("amount", True, "a number, not true or false"),  # pydantic would take 1.0
        ("timestamp", 1767607200, "an ISO 8601 string"),  # seconds? milliseconds?
        ("timestamp", False, "an ISO 8601 string"),
        ("timestamp", "yesterday", "an ISO 8601 timestamp, for example 2026-01-05T10:00:00Z"),
        ("timestamp", "2026-13-05T10:00:00Z", "an ISO 8601 timestamp"),  # month 13
    ],
)
def test_bad_values_name_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Transaction.model_validate({**GOOD, field: value})
    (error,) = caught.value.errors()
    assert error["loc"] == (field,)
    assert message in error["msg"]
