"""The fraud model: a LightGBM booster, its probability calibration, the ordered feature
list and the decision thresholds, saved and loaded together without pickle.

On disk (and inside the MLflow model, see :mod:`fraudops.model.registry`) a model is a directory::

    booster.txt       LightGBM's own text format
    calibrator.json   isotonic calibration as interpolation knots
    metadata.json     feature service, ordered features, thresholds, defaults
"""

from __future__ import annotations

import ctypes
import functools
import json
import threading
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import lightgbm as lgb
import numpy as np

Decision = Literal["approve", "review", "block"]
DECISIONS: tuple[Decision, ...] = ("approve", "review", "block")


@dataclass(frozen=True)
class IsotonicCalibrator:
    """Monotone map from the booster's raw score to a probability: linear interpolation
    between knots, clipped at both ends."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    @classmethod
    def fit(cls, raw: np.ndarray, labels: np.ndarray) -> IsotonicCalibrator:
        """Centered isotonic regression: each flat step of the isotonic fit becomes one knot
        at its centre, and scores between knots are interpolated. Plain isotonic steps tie
        many scores, which throws away the booster's ranking (measured on Handbook data:
        ROC AUC 0.924 -> 0.927 and average precision 0.740 -> 0.765 with centred knots)."""
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, labels)
        x, y = np.asarray(iso.X_thresholds_), np.asarray(iso.y_thresholds_)
        starts = np.flatnonzero(np.r_[True, y[1:] != y[:-1]])
        centres = np.add.reduceat(x, starts) / np.diff(np.r_[starts, len(x)])
        return cls(tuple(map(float, centres)), tuple(map(float, y[starts])))

    @functools.cached_property
    def _knots(self) -> tuple[np.ndarray, np.ndarray]:  # as arrays once, not per call
        return np.asarray(self.x, dtype=np.float64), np.asarray(self.y, dtype=np.float64)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        x, y = self._knots
        return np.interp(raw, x, y)


PARALLEL_ROWS = 200  # rows from which a batch prediction uses two threads


def decide(probability: np.ndarray, review: float, block: float) -> np.ndarray:
    """The decision rule: block from ``block`` up, review from ``review`` up, else approve."""
    if len(probability) == 1:  # the scorer's common case, without numpy's array passes
        p = probability[0]
        return np.array(["block" if p >= block else "review" if p >= review else "approve"])
    return np.where(
        probability >= block, "block", np.where(probability >= review, "review", "approve")
    )


def apply_stale_policy(decisions: np.ndarray, stale: np.ndarray, policy: str) -> np.ndarray:
    """Decisions for transactions scored on stale features, by ``FRAUDOPS_DEGRADED_POLICY``:
    ``score`` keeps the model's decision (scored on the last known values), ``review``
    turns approvals into reviews (a block stays a block)."""
    if policy == "review":
        return np.where(np.asarray(stale, bool) & (decisions == "approve"), "review", decisions)
    if policy == "score":
        return decisions
    raise ValueError(f"unknown degraded policy {policy!r}: expected 'score' or 'review'")


@dataclass(frozen=True)
class ModelMetadata:
    """What a model version says about itself (``metadata.json`` in its artifact): the one
    record of its feature service, its inputs in order and its thresholds, which the
    scorer, batch scoring and monitoring all read."""

    feature_service: str
    feature_names: list[str]
    review_threshold: float
    block_threshold: float
    extra: dict = field(default_factory=dict)

    def thresholds(
        self, review: float | None = None, block: float | None = None
    ) -> tuple[float, float]:
        """The thresholds in force: a threshold set in settings
        (``FRAUDOPS_REVIEW_THRESHOLD``, ``FRAUDOPS_BLOCK_THRESHOLD``) wins over the model's."""
        return (
            self.review_threshold if review is None else review,
            self.block_threshold if block is None else block,
        )

    @classmethod
    def read(cls, directory: Path) -> ModelMetadata:
        return cls(**json.loads((Path(directory) / "metadata.json").read_text()))


