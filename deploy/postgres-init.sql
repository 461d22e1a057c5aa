-- A second database for MLflow's tracking store, next to the prediction log's.
CREATE DATABASE mlflow OWNER fraudops;
