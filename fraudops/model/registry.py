"""Everything FraudOps knows about MLflow's API, in one module: tracking set-up, logging a
model with its signature, the registry's aliases (``@challenger``, ``@champion``) and
loading a registered model back without pickle."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudops.core.settings import Settings
from fraudops.model.fraud_model import FraudModel, ModelMetadata

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_ARTIFACT = "model"


def configure(settings: Settings) -> Any:
    """Point MLflow at the configured tracking store and registry; return a client."""
    import mlflow
    from mlflow import MlflowClient

    uri = settings.resolved_mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(settings: Settings, name: str | None = None) -> str:
    """The experiment's id, created with artifacts under the data dir for local stores."""
    import mlflow

    name = name or settings.mlflow_experiment
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    local = not settings.resolved_mlflow_tracking_uri.startswith(("http://", "https://"))
    return mlflow.create_experiment(
        name, artifact_location=settings.mlflow_artifact_location if local else None
    )


def log_model(model: FraudModel, example: pd.DataFrame, registered_name: str) -> Any:
    """Log ``model`` in the active run as a pyfunc model and register a new version."""
    import lightgbm
    import mlflow
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as tmp:
        data = model.save(Path(tmp) / "fraud_model")
        signature = infer_signature(
            example, pd.Series(model.predict_proba(example.to_numpy()), name="fraud_probability")
        )
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            loader_module="fraudops.model.mlflow_flavor",
            data_path=str(data),
            signature=signature,
            input_example=example,
            pip_requirements=[f"lightgbm=={lightgbm.__version__}", "fraudops"],
            registered_model_name=registered_name,
        )
    return info


@dataclass(frozen=True)
class RegisteredModel:
    model: FraudModel
    version: str
    run_id: str
    aliases: tuple[str, ...]


def version_for(client: Any, name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def load_version(client: Any, name: str, version: str) -> RegisteredModel:
    """Download a registered version and load it (plain files: nothing is unpickled)."""
    import mlflow
    from mlflow.models import Model

    mv = client.get_model_version(name, version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}"))
    data = Model.load(str(local)).flavors["python_function"]["data"]
    return RegisteredModel(
        FraudModel.load(local / data), str(mv.version), mv.run_id, tuple(mv.aliases)
    )


def metadata_of(client: Any, name: str, version: str) -> ModelMetadata:
    """A registered version's metadata (features, thresholds), read from its model
    artifact: the record the scorer loads with the model, without loading the model."""
    import mlflow
    from mlflow.models import Model

    uri = f"models:/{name}/{version}"
    with tempfile.TemporaryDirectory() as tmp:
        mlmodel = Path(mlflow.artifacts.download_artifacts(f"{uri}/MLmodel", dst_path=tmp))
        data = Model.load(str(mlmodel)).flavors["python_function"]["data"]
        found = mlflow.artifacts.download_artifacts(f"{uri}/{data}/metadata.json", dst_path=tmp)
        return ModelMetadata.read(Path(found).parent)


def load_alias(client: Any, name: str, alias: str) -> RegisteredModel | None:
    mv = version_for(client, name, alias)
    return None if mv is None else load_version(client, name, mv.version)


def load_uri(client: Any, uri: str) -> RegisteredModel:
    """``models:/name@alias`` or ``models:/name/version``."""
    if not uri.startswith("models:/"):
        raise ValueError(f"expected models:/<name>@<alias> or models:/<name>/<version>, got {uri}")
    ref = uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        found = load_alias(client, name, alias)
        if found is None:
            raise LookupError(f"no version of {name} has alias @{alias}")
        return found
    name, _, version = ref.partition("/")
    if not name or not version:
        raise ValueError(f"expected models:/<name>@<alias> or models:/<name>/<version>, got {uri}")
    from mlflow.exceptions import MlflowException

    try:
        return load_version(client, name, version)
    except MlflowException as exc:  # no such model or version
        raise LookupError(f"{uri}: {exc.message}") from None


def set_alias(client: Any, name: str, alias: str, version: str) -> None:
    client.set_registered_model_alias(name, alias, version)


def tag_version(client: Any, name: str, version: str, tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def to_float_dict(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float | np.floating)}
