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
