"""The data contract, defined once: transaction columns, entity keys, labels, scenarios.

Everything that reads or writes transactions (simulator, ingest, feature build, training,
the scoring API, the stream consumer, monitoring) takes its column names and rules from
here. Entity keys are strings everywhere.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

# --- column names ---------------------------------------------------------------------
TRANSACTION_ID = "transaction_id"
TIMESTAMP = "timestamp"
CUSTOMER_ID = "customer_id"
TERMINAL_ID = "terminal_id"
AMOUNT = "amount"
IS_FRAUD = "is_fraud"
LABEL_TIMESTAMP = "label_timestamp"
FRAUD_SCENARIO = "fraud_scenario"
# The order in which the scorer committed a transaction to its customer's real-time state
# (per customer, increasing): ties of equal timestamps are ordered by it, online and
# offline. Null for history ingested in bulk.
COMMIT_SEQ = "commit_seq"

ENTITY_KEYS = (CUSTOMER_ID, TERMINAL_ID)
TRANSACTION_COLUMNS = (TRANSACTION_ID, TIMESTAMP, CUSTOMER_ID, TERMINAL_ID, AMOUNT)
LABEL_COLUMNS = (IS_FRAUD, LABEL_TIMESTAMP)
# Columns a labels file (chargebacks) carries.
LABEL_FILE_COLUMNS = (TRANSACTION_ID, IS_FRAUD, LABEL_TIMESTAMP)

DEFAULT_LABEL_DELAY = timedelta(days=7)


class FraudScenario(IntEnum):
    """Why the simulator labelled a transaction fraudulent (0: legitimate)."""

    LEGITIMATE = 0
    HIGH_AMOUNT = 1  # Handbook scenario 1: amount > 220
    COMPROMISED_TERMINAL = 2  # Handbook scenario 2
    COMPROMISED_CUSTOMER = 3  # Handbook scenario 3
    CARD_TESTING = 4  # tiny amounts on new terminals, then a large one
    ACCOUNT_TAKEOVER = 5  # far terminals, unusual hours, high amounts


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # JSON true/false: pydantic would read it as 1.0 or 0.0
        raise ValueError("must be a number, not true or false")
    return value


def _text_or_datetime(value: Any) -> Any:
    if isinstance(value, str):  # parsed here for the message: pydantic's says "too short"
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"must be an ISO 8601 timestamp, for example 2026-01-05T10:00:00Z, not {value!r}"
            ) from None
    if not isinstance(value, datetime):  # epoch numbers: seconds or milliseconds?
        raise ValueError("must be an ISO 8601 string, for example 2026-01-05T10:00:00Z")
    return value


def _number_not_text(value: Any) -> Any:
    if isinstance(value, str):  # as strict as ingest: "12.50" is a client's bug, not a number
        raise ValueError(f"must be a JSON number such as 12.5, not the text {value!r}")
    return _not_bool(value)


def _finite_non_negative(value: float) -> float:
    if not math.isfinite(value) or value < 0:  # 0: a card verification, scored as any other
        raise ValueError("must be a finite number of 0 or more")
    return value


def _id_text(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):  # integer ids, as ingest
        return str(value)
    return value


# Transaction times the platform accepts: features count microseconds since the epoch.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("must include a timezone, for example 2026-01-05T10:00:00Z")
    value = value.astimezone(UTC)
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d} (UTC)")
    return value


Identifier = Annotated[
    str,
    Field(min_length=1, max_length=128),
    BeforeValidator(_id_text),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "minLength": 1, "maxLength": 128}, {"type": "integer"}],
            "description": "Text; an integer is taken as its text.",
        }
    ),
]


class Transaction(BaseModel):
    """One transaction as the scoring API and the stream receive it.

    Integer ids are taken as their text. Fields not listed here are accepted, ignored for
    scoring and kept with the logged prediction (its ``extra`` column)."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    transaction_id: Identifier
    timestamp: Annotated[datetime, BeforeValidator(_text_or_datetime), AfterValidator(_utc)]
    customer_id: Identifier
    terminal_id: Identifier
    amount: Annotated[
        float,
        BeforeValidator(_number_not_text),
        AfterValidator(_finite_non_negative),
        Field(description='A JSON number, 0 or more (text such as "12.50" is refused).'),
    ]

    @property
    def extra(self) -> dict[str, Any] | None:
        """The fields the contract does not use, as received; None when there are none."""
        return self.__pydantic_extra__ or None


# --- a transaction as a stream event --------------------------------------------------------
TRANSACTION_FIELD = "transaction"  # the one field of an event: the transaction as JSON


def event_fields(transaction: Mapping[str, Any]) -> dict[str, str]:
    """The entry fields of one transaction event (what producers XADD)."""
    return {TRANSACTION_FIELD: json.dumps(transaction, separators=(",", ":"), default=str)}
