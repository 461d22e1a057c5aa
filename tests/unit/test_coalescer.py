"""Concurrent /score requests are scored together, each gets its own result, and a
transaction that breaks scoring fails only its own request (a fake scorer: the real one
is exercised through ``bentoml serve`` in tests/integration/test_service.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from fraudops.core.contract import Transaction
from fraudops.serving.scoring import (
    Coalescer,
    IdempotencyConflict,
    ScoreResult,
    StillScoring,
    score_until_done,
)


def tx(i: int) -> Transaction:
    return Transaction(
        transaction_id=f"t{i}",
        timestamp=datetime(2026, 1, 5, tzinfo=UTC),
        customer_id=f"c{i % 3}",
        terminal_id="t9",
        amount=10.0 + i,
    )


class FakeCore:
    def __init__(self, broken: set[str] = frozenset()):  # type: ignore[assignment]
        self.calls: list[list[str]] = []
        self.broken = broken

    def score(self, transactions: list[Transaction]) -> list[ScoreResult]:
        ids = [t.transaction_id for t in transactions]
        self.calls.append(ids)
        if self.broken & set(ids):
            raise ValueError(f"cannot score {sorted(self.broken & set(ids))}")
        return [
            ScoreResult(t.transaction_id, t.amount / 100, "approve", [], "7", False, 1.0)
            for t in transactions
        ]


def test_requests_that_arrive_together_are_scored_together() -> None:
    core = FakeCore()
    coalescer = Coalescer(core.score)

    async def main() -> list[ScoreResult]:
        return await asyncio.gather(*(coalescer.score(tx(i)) for i in range(10)))

    results = asyncio.run(main())
    assert [r.transaction_id for r in results] == [f"t{i}" for i in range(10)]
    assert [r.fraud_probability for r in results] == [(10.0 + i) / 100 for i in range(10)]
    assert core.calls == [[f"t{i}" for i in range(10)]]


def test_a_request_alone_is_scored_alone() -> None:
    core = FakeCore()
    coalescer = Coalescer(core.score)

    async def main() -> None:
        for i in range(3):  # one after the other
            assert (await coalescer.score(tx(i))).transaction_id == f"t{i}"

    asyncio.run(main())
    assert core.calls == [["t0"], ["t1"], ["t2"]]


def test_a_transaction_that_breaks_scoring_fails_only_its_request() -> None:
    core = FakeCore(broken={"t3"})
    coalescer = Coalescer(core.score)

    async def main() -> list[ScoreResult | BaseException]:
        return await asyncio.gather(
            *(coalescer.score(tx(i)) for i in range(5)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert isinstance(results[3], ValueError) and "t3" in str(results[3])
    assert [r.transaction_id for i, r in enumerate(results) if i != 3] == ["t0", "t1", "t2", "t4"]
    assert core.calls[0] == [f"t{i}" for i in range(5)] and len(core.calls) == 6
    with pytest.raises(ValueError):
        asyncio.run(coalescer.score(tx(3)))


def test_outcomes_that_are_errors_fail_only_their_own_request() -> None:
    """A conflicting id and a duplicate still in flight come back as outcomes of their own
    (the others in the batch are scored); score_until_done asks again for the latter."""
    attempts: dict[str, int] = {}

    def score(transactions: list[Transaction]) -> list:
        out = []
        for t in transactions:
            attempts[t.transaction_id] = attempts.get(t.transaction_id, 0) + 1
            if t.transaction_id == "t1":
                out.append(IdempotencyConflict("t1", ["amount"]))
            elif t.transaction_id == "t2" and attempts["t2"] < 3:
                out.append(StillScoring("t2"))
            else:
                out.append(ScoreResult(t.transaction_id, 0.1, "approve", [], "7", False, 1.0))
        return out

    coalescer = Coalescer(score)

    async def main() -> list[ScoreResult | BaseException]:
        return await asyncio.gather(
            *(score_until_done(lambda i=i: coalescer.score(tx(i))) for i in range(4)),
            return_exceptions=True,
        )

    results = asyncio.run(main())
    assert isinstance(results[1], IdempotencyConflict) and results[1].fields == ["amount"]
    assert [r.transaction_id for r in (results[0], results[2], results[3])] == ["t0", "t2", "t3"]
    assert attempts == {"t0": 1, "t1": 1, "t2": 3, "t3": 1}


async def arrive_after(turns: int, coalescer: Coalescer, transaction: Transaction) -> ScoreResult:
    for _ in range(turns):  # the HTTP stack's awaits before a request reaches the scorer
        await asyncio.sleep(0)
    return await coalescer.score(transaction)


def test_requests_in_flight_a_few_turns_apart_join_one_batch() -> None:
    core = FakeCore()
    coalescer = Coalescer(core.score)

    async def main() -> list[ScoreResult]:
        return await asyncio.gather(*(arrive_after(i % 4, coalescer, tx(i)) for i in range(12)))

    results = asyncio.run(main())
    assert [r.transaction_id for r in results] == [f"t{i}" for i in range(12)]
    assert len(core.calls) == 1 and sorted(core.calls[0]) == sorted(f"t{i}" for i in range(12))


def test_a_batch_waits_at_most_max_turns_and_max_batch() -> None:
    core = FakeCore()

    async def main(coalescer: Coalescer) -> None:  # two new requests every turn, 5 turns
        await asyncio.gather(*(arrive_after(i // 2, coalescer, tx(i)) for i in range(10)))

    asyncio.run(main(Coalescer(core.score, max_turns=3, max_batch=1000)))
    # t0 and t1 on the first turn, then two more in each of the 3 turns the batch waited
    assert core.calls == [[f"t{i}" for i in range(8)], ["t8", "t9"]]

    core.calls.clear()
    asyncio.run(main(Coalescer(core.score, max_turns=100, max_batch=5)))
    # stops waiting once 5 or more wait
    assert core.calls == [[f"t{i}" for i in range(6)], ["t6", "t7", "t8", "t9"]]
