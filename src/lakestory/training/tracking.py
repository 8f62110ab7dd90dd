"""MLflow: the store under the warehouse root, experiments, lineage tags."""

from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from lakestory.config import Dataset, Settings


def use_store(settings: Settings) -> MlflowClient:
    """Point MLflow at the project's store (SQLite under the root unless configured)."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return MlflowClient(settings.tracking_uri, settings.tracking_uri)


def experiment_id(settings: Settings, dataset: Dataset) -> str:
    """The dataset's experiment, created with its artifacts under <root>/mlartifacts."""
    client = use_store(settings)
    name = f"{settings.mlflow.experiment_prefix}/{dataset.name}"
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = (settings.root / "mlartifacts").as_uri()
    return str(client.create_experiment(name, artifact_location=location))


def code_version(start: Path | None = None) -> str:
    """The git commit of the code, or "unknown" outside a git checkout."""
    here = start or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"
