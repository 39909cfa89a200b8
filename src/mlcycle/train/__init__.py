"""The training stage: store snapshot -> sklearn Pipeline -> MLflow run and registry."""
