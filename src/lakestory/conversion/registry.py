"""The conversion in the MLflow registry: the report and files logged to the source version's
run, the gate's choice registered as a new version of the same model under alias `champion`,
and the champion found again for scoring."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import onnx
import onnxruntime
from mlflow.entities import Metric, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from lakestory.config import Settings
from lakestory.conversion.onnx_export import INPUT_NAME, OUTPUT_NAME, output_classes
from lakestory.conversion.report import ONNX_FP32, ConversionReport
from lakestory.training.tracking import STAGE_RUN_TAG, registered_by, use_store

CHAMPION = "champion"
ARTIFACT_TAG = "lakestory.artifact"
SOURCE_TAG = "lakestory.source_version"
PARAMS_TAG = "lakestory.feature_params_version"
ONNX_FILE = "model.onnx"  # the file MLflow's onnx flavour keeps the graph in


@dataclass(frozen=True)
class Published:
    version: str  # the registered version of the champion
    artifact: str  # which ONNX file it is


def _log_figures(client: mlflow.MlflowClient, run_id: str, report: ConversionReport) -> None:
    """Every figure as a metric `conversion.<artifact>.<figure>`, the gate's choice as tags."""
    now = int(time.time() * 1000)
    figures = {
        f"conversion.{f.artifact}.{key}": float(value)
        for f in report.figures
        for key, value in asdict(f).items()
        if key not in ("artifact", "file")
    }
    figures["test_accuracy_onnx"] = report.figure(ONNX_FP32).accuracy
    figures["conversion.parity_max_abs_diff"] = report.parity_max_abs_diff
    figures["conversion.gate.max_accuracy_drop"] = report.gate.max_accuracy_drop
    client.log_batch(
        run_id,
        metrics=[Metric(key, value, now, 0) for key, value in figures.items()],
        tags=[
            RunTag("conversion.champion", report.gate.champion),
            RunTag("conversion.gate", report.gate.reason),
            RunTag(
                "conversion.gate.require_batch_invariance",
                str(report.gate.require_batch_invariance).lower(),
            ),
        ],
    )


def publish(
    settings: Settings,
    report: ConversionReport,
    run_id: str,
    feature_params_version: int,
    out_dir: Path,
    stage_run: str | None = None,
) -> Published:
    """Log `out_dir` (report and ONNX files) and the figures to the source version's run
    `run_id`; register the gate's champion as a new version of the same model, tagged with what
    it is, where it came from and the pipeline's run of the convert stage (`stage_run`), and
    point alias `champion` at it. A run resuming one killed after registering takes that
    version rather than registering another."""
    client = use_store(settings)
    client.log_artifacts(run_id, str(out_dir), "conversion")
    _log_figures(client, run_id, report)
    done = None if stage_run is None else registered_by(settings, report.model_name, stage_run)
    if done is None:
        tags = {
            ARTIFACT_TAG: report.gate.champion,
            SOURCE_TAG: report.source_version,
            PARAMS_TAG: str(feature_params_version),
            **({STAGE_RUN_TAG: stage_run} if stage_run else {}),
        }
        version, artifact = _register(report, run_id, tags), report.gate.champion
    else:
        version, artifact = str(done.version), done.tags[ARTIFACT_TAG]
    client.update_model_version(report.model_name, version, description=report.gate.reason)
    client.set_registered_model_alias(report.model_name, CHAMPION, version)
    client.set_tag(run_id, "conversion.champion_version", version)
    return Published(version, artifact)


def _register(report: ConversionReport, run_id: str, tags: dict[str, str]) -> str:
    """Log the gate's champion to the run `run_id` and register it, created with `tags`."""
    artifact = report.gate.champion
    graph = onnx.load(report.paths[artifact])
    width = graph.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    # (-1, 1): P(label = 1) of a binary model; (-1, K): each of K classes' probability
    classes = output_classes(graph)
    signature = mlflow.models.ModelSignature(
        inputs=mlflow.types.Schema(
            [mlflow.types.TensorSpec(np.dtype(np.float32), (-1, width), INPUT_NAME)]
        ),
        outputs=mlflow.types.Schema(
            [mlflow.types.TensorSpec(np.dtype(np.float32), (-1, classes), OUTPUT_NAME)]
        ),
    )
    with mlflow.start_run(run_id=run_id):  # the ONNX model joins the run it was trained in
        info = mlflow.onnx.log_model(
            graph,
            name=artifact,
            registered_model_name=report.model_name,
            signature=signature,
            pip_requirements=[f"onnxruntime=={onnxruntime.__version__}"],
            save_as_external_data=False,  # one file: scoring ships its bytes to the workers
            tags=tags,
        )
    return str(info.registered_model_version)


def champion(settings: Settings, model_name: str) -> ModelVersion | None:
    """The version alias `champion` points at, or None (no such model or alias yet)."""
    client = use_store(settings)
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as error:
        # no such model: RESOURCE_DOES_NOT_EXIST; a model without the alias: INVALID_PARAMETER_VALUE
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


@dataclass(frozen=True)
class ScoringModel:
    name: str
    version: str
    onnx: bytes
    feature_params_version: int


def load_version(settings: Settings, version: ModelVersion) -> ScoringModel:
    """A registered ONNX version's graph (bytes) and the feature-params version its inputs are
    encoded with (its `lakestory.feature_params_version` tag)."""
    use_store(settings)
    what = f"{version.name} v{version.version}"
    params = version.tags.get(PARAMS_TAG)
    if params is None:
        raise LookupError(
            f"{what} has no tag {PARAMS_TAG}: is it an ONNX version registered by convert?"
        )
    with tempfile.TemporaryDirectory(prefix="lakestory-model-") as tmp:
        folder = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=tmp)
        )
        graph = folder / ONNX_FILE
        if not graph.is_file():
            raise LookupError(f"{what} has no ONNX graph ({ONNX_FILE})")
        data = graph.read_bytes()
    return ScoringModel(version.name, str(version.version), data, int(params))


def load_champion(settings: Settings, model_name: str) -> ScoringModel:
    """The version alias `champion` points at, ready to score."""
    found = champion(settings, model_name)
    if found is None:
        raise LookupError(f"model {model_name!r} has no version with alias {CHAMPION!r}")
    return load_version(settings, found)
