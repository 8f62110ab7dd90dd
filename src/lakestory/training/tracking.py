"""MLflow: the store under the warehouse root, experiments, lineage tags."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from lakestory.config import Dataset, Settings
from lakestory.features.build import Params
from lakestory.features.images import ImageParams
from lakestory.io.catalog import mlflow_artifacts


def use_store(settings: Settings) -> MlflowClient:
    """Point MLflow at the project's store (SQLite under the root unless configured)."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return MlflowClient(settings.tracking_uri, settings.tracking_uri)


# the lakestory stage run (`io.runs.Underway`) that registered a model version, set as the
# version is created, so that a run resuming one killed after that finds it, not another
STAGE_RUN_TAG = "lakestory.stage_run"


def registered_by(settings: Settings, model_name: str, stage_run: str) -> ModelVersion | None:
    """The version of `model_name` that stage run `stage_run` registered, if it did."""
    client = use_store(settings)
    found = client.search_model_versions(
        f"name = '{model_name}' and tags.`{STAGE_RUN_TAG}` = '{stage_run}'"
    )
    return max(found, key=lambda v: int(v.version)) if found else None


def experiment_id(settings: Settings, dataset: Dataset) -> str:
    """The dataset's experiment, created on first use.

    A tracking server decides where artifacts go (it proxies them: `mlflow-artifacts:`); with
    a store the client writes itself (the SQLite default), they go under <root>/mlartifacts.
    """
    client = use_store(settings)
    name = f"{settings.mlflow.experiment_prefix}/{dataset.name}"
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    if urlparse(settings.tracking_uri).scheme in ("http", "https", "databricks"):
        return str(client.create_experiment(name))
    location = mlflow_artifacts(settings).as_uri()
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


def log_feature_params(params: Params) -> None:
    """Log the fitted transforms to the active run: their version and widths as params, the
    JSON as an artifact and, with PCA, the chosen k and the explained-variance curve. Image
    params: the size, the pixel mean and standard deviation and the classes."""
    from matplotlib.figure import Figure

    if isinstance(params, ImageParams):
        mlflow.log_params(
            {
                "feature_params_version": params.version,
                "inputs": params.inputs,
                "image_size": f"{params.height}x{params.width}",
                "pixel_mean": params.mean,
                "pixel_std": params.std,
                "classes": params.classes,
            }
        )
        mlflow.log_text(params.to_json(), "feature_params.json")
        return
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


def classification_metrics(y: np.ndarray, p: np.ndarray, prefix: str = "") -> dict[str, float]:
    """Accuracy, F1, ROC AUC and the confusion counts of P(label = 1) `p` against labels `y`
    at threshold 0.5. ROC AUC is NaN when `y` holds one class only.

    With one probability per class (`p` of shape (N, K)): accuracy of the most probable
    class, F1 and ROC AUC (one class against the rest) averaged over the classes (macro); the
    confusion matrix is logged as an image only (`log_confusion_matrix`)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

    if p.ndim == 2:
        classes = np.arange(p.shape[1])
        truth, predicted = y.astype(int), p.argmax(1)
        present = len(set(truth.tolist())) == len(classes)
        metrics = {
            "accuracy": float(accuracy_score(truth, predicted)),
            "f1": float(f1_score(truth, predicted, labels=classes, average="macro")),
            "roc_auc": (
                float(roc_auc_score(truth, p, multi_class="ovr", labels=classes))
                if present
                else float("nan")
            ),
        }
        return {f"{prefix}{k}": v for k, v in metrics.items()}
    truth, predicted = (y > 0.5).astype(int), (p > 0.5).astype(int)
    tn, fp, fn, tp = confusion_matrix(truth, predicted, labels=[0, 1]).ravel()
    auc = float(roc_auc_score(truth, p)) if len(set(truth.tolist())) == 2 else float("nan")
    metrics = {
        "accuracy": float(accuracy_score(truth, predicted)),
        "f1": float(f1_score(truth, predicted, zero_division=0.0)),
        "roc_auc": auc,
        "tn": float(tn),
        "fp": float(fp),
        "fn": float(fn),
        "tp": float(tp),
    }
    return {f"{prefix}{k}": v for k, v in metrics.items()}


def log_confusion_matrix(y: np.ndarray, p: np.ndarray, name: str = "confusion_matrix.png") -> None:
    """The test split's confusion matrix (threshold 0.5, or the most probable of K classes),
    as an image of the active run."""
    from matplotlib.figure import Figure
    from sklearn.metrics import confusion_matrix

    if p.ndim == 2:
        labels = list(range(p.shape[1]))
        counts = confusion_matrix(y.astype(int), p.argmax(1), labels=labels)
    else:
        labels = [0, 1]
        counts = confusion_matrix((y > 0.5).astype(int), (p > 0.5).astype(int), labels=labels)
    side = 3.2 + 0.25 * len(labels)
    fig = Figure(figsize=(side + 0.4, side), dpi=96)
    ax = fig.add_subplot()
    ax.imshow(counts, cmap="Blues")
    for (row, col), n in np.ndenumerate(counts):
        dark = n > counts.max() / 2
        ax.text(col, row, str(n), ha="center", va="center", color="white" if dark else "black")
    ax.set_xticks(labels, labels=[str(c) for c in labels])
    ax.set_yticks(labels, labels=[str(c) for c in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"test split, {len(y)} rows", fontsize=9)
    fig.tight_layout()
    mlflow.log_figure(fig, name)
