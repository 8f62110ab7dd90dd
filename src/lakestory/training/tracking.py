"""MLflow: the store under the warehouse root, experiments, lineage tags."""

from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from lakestory.config import Dataset, Settings
from lakestory.features.transforms import FeatureParams


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


def log_feature_params(params: FeatureParams) -> None:
    """Log the fitted transforms to the active run: their version and widths as params, the
    JSON as an artifact and, with PCA, the chosen k and the explained-variance curve."""
    from matplotlib.figure import Figure

    mlflow.log_params(
        {
            "feature_params_version": params.version,
            "inputs": len(params.inputs),
            "prepared_width": len(params.prepared_names),
            "pca_k": params.pca.k if params.pca else None,
        }
    )
    mlflow.log_text(params.to_json(), "feature_params.json")
    if params.pca is None:
        return
    curve = np.cumsum(params.pca.explained)
    mlflow.log_metric("pca_explained_variance", float(curve[params.pca.k - 1]))
    fig = Figure(figsize=(5, 3.2), dpi=96)
    ax = fig.add_subplot()
    components = np.arange(1, len(curve) + 1)
    ax.bar(components, params.pca.explained, color="#4c72b0", label="each component")
    ax.plot(components, curve, marker="o", color="#dd8452", label="cumulative")
    ax.axvline(params.pca.k, color="grey", linestyle="--", label=f"k = {params.pca.k}")
    ax.set_xlabel("principal component")
    ax.set_ylabel("share of variance")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    mlflow.log_figure(fig, "pca_explained_variance.png")
