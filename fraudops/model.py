"""The fraud model: a LightGBM booster, its probability calibration, the ordered feature
list and the decision thresholds, saved and loaded together without pickle.

On disk (and inside the MLflow model, see :mod:`fraudops.registry`) a model is a directory::

    booster.txt       LightGBM's own text format
    calibrator.json   isotonic calibration as interpolation knots
    metadata.json     feature service, ordered features, thresholds, defaults
"""

from __future__ import annotations

import json
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

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.x, self.y)


@dataclass(frozen=True)
class ModelMetadata:
    feature_service: str
    feature_names: list[str]
    review_threshold: float
    block_threshold: float
    extra: dict = field(default_factory=dict)


@dataclass
class FraudModel:
    booster: lgb.Booster
    calibrator: IsotonicCalibrator
    metadata: ModelMetadata

    @property
    def feature_names(self) -> list[str]:
        return self.metadata.feature_names

    def raw_score(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(features, raw_score=True, num_threads=1))

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Calibrated fraud probability for rows of features in ``feature_names`` order."""
        return self.calibrator(self.raw_score(np.asarray(features, dtype=np.float64)))

    def decide(
        self, probability: np.ndarray, review: float | None = None, block: float | None = None
    ) -> np.ndarray:
        review = self.metadata.review_threshold if review is None else review
        block = self.metadata.block_threshold if block is None else block
        return np.where(
            probability >= block, "block", np.where(probability >= review, "review", "approve")
        )

    def contributions(self, features: np.ndarray) -> np.ndarray:
        """Per-feature contributions to the raw score (SHAP values from the trees); the last
        column is the expected value."""
        return np.asarray(
            self.booster.predict(np.asarray(features, dtype=np.float64), pred_contrib=True)
        )

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
        metadata = ModelMetadata(**json.loads((directory / "metadata.json").read_text()))
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
