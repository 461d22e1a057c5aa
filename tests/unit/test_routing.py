"""A/B routing: sticky by customer, the configured share, stable across processes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fraudops.serving.routing import challenger_mask, customer_bucket, decides_with_challenger

CUSTOMERS = [f"c_{i:07d}" for i in range(20_000)]


def test_a_customer_always_gets_the_same_model() -> None:
    first = [decides_with_challenger(c, 0.05) for c in CUSTOMERS]
    again = [decides_with_challenger(c, 0.05) for c in CUSTOMERS]
    assert first == again


@pytest.mark.parametrize("share", [0.01, 0.05, 0.2, 0.5])
def test_the_share_of_customers_matches_the_setting(share: float) -> None:
    chosen = challenger_mask(CUSTOMERS, share).mean()
    # binomial standard error at n = 20,000 is at most 0.0036: four of them
    assert abs(chosen - share) < 4 * np.sqrt(share * (1 - share) / len(CUSTOMERS))


def test_share_zero_and_one_and_growth() -> None:
    assert not challenger_mask(CUSTOMERS, 0.0).any()
    assert challenger_mask(CUSTOMERS, 1.0).all()
    small, large = challenger_mask(CUSTOMERS, 0.05), challenger_mask(CUSTOMERS, 0.10)
    assert (large | small == large).all()  # raising the share never moves a customer back


def test_the_batch_mask_equals_the_single_decision() -> None:
    ids = CUSTOMERS[:500]
    assert challenger_mask(ids, 0.3).tolist() == [decides_with_challenger(c, 0.3) for c in ids]


def test_buckets_are_the_same_in_another_process() -> None:
    """Python's str hash is salted per process; the bucket must not be."""
    code = (
        "from fraudops.serving.routing import customer_bucket; print(repr(customer_bucket('c_42')))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123"},
    )
    assert float(other.stdout) == customer_bucket("c_42")
    assert 0.0 <= customer_bucket("c_42") < 1.0