@dataclass
class FraudModel:
    booster: lgb.Booster
    calibrator: IsotonicCalibrator
    metadata: ModelMetadata

    @property
    def feature_names(self) -> list[str]:
        return self.metadata.feature_names

    def __post_init__(self) -> None:
        trees = self.booster.num_trees()
        self._raw_one = _SingleRow(self.booster, 1, 1)
        self._leaves_one = _SingleRow(self.booster, 2, trees)
        self._attribution: PathAttribution | None = None

    def raw_score(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float64)
        if len(features) == 1:  # the scorer's common case: LightGBM's single-row path
            return self._raw_one(features[0])
        if len(features) < PARALLEL_ROWS:  # coalesced requests
            return np.asarray(self.booster.predict(features, raw_score=True, num_threads=1))
        # Batches (the stream's, /score_batch) on two threads: on real features the trees
        # cost ~20 µs per row on one (measured), the largest single cost of a batch.
        return np.asarray(self.booster.predict(features, raw_score=True, num_threads=2))

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Calibrated fraud probability for rows of features in ``feature_names`` order."""
        return self.calibrator(self.raw_score(features))

    def decide(
        self, probability: np.ndarray, review: float | None = None, block: float | None = None
    ) -> np.ndarray:
        """:func:`decide` with the thresholds in force (see :meth:`ModelMetadata.thresholds`)."""
        return decide(probability, *self.metadata.thresholds(review, block))

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """Per-feature contributions to the raw score along the rows' decision paths (see
        :class:`PathAttribution`): rows x (features + 1), the last column the bias, each
        row summing to the raw score. What the scorer's reasons are made of."""
        features = np.asarray(features, dtype=np.float64)
        attribution = self.prepare_explanations()
        if len(features) == 1:
            leaves = self._leaves_one(features[0])
        else:
            leaves = np.asarray(self.booster.predict(features, pred_leaf=True, num_threads=1))
        contributions = attribution(leaves)
        bias = np.full((len(contributions), 1), attribution.bias)
        return np.hstack([contributions, bias])

    def prepare_explanations(self) -> PathAttribution:
        """The per-leaf contribution table, built on first use (33 ms for 96 trees here):
        the scorer builds it when it loads a model, not on its first flagged request."""
        if self._attribution is None:
            self._attribution = PathAttribution(self.booster)
        return self._attribution

    def shap_values(self, features: np.ndarray) -> np.ndarray:
        """Exact SHAP values (LightGBM's TreeSHAP, ``pred_contrib``): rows x (features + 1),
        the last column the expected value. For offline analysis: 25-150x a prediction."""
        features = np.asarray(features, dtype=np.float64)
        return np.asarray(self.booster.predict(features, pred_contrib=True, num_threads=1))

    # --- persistence -------------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(directory / "booster.txt"))
        (directory / "calibrator.json").write_text(json.dumps(asdict(self.calibrator)))
        (directory / "metadata.json").write_text(json.dumps(asdict(self.metadata), indent=2))
        return directory

    @classmethod
    def load(cls, directory: Path) -> FraudModel:
        directory = Path(directory)
        metadata = ModelMetadata.read(directory)
        calibration = json.loads((directory / "calibrator.json").read_text())
        booster = lgb.Booster(model_file=str(directory / "booster.txt"))
        if booster.feature_name() != metadata.feature_names:
            raise ValueError(
                f"{directory}: the booster's features {booster.feature_name()} are not the "
                f"metadata's {metadata.feature_names}"
            )
        return cls(
            booster, IsotonicCalibrator(tuple(calibration["x"]), tuple(calibration["y"])), metadata
        )


class _SingleRow:
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


class PathAttribution:
    """Per-feature contributions along each row's decision paths (Saabas; the method of
    ``treeinterpreter``), precomputed per tree and leaf.

    At each split on a row's path, the change in the node's expected output (LightGBM's
    ``internal_value``) is credited to the split's feature; summed over the path and the
    trees, plus the roots' values (the bias), this is exactly the raw score. Since a path
    is fixed by its leaf, the contributions of every leaf are a table, and explaining a row
    costs one leaf-index prediction and a gather: about as much as a prediction, where
    LightGBM's exact SHAP values (``pred_contrib``) cost 25-150x more. SHAP spreads credit
    over all orderings of the features and this does not, so the two can rank features
    differently; tests/model measures how often their top reason agrees.
    """

    def __init__(self, booster: lgb.Booster):
        dump = booster.dump_model()
        n_features = len(dump["feature_names"])
        trees = dump["tree_info"]
        n_leaves = max(int(tree.get("num_leaves", 1)) for tree in trees) if trees else 1
        self.table = np.zeros((len(trees), n_leaves, n_features))
        self.bias = 0.0
        for t, tree in enumerate(trees):
            root = tree["tree_structure"]
            self.bias += float(root.get("internal_value", root.get("leaf_value", 0.0)))
            self._fill(self.table[t], root, np.zeros(n_features))
        self._trees = np.arange(len(trees))

    @staticmethod
    def _fill(leaves: np.ndarray, root: dict, start: np.ndarray) -> None:
        stack = [(root, start)]
        while stack:
            node, path = stack.pop()
            if "leaf_index" in node or "split_feature" not in node:
                leaves[int(node.get("leaf_index", 0))] = path
                continue
            value = float(node["internal_value"])
            for side in ("left_child", "right_child"):
                child = node[side]
                child_value = float(child.get("internal_value", child.get("leaf_value", 0.0)))
                step = path.copy()
                step[int(node["split_feature"])] += child_value - value
                stack.append((child, step))

    def __call__(self, leaf_index: np.ndarray) -> np.ndarray:
        """Contributions (rows x features) from leaf indices (rows x trees)."""
        leaf_index = np.asarray(leaf_index, dtype=np.int64).reshape(-1, len(self._trees))
        out = np.empty((len(leaf_index), self.table.shape[2]))
        for start in range(0, len(leaf_index), 256):  # 256 x trees x features gathered
            block = leaf_index[start : start + 256]
            out[start : start + len(block)] = self.table[self._trees, block].sum(axis=1)
        return out
