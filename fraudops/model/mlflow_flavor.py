"""MLflow ``python_function`` loader for FraudOps models (``loader_module``): the model is
plain files (LightGBM text, JSON), so loading it from the registry unpickles nothing.

    mlflow.pyfunc.load_model("models:/fraud-detector@champion").predict(features_df)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from fraudops.model.fraud_model import FraudModel


class FraudPyfunc:
    def __init__(self, model: FraudModel):
        self.model = model

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.Series:
        frame = pd.DataFrame(model_input)
        missing = [name for name in self.model.feature_names if name not in frame.columns]
        if missing:
            raise ValueError(f"missing model features: {missing}")
        values = frame[self.model.feature_names].to_numpy(dtype="float64")
        return pd.Series(self.model.predict_proba(values), name="fraud_probability")


def _load_pyfunc(data_path: str) -> FraudPyfunc:
    return FraudPyfunc(FraudModel.load(Path(data_path)))
