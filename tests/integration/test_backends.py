"""Training on the demo data with both backends and with 1 and 2 processes, and tracking to a
real `mlflow server` on loopback.

The dataset is the demo's, renamed `parity` and landed under its own folder, so that its tables
are its own in the shared test warehouse.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession

from lakestory.config import Dataset, Settings
from lakestory.config.models import Tune
from lakestory.demo.generate import generate_customers
from lakestory.io import LAYERS, Catalog, table_version
from lakestory.io.runs import last_run
from lakestory.pipeline import Context, run_stages, tune
from lakestory.training.train import Fit, features_params, fit, train_model

pytestmark = pytest.mark.slow

KEY = "backend-parity-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def parity(spark: SparkSession, settings: Settings, customers: Dataset) -> Iterator[Dataset]:
    """The demo dataset (5,000 generated customers, as `lakestory demo` lands them) through
    ingest, refine and features."""
    generate_customers(settings.root / "landing" / "parity")
    sources = {
        name: source.model_copy(update={"path": f"parity/{source.path}"})
        for name, source in customers.sources.items()
    }
    # its own registered model too, so that its versions and aliases are its own
    model = customers.model_spec.model_copy(update={"registered_name": "parity_churn"})
    dataset = customers.model_copy(update={"name": "parity", "sources": sources, "model": model})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAKESTORY_TOKEN_KEY", KEY)
        run_stages(Context(spark, settings, dataset), ("ingest", "refine", "features"))
    yield dataset
    # Its customers are the demo's, ids and all: other modules that scan the whole warehouse
    # for a customer's values (erasure) must not find this copy.
    for layer in LAYERS:
        for folder in (settings.root / layer).glob("parity_*"):
            spark.sql(f"DROP TABLE IF EXISTS {layer}.{folder.name}")
            shutil.rmtree(folder)
    for folder in (settings.root / "_checkpoints").glob("*/parity_*"):
        shutil.rmtree(folder)
    shutil.rmtree(settings.root / "landing" / "parity")


@pytest.fixture(scope="module")
def runs(spark: SparkSession, settings: Settings, parity: Dataset) -> dict[str, Fit]:
    """The demo's model settings (seed, global batch) trained three ways."""
    params = features_params(spark, parity)
    model = parity.model_spec
    ways = {
        "torch_distributor x2": model.model_copy(update={"num_processes": 2}),
        "horovod x2": model.model_copy(update={"num_processes": 2, "backend": "horovod"}),
        "torch_distributor x1": model.model_copy(update={"num_processes": 1}),
    }
    fits = {name: fit(spark, settings, parity, params, cfg) for name, cfg in ways.items()}
    # the figures, for whoever runs this with -s
    for name, run in fits.items():
        print(
            f"{name}: validation accuracy {run.metrics['validation_accuracy']:.4f}, "
            f"test accuracy {run.metrics['test_accuracy']:.4f}, "
            f"losses {run.metrics['validation_loss']:.4f} {run.metrics['test_loss']:.4f}, "
            f"epochs {run.metrics['epochs_run']:.0f} (best {run.metrics['best_epoch']:.0f})"
        )
    return fits


def _val_accuracy(run: Fit) -> float:
    return run.metrics["validation_accuracy"]


def test_the_runs_are_what_they_say(runs: dict[str, Fit]) -> None:
    assert {name: (r.backend, r.world_size) for name, r in runs.items()} == {
        "torch_distributor x2": ("torch_distributor", 2),
        "horovod x2": ("horovod", 2),
        "torch_distributor x1": ("torch_distributor", 1),
    }
    one = runs["torch_distributor x1"]
    two = runs["torch_distributor x2"]
    # the same shards of the train split, half of them per process with two
    assert one.feed.shards == two.feed.shards and len(one.feed.shards) == 8
    assert one.steps_per_epoch == two.steps_per_epoch
    assert one.feed.rows["validation"] > 500  # a point is a handful of rows, not one


def test_both_backends_reach_the_same_validation_accuracy(runs: dict[str, Fit]) -> None:
    ddp, hvd = runs["torch_distributor x2"], runs["horovod x2"]
    assert _val_accuracy(ddp) == pytest.approx(_val_accuracy(hvd), abs=0.01), {
        n: _val_accuracy(r) for n, r in runs.items()
    }


def test_one_and_two_processes_reach_the_same_validation_accuracy(
    runs: dict[str, Fit],
) -> None:
    """One process and two see the same global batches, with the same dropout masks (the feed's
    shards do not depend on the process count), so they train the same model but for the
    order in which gradients are summed: the same epochs, and losses apart by rounding."""
    one, two = runs["torch_distributor x1"], runs["torch_distributor x2"]
    assert _val_accuracy(one) == pytest.approx(_val_accuracy(two), abs=0.01), {
        n: _val_accuracy(r) for n, r in runs.items()
    }
    assert [p["epoch"] for p in one.history] == [p["epoch"] for p in two.history]
    for a, b in zip(one.history, two.history, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-3), (a, b)


