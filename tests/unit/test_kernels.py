"""The compiled kernels load where numba cannot cache them (their maths is tested against
the numpy functions in test_features and test_state_codec)."""

from __future__ import annotations

import importlib
from unittest import mock

import numpy as np


def test_kernels_compile_without_a_writable_cache_directory() -> None:
    """A read-only file system without a writable home: numba finds no cache directory
    (it raises at decoration then), so the kernels are compiled at each start instead."""
    import numba.core.caching as caching

    from fraudops import kernels

    try:
        with mock.patch.object(caching.CacheImpl, "_locator_classes", []):
            importlib.reload(kernels)
            assert type(kernels.advance_groups._cache).__name__ == "NullCache"
            buffer, ends = kernels.encode_int64_lists(np.array([0, 1]), np.array([5]), 0x72, 0x0A)
            assert buffer.tobytes() == b"\x72\x03\x0a\x01\x05"
    finally:
        importlib.reload(kernels)  # cached again, for the other tests


def test_inconsistent_inputs_raise_instead_of_reaching_compiled_code() -> None:
    """Compiled code does not check its indexing: the wrapper refuses what would overrun."""
    import pytest

    from fraudops import features as f
    from fraudops import kernels

    one = np.zeros(1, np.int64)

    def run(bounds=(0, 0), group=(0,), history=0):  # type: ignore[no-untyped-def]
        times = np.zeros(history, np.int64)
        ids = np.zeros((history + 1, 1), np.int64)
        return kernels.advance(np.array(bounds), times, np.zeros(history),
                               f.RunningStats.empty(), one, np.array(group), one, np.ones(1),
                               ids)  # fmt: skip

    assert run()[0].shape == (1, len(f.CUSTOMER_ACTIVITY_FEATURES))
    for bad in ({"group": (1,)}, {"group": (-1,)}, {"bounds": (0, 2)}, {"bounds": (0, 0, 0)},
                {"history": 3}):  # fmt: skip
        with pytest.raises(ValueError, match="inconsistent"):
            run(**bad)
