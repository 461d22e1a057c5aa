"""Concurrent /score requests are scored together, each gets its own result, and a
transaction that breaks scoring fails only its own request (a fake scorer: the real one
is exercised through ``bentoml serve`` in tests/integration/test_service.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from fraudops.contract import Transaction
from fraudops.scoring import Coalescer, ScoreResult


def tx(i: int) -> Transaction:
    return Transaction(transaction_id=f"t{i}", timestamp=datetime(2026, 1, 5, tzinfo=UTC),
                       customer_id=f"c{i % 3}", terminal_id="t9", amount=10.0 + i)  # fmt: skip


class FakeCore:
    def __init__(self, broken: set[str] = frozenset()):  # type: ignore[assignment]
        self.calls: list[list[str]] = []
        self.broken = broken

    def score(self, transactions: list[Transaction]) -> list[ScoreResult]:
        ids = [t.transaction_id for t in transactions]
        self.calls.append(ids)
        if self.broken & set(ids):
            raise ValueError(f"cannot score {sorted(self.broken & set(ids))}")
        return [ScoreResult(t.transaction_id, t.amount / 100, "approve", [], "7", False, 1.0)
                for t in transactions]  # fmt: skip


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
        return await asyncio.gather(*(coalescer.score(tx(i)) for i in range(5)),
                                    return_exceptions=True)  # fmt: skip

    results = asyncio.run(main())
    assert isinstance(results[3], ValueError) and "t3" in str(results[3])
    assert [r.transaction_id for i, r in enumerate(results) if i != 3] == ["t0", "t1", "t2", "t4"]
    assert core.calls[0] == [f"t{i}" for i in range(5)] and len(core.calls) == 6
    with pytest.raises(ValueError):
        asyncio.run(coalescer.score(tx(3)))
