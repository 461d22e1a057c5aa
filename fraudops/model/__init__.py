"""The model: training, calibration and explanations, evaluation, the MLflow registry,
promotion, live comparison, batch scoring and scheduled retraining."""
