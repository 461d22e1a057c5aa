"""A/B routing: which customers the @challenger decides for.

    FRAUDOPS_CHALLENGER_SHARE=0.05 bentoml serve     # the challenger decides for 5 % of customers

A customer is in the challenger's share when the first 8 bytes of the BLAKE2b digest of
its ``customer_id``, read as a fraction of 2**64, fall below the share. The digest is the
same in every process, worker, replica and Python version (Python's ``hash`` of a string
is salted per process), so a customer stays with the same model for as long as the share
does not change; raising the share only adds customers, it never moves one back. Pure
functions, no I/O: the scoring core calls them per transaction or per batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from hashlib import blake2b

import numpy as np

_SCALE = float(2**64)


def customer_bucket(customer_id: str) -> float:
    """The customer's fixed position in [0, 1)."""
    digest = blake2b(customer_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def decides_with_challenger(customer_id: str, share: float) -> bool:
    """Whether the challenger decides this customer's transactions at ``share``."""
    if share <= 0.0:  # the common case costs no hashing
        return False
    return share >= 1.0 or customer_bucket(customer_id) < share


def challenger_mask(customer_ids: Iterable[str], share: float) -> np.ndarray:
    """:func:`decides_with_challenger` for a batch's customers, as a boolean array."""
    ids = list(customer_ids)
    if share <= 0.0:
        return np.zeros(len(ids), dtype=bool)
    return np.fromiter((decides_with_challenger(i, share) for i in ids), bool, len(ids))