def test_every_run_learns(runs: dict[str, Fit]) -> None:
    for name, run in runs.items():
        majority = max(run.y_test.mean(), 1 - run.y_test.mean())
        assert run.metrics["test_accuracy"] > majority + 0.05, name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real tracking server process on loopback, with its own SQLite store, serving the
    artifacts it is sent."""
    where = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (where / "server.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{where / 'mlflow.db'}",
            "--artifacts-destination",
            str(where / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "mlflow server did not start:\n"
                    + (where / "server.log").read_text(errors="replace")[-3000:]
                )
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_training_tracks_to_a_tracking_server(
    spark: SparkSession,
    settings: Settings,
    parity: Dataset,
    mlflow_server: str,
    tmp_path: Path,
) -> None:
    remote = settings.model_copy(
        update={"mlflow": settings.mlflow.model_copy(update={"tracking_uri": mlflow_server})}
    )
    model = parity.model_spec.model_copy(update={"epochs": 3, "early_stopping": None})
    lineage = {
        Catalog(parity).features().qualified: table_version(spark, Catalog(parity).features())
    }
    try:
        result = train_model(spark, remote, parity, lineage, model=model)
    finally:
        mlflow.set_tracking_uri(settings.tracking_uri)
        mlflow.set_registry_uri(settings.tracking_uri)

    client = MlflowClient(mlflow_server, mlflow_server)
    run = client.get_run(result.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # the server holds them
    assert run.data.params["backend"] == "torch_distributor"
    assert run.data.params["epochs"] == "3"
    for metric in ("test_accuracy", "test_f1", "test_roc_auc", "majority_accuracy"):
        assert metric in run.data.metrics
    assert len(client.get_metric_history(result.run_id, "epoch_val_loss")) == 3
    assert run.data.tags["lineage.seed"] == str(parity.seed)
    names = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"confusion_matrix.png", "feature_params.json"} <= names

    candidate = client.get_model_version_by_alias(model.registered_name, "candidate")
    assert str(candidate.version) == result.model_version
    assert candidate.tags["lakestory.feature_params_version"] == str(result.feature_params_version)
    downloaded = Path(
        client.download_artifacts(result.run_id, "feature_params.json", str(tmp_path))
    )
    assert downloaded.read_text().startswith("{")
    # the registered model comes back from the server with its signature and example
    uri = f"models:/{model.registered_name}/{result.model_version}"
    mlflow.set_registry_uri(mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    try:
        info = mlflow.models.get_model_info(uri)
        network = mlflow.pytorch.load_model(uri)
    finally:
        mlflow.set_tracking_uri(settings.tracking_uri)
        mlflow.set_registry_uri(settings.tracking_uri)
    assert info.signature is not None and info.saved_input_example_info is not None
    (features,) = info.signature.inputs.inputs
    width = len(features_params(spark, parity).inputs)
    assert features.shape == (-1, width)
    with torch.no_grad():
        assert network(torch.zeros(5, width)).shape == (5, 1)


def test_tune_runs_nested_trials_and_registers_the_best(
    spark: SparkSession, settings: Settings, parity: Dataset
) -> None:
    space = {
        "learning_rate": {"low": 0.001, "high": 0.02, "log": True},
        "hidden": {"choices": [[8], [64, 32]]},  # holds the configured [64, 32]
    }
    dataset = parity.model_copy(
        update={
            "tune": Tune.model_validate({"trials": 2, "metric": "val_loss", "space": space}),
            "model": parity.model_spec.model_copy(update={"epochs": 2, "early_stopping": None}),
        }
    )
    ctx = Context(spark, settings, dataset)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAKESTORY_TOKEN_KEY", KEY)
        outcome = tune(ctx)
    assert outcome.ran, outcome.message
    out = outcome.outputs
    best = out["best_settings"]
    assert 0.001 <= best["learning_rate"] <= 0.02 and best["hidden"] in ([8], [64, 32])

    client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
    parent = client.get_run(out["tune_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
    )
    trials = [r for r in children if r.info.run_name.startswith("trial-")]
    assert len(trials) == 2 and len(children) == 3
    # the settings as configured are the first trial: the study starts from them
    (first,) = [r for r in trials if r.data.params["trial"] == "0"]
    assert float(first.data.params["learning_rate"]) == dataset.model_spec.learning_rate
    assert first.data.params["hidden"] == str(dataset.model_spec.hidden)
    assert parent.data.params["configured_first"] == "True"
    # the best trial is the one of the least validation loss, and its settings were retrained
    losses = {r.data.params["trial"]: r.data.metrics["validation_loss"] for r in trials}
    assert parent.data.tags["lakestory.best_trial"] == min(losses, key=losses.__getitem__)
    assert parent.data.metrics["best_validation_loss"] == pytest.approx(min(losses.values()))
    (retrained,) = [r for r in children if r.info.run_id == out["run_id"]]
    assert float(retrained.data.params["learning_rate"]) == pytest.approx(best["learning_rate"])
    assert retrained.data.params["hidden"] == str(best["hidden"])
    assert retrained.data.tags["lakestory.tuned_by"] == parent.info.run_id
    name = dataset.model_spec.registered_name
    assert str(client.get_model_version_by_alias(name, "candidate").version) == out["model_version"]

    # the tuned model is the train stage's latest: a run converts it rather than training again
    recorded = last_run(spark, "parity", "train")
    assert recorded.outputs["model_version"] == out["model_version"]
    # registered under the stage's run, which a run resuming a killed tune finds it by
    tags = client.get_model_version(name, out["model_version"]).tags
    assert tags["lakestory.stage_run"] == recorded.run_id
    (again,) = run_stages(ctx, ("train",))
    assert not again.ran
