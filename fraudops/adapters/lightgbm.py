"""LightGBM's single-row prediction through its C API (``LGBM_BoosterPredictForMatSingleRowFast``),
which lightgbm's Python package does not expose: the scorer's common case, one row."""

from __future__ import annotations

import ctypes
import threading
import weakref
from collections.abc import Callable

import lightgbm as lgb
import numpy as np


class SingleRow:
    """LightGBM's single-row fast path for one booster and prediction type: a FastConfig
    per thread (LightGBM's are not thread-safe), all freed when this object goes away, so a
    reloaded model leaves nothing behind. ``predict_type`` 1: raw score, 2: leaf index per
    tree, 3: SHAP contributions.

    LightGBM's C API through its private ``lightgbm.basic._LIB`` and ``Booster._handle``,
    written against lightgbm 4.7.0. Measured with ``bench/prototypes/private_paths_ab.py``
    (``ScoringCore.score`` in process, one transaction per call, CPU per transaction,
    alternated rounds): 1.39 against 1.74 ms with ``Booster.predict`` (20 % saved, 15
    rounds; 10 % in a 9-round run on a busier machine); per call 26 against 214 µs.
    ``tests/model/test_behaviour.py`` pins it to ``Booster.predict``."""

    def __init__(self, booster: lgb.Booster, predict_type: int, outputs: int):
        self.booster = booster
        self.predict_type = predict_type
        self.outputs = outputs
        self._local = threading.local()
        self._handles: list[ctypes.c_void_p] = []
        self._lock = threading.Lock()
        weakref.finalize(self, _free_fast_configs, self._handles, booster)

    def _call(self, ncol: int) -> Callable[[np.ndarray], np.ndarray]:
        """This thread's predictor: a FastConfig and buffers whose addresses are taken once
        (ctypes conversions cost more than LightGBM's prediction)."""
        from lightgbm.basic import _LIB, _c_str, _safe_call

        handle = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                self.booster._handle,
                ctypes.c_int(self.predict_type),
                ctypes.c_int(0),
                ctypes.c_int(-1),
                ctypes.c_int(1),
                ctypes.c_int32(ncol),
                _c_str("num_threads=1"),
                ctypes.byref(handle),
            )
        )
        with self._lock:
            self._handles.append(handle)
        row = np.zeros(ncol, dtype=np.float64)
        out = np.zeros(self.outputs, dtype=np.float64)
        length = ctypes.c_int64(0)
        args = (
            handle,
            row.ctypes.data_as(ctypes.c_void_p),
            ctypes.byref(length),
            out.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
        )
        predict = _LIB.LGBM_BoosterPredictForMatSingleRowFast

        def call(features: np.ndarray) -> np.ndarray:
            row[:] = features
            if predict(*args) != 0:
                _safe_call(-1)  # raises LightGBMError with LightGBM's last error
            return out.copy()

        self._local.call = call
        return call

    def __call__(self, row: np.ndarray) -> np.ndarray:
        """Outputs for one row (a 1-D float64 array in feature order)."""
        call = getattr(self._local, "call", None) or self._call(len(row))
        return call(row)


def _free_fast_configs(handles: list[ctypes.c_void_p], booster: lgb.Booster) -> None:
    from lightgbm.basic import _LIB

    for handle in handles:
        _LIB.LGBM_FastConfigFree(handle)
    handles.clear()
