"""The request contract: what the API and the stream accept, and the error that names the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fraudops.core.contract import Transaction

GOOD = {
    "transaction_id": "t1",
    "timestamp": "2026-01-05T10:00:00Z",
    "customer_id": "c1",
    "terminal_id": "t9",
    "amount": 12.5,
}


def test_a_good_transaction_is_normalised_to_utc() -> None:
    tx = Transaction.model_validate({**GOOD, "timestamp": "2026-01-05T12:00:00+02:00"})
    assert tx.timestamp.isoformat() == "2026-01-05T10:00:00+00:00"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timestamp", "0001-01-01T00:00:00Z", "between 1970-01-01 and 2100-01-01"),
        ("timestamp", "9999-12-31T00:00:00Z", "between 1970-01-01 and 2100-01-01"),
        ("timestamp", "2026-01-05T10:00:00", "must include a timezone"),
        ("amount", -5, "finite number of 0 or more"),
        ("amount", float("nan"), "finite number of 0 or more"),
        ("amount", "NaN", "a JSON number such as 12.5, not the text 'NaN'"),
        ("amount", "12.50", "a JSON number such as 12.5, not the text '12.50'"),  # as ingest
        ("customer_id", 1.5, "valid string"),
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


def test_integer_ids_are_text_and_a_zero_amount_is_a_transaction() -> None:
    tx = Transaction.model_validate(
        {**GOOD, "transaction_id": 7, "customer_id": 596, "terminal_id": 3156, "amount": 0}
    )
    assert (tx.transaction_id, tx.customer_id, tx.terminal_id) == ("7", "596", "3156")
    assert tx.amount == 0.0 and tx.extra is None


def test_fields_the_contract_does_not_use_are_kept_as_extras() -> None:
    tx = Transaction.model_validate_json(
        '{"transaction_id": "t1", "timestamp": "2026-01-05T10:00:00Z", "customer_id": "c1", '
        '"terminal_id": "t9", "amount": 12.5, "merchant": "ACME", "mcc": 5411}'
    )
    assert tx.extra == {"merchant": "ACME", "mcc": 5411}
    schema = Transaction.model_json_schema()
    assert schema["additionalProperties"] is True
    assert "kept with the logged prediction" in schema["description"]
