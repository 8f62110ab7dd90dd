"""The whole flow on a tiny generated dataset: landing -> bronze -> silver -> gold -> model ->
ONNX -> predictions, with real Delta, TorchDistributor processes, MLflow and ONNX Runtime."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mlflow
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.config import Dataset, Settings
from lakestory.demo.generate import GeneratedLanding, generate_customers
from lakestory.io import LAYERS, Catalog, TableRef, table_version
from lakestory.io.runs import last_run
from lakestory.io.tables import _known_in
from lakestory.operations.erasure import forget
from lakestory.pipeline import STAGES, Context, Outcome, run_stages

pytestmark = pytest.mark.slow

KEY = "integration-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def landing(settings: Settings) -> GeneratedLanding:
    return generate_customers(settings.root / "landing", rows=800, drops=2, seed=11)


class _Kept(logging.Handler):
    """Keeps every record logged while the pipeline runs, formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


LOGS = _Kept()


# What the JVM holds open under the root: Derby's metastore and its log, and the folder of
# managed tables. They stay as they are; the tables registered in the metastore are folders
# of the root, which are put back.
LIVE = {"metastore_db", "derby.log", "spark-warehouse"}
MLFLOW_DB = "mlflow.db"  # copied by SQLite itself, since MLflow's engine keeps it open


def _copy_sqlite(source: Path, destination: Path) -> None:
    """Copy the database at `source` over the one at `destination` (created if missing) with
    SQLite's backup, which connections open on either see as one ordinary write."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(destination)) as dst:
        src.backup(dst)


def _copy_entries(source: Path, destination: Path) -> None:
    """Copy what lies in `source` into `destination`, times and modes kept (ingestion reads a
    landed file's time; the restricted layer's folder is its owner's alone), but `LIVE`."""
    for entry in source.iterdir():
        if entry.name in LIVE:
            continue
        if entry.name == MLFLOW_DB:
            _copy_sqlite(entry, destination / entry.name)
        elif entry.name.startswith(f"{MLFLOW_DB}-"):
            continue  # SQLite's journal, if a transaction is open: not part of the database
        elif entry.is_dir():
            shutil.copytree(entry, destination / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, destination / entry.name)


def _catalog_tables(spark: SparkSession) -> set[str]:
    existing = {db.name for db in spark.catalog.listDatabases()}
    return {
        f"{layer}.{t.name}"
        for layer in LAYERS
        if layer in existing
        for t in spark.catalog.listTables(layer)
    }


@dataclass
class _Warehouse:
    """The warehouse as the first run left it, with a copy of its files taken right then, so
    that a test which changes it (a new champion, a rerun, an erasure) leaves every later
    test the same warehouse: whatever order the tests run in, each finds what the first run
    made, and nothing else."""

    spark: SparkSession
    settings: Settings
    outcomes: dict[str, Outcome]
    copy: Path
    tables: frozenset[str]  # the tables the metastore held after the first run
    changed: bool = False

    @classmethod
    def kept(
        cls, spark: SparkSession, settings: Settings, outcomes: dict[str, Outcome], copy: Path
    ) -> _Warehouse:
        copy.mkdir()
        _copy_entries(settings.root, copy)
        return cls(spark, settings, outcomes, copy, frozenset(_catalog_tables(spark)))

    def put_back(self) -> None:
        """After a test that changed it, the root's files as they were copied, the tables
        registered since unregistered, and every cache of a table's state dropped."""
        if not self.changed:
            return
        spark, root = self.spark, self.settings.root
        known = _known_in(spark)  # lakestory's memo of what the metastore holds
        for table in sorted(_catalog_tables(spark) - self.tables):
            spark.sql(f"DROP TABLE {table}")  # registered by path: the files are left alone
            known.discard(f"table:{table}")
        for entry in root.iterdir():
            if entry.name in LIVE or entry.name.startswith(MLFLOW_DB):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        _copy_entries(self.copy, root)
        # Delta keeps each table's log state by path, and Spark each table's relation by name
        jvm = spark._jvm
        assert jvm is not None
        jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
        for table in self.tables:
            spark.catalog.refreshTable(table)
        spark.catalog.clearCache()
        self.changed = False


@pytest.fixture(scope="module")
def warehouse(
    spark: SparkSession,
    settings: Settings,
    customers: Dataset,
    landing: GeneratedLanding,
    tmp_path_factory: pytest.TempPathFactory,
) -> _Warehouse:
    """The whole pipeline run once on the landing data, and the warehouse it made kept."""
    root = logging.getLogger()
    level = root.level
    root.addHandler(LOGS)
    root.setLevel(logging.DEBUG)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("LAKESTORY_TOKEN_KEY", KEY)
            outcomes = run_stages(Context(spark, settings, customers), STAGES)
    finally:
        root.removeHandler(LOGS)
        root.setLevel(level)
    copy = tmp_path_factory.mktemp("pipeline") / "first_run"
    return _Warehouse.kept(spark, settings, {o.stage: o for o in outcomes}, copy)


@pytest.fixture
def first_run(warehouse: _Warehouse) -> dict[str, Outcome]:
    """The first run's outcomes, with the warehouse as it left it."""
    warehouse.put_back()
    return warehouse.outcomes


@pytest.fixture
def changes_the_warehouse(warehouse: _Warehouse, first_run: dict[str, Outcome]) -> None:
    """For a test that writes to the warehouse: the next test gets it back as the first run
    left it. Marked before the test runs, so that one which fails halfway counts too."""
    warehouse.changed = True


def _count(spark: SparkSession, table: str) -> int:
    return spark.read.table(table).count()


def test_every_stage_ran(first_run: dict[str, Outcome]) -> None:
    assert all(first_run[stage].ran for stage in STAGES), [str(o) for o in first_run.values()]


@pytest.mark.parametrize("source", ["accounts", "transactions"])
def test_every_bronze_row_is_accounted_for(
    spark: SparkSession, first_run: dict[str, Outcome], landing: GeneratedLanding, source: str
) -> None:
    bronze = _count(spark, f"bronze.customers_{source}")
    silver = _count(spark, f"silver.customers_{source}")
    quarantined = _count(spark, f"quarantine.customers_{source}")
    metrics = (
        spark.read.table("ops.quality_metrics")
        .where((F.col("dataset") == "customers") & (F.col("source") == source))
        .first()
    )
    assert metrics is not None
    assert bronze == silver + metrics.duplicates + quarantined
    assert (metrics.rows_in, metrics.silver, metrics.quarantined) == (bronze, silver, quarantined)
    assert metrics.duplicates == metrics.exact_duplicates + metrics.key_duplicates
    assert metrics.unchanged == 0  # a first refine
    assert metrics.duplicates > 0 and quarantined > 0
    if source == "accounts":  # the generator's copies and newer versions are otherwise clean
        assert metrics.exact_duplicates == landing.dirt["exact_duplicates"]
        assert metrics.key_duplicates == landing.dirt["key_duplicates"]


def test_bronze_keeps_every_landed_line(
    spark: SparkSession, first_run: dict[str, Outcome], landing: GeneratedLanding
) -> None:
    assert _count(spark, "bronze.customers_accounts") == landing.account_rows
    assert _count(spark, "bronze.customers_transactions") == landing.transaction_rows
    sources = spark.read.table("bronze.customers_accounts").select("_source_file").distinct()
    assert sources.count() == len(landing.accounts_files)


def test_quarantine_says_why(spark: SparkSession, first_run: dict[str, Outcome]) -> None:
    q = spark.read.table("quarantine.customers_accounts")
    assert q.where(F.size("_reasons") == 0).count() == 0
    reasons = {r.reason for r in q.select(F.explode("_reasons").alias("reason")).collect()}
    assert {"malformed_record", "label_invalid", "label_missing"} <= reasons
    assert any(r.startswith("castable:") for r in reasons)


def test_silver_holds_artificial_ids_not_identifiers(
    spark: SparkSession, first_run: dict[str, Outcome]
) -> None:
    silver = spark.read.table("silver.customers_accounts")
    assert not {"customer_id", "name", "email", "phone", "address"} & set(silver.columns)
    assert not [c for c in silver.columns if c.endswith("_token")]
    ids = [r[0] for r in silver.select("customer_id_pseudonym").collect()]
    assert all(uuid.UUID(i).version == 4 for i in ids)  # random, not derived from the token
    assert len(set(ids)) == len(ids) == silver.count()
    raw_ids = spark.read.table("bronze.customers_accounts").select("customer_id").limit(50)
    leaked = silver.join(raw_ids, silver.customer_id_pseudonym == raw_ids.customer_id)
    assert leaked.count() == 0
    # every id is the vault's for its token; transactions share the accounts' ids
    vault = spark.read.table("restricted.customers_vault")
    assert silver.join(vault, silver.customer_id_pseudonym == vault.id, "left_anti").count() == 0
    txns = spark.read.table("silver.customers_transactions")
    linked = txns.join(silver, "customer_id_pseudonym", "left_semi").count()
    assert linked > 0.9 * txns.count()


PERSONAL = ["customer_id", "name", "email", "phone", "address"]


def _file_texts(folder: Path) -> Iterator[tuple[Path, bytes]]:
    """Every file under `folder` as bytes; a Parquet file also as the text of its decoded
    values, since its pages are compressed."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        yield path, data
        if path.suffix == ".parquet":
            yield path, str(pq.read_table(path).to_pylist()).encode("utf-8")


def test_no_file_of_silver_or_gold_holds_a_personal_value(
    spark: SparkSession, settings: Settings, first_run: dict[str, Outcome]
) -> None:
    bronze = spark.read.table("bronze.customers_accounts")
    values = {
        v.strip()
        for row in bronze.select(*PERSONAL).collect()
        for v in row
        if v is not None and len(v.strip()) >= 6
    }
    assert len(values) > 2000  # the landed people's identifiers are all there
    needles = [v.encode("utf-8") for v in values]
    scanned = 0
    for layer in ("silver", "gold"):
        for path, data in _file_texts(settings.root / layer):
            scanned += 1
            found = [n for n in needles if n in data]
            assert not found, f"{path} holds {len(found)} personal value(s)"
    assert scanned > 20


def test_the_key_is_in_no_file_and_no_log(
    settings: Settings, first_run: dict[str, Outcome]
) -> None:
    """Not in the warehouse, the MLflow store (both under the root here) or the run's logs;
    nor either padded form of it, from which it is one XOR away."""
    key = KEY.encode()
    padded = key.ljust(64, b"\x00")
    forms = [key, bytes(b ^ 0x36 for b in padded), bytes(b ^ 0x5C for b in padded)]
    needles = [
        *forms,
        *[f.hex().encode() for f in forms],
        *[f.hex().upper().encode() for f in forms],
    ]
    scanned = 0
    for path, data in _file_texts(settings.root):
        scanned += 1
        assert not [n for n in needles if n in data], f"{path} holds the key"
    assert scanned > 100 and (settings.root / "mlflow.db").is_file()
    logged = "\n".join(LOGS.lines).encode()
    assert len(LOGS.lines) > 10 and not [n for n in needles if n in logged]


def test_model_beats_the_majority_class(first_run: dict[str, Outcome]) -> None:
    metrics = first_run["train"].outputs["metrics"]
    assert metrics["test_accuracy"] > metrics["majority_accuracy"] + 0.03, metrics


def test_model_is_registered_with_lineage(
    settings: Settings, customers: Dataset, first_run: dict[str, Outcome]
) -> None:
    out = first_run["train"].outputs
    client = mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
    version = client.get_model_version(customers.model.registered_name, out["model_version"])
    run = client.get_run(out["run_id"])
    assert version.run_id == out["run_id"]
    assert run.data.params["world_size"] == "2"
    assert run.data.params["seed"] == str(customers.seed)
    assert "lineage.gold.customers_features" in run.data.tags
    assert "test_accuracy_onnx" in run.data.metrics  # logged by convert
    assert KEY not in str(run.data.params) + str(run.data.tags)
    # the fitted transforms: their version, the PCA's k and curve, the JSON itself
    assert run.data.params["feature_params_version"] == str(out["feature_params_version"])
    assert 0 < int(run.data.params["pca_k"]) < int(run.data.params["prepared_width"])
    assert run.data.metrics["pca_explained_variance"] >= 0.95
    logged = {a.path for a in client.list_artifacts(out["run_id"])}
    assert {"feature_params.json", "pca_explained_variance.png", "confusion_matrix.png"} <= logged
    # the test split's metrics agree with its confusion counts
    m = run.data.metrics
    tn, fp, fn, tp = (m[f"test_{k}"] for k in ("tn", "fp", "fn", "tp"))
    assert int(run.data.params["rows_test"]) == tn + fp + fn + tp
    assert m["test_accuracy"] == pytest.approx((tp + tn) / (tn + fp + fn + tp), abs=1e-6)
    assert m["test_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-6)
    assert m["test_roc_auc"] > m["test_accuracy"] - 0.2 and m["test_roc_auc"] > 0.7
    assert run.data.tags["lineage.seed"] == str(customers.seed)
    assert len(run.data.tags["lineage.code_version"]) == 40  # the git commit
    # the version trained is the candidate, and says what it was trained on
    name = customers.model.registered_name
    assert str(client.get_model_version_by_alias(name, "candidate").version) == out["model_version"]
    assert version.tags["lakestory.feature_params_version"] == str(out["feature_params_version"])
    assert version.tags["lakestory.features_version"] == run.data.params["features_version"]


def test_spark_and_onnx_score_as_torch_does_with_the_stored_params(
    spark: SparkSession, settings: Settings, customers: Dataset, first_run: dict[str, Outcome]
) -> None:
    """A row scored by Spark through the ONNX graph gets the probability that torch computes
    from the parameters stored in gold.customers_feature_params and the trained weights.

    Spark scores with the champion, which may be an int8 copy (its error is the conversion
    report's business): Spark is held to the champion's graph, that graph's fp32 source to
    torch."""
    import numpy as np
    import torch

    from lakestory.conversion import onnx_probabilities
    from lakestory.features import FeatureParams
    from lakestory.training import build_model

    out = first_run["train"].outputs
    stored = (
        spark.read.table("gold.customers_feature_params")
        .where(F.col("version") == out["feature_params_version"])
        .first()
    )
    assert stored is not None
    params = FeatureParams.from_json(stored["params"])
    trained = mlflow.pytorch.load_model(f"models:/customers_churn/{out['model_version']}")
    weights = {k: v for k, v in trained.state_dict().items() if not k.startswith("0.")}
    model = build_model(params, customers.model.hidden, customers.model.dropout)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and all(k.startswith("0.") for k in missing)  # all but the transforms
    model.eval()

    rows = (
        spark.read.table("gold.customers_features")
        .join(spark.read.table("gold.customers_predictions"), "customer_id_pseudonym")
        .where(F.col("split") == "test")
        # rows with a missing value (imputed in the graph) first
        .orderBy(F.exists("features", F.isnan).desc(), "customer_id_pseudonym")
        .limit(50)
        .collect()
    )
    assert len(rows) == 50 and any(v != v for v in rows[0].features)
    with torch.no_grad():
        x = torch.tensor([r.features for r in rows], dtype=torch.float32)
        expected = torch.sigmoid(model(x)).reshape(-1).numpy()
    report = first_run["convert"].outputs
    vectors = np.array([r.features for r in rows], dtype=np.float32)
    fp32 = onnx_probabilities(Path(report["paths"]["onnx_fp32"]), vectors)
    assert fp32.tolist() == pytest.approx(expected.tolist(), rel=1e-4, abs=1e-5)
    champion = onnx_probabilities(Path(report["paths"][report["gate"]["champion"]]), vectors)
    scored = [r.probability for r in rows]
    assert scored == pytest.approx(champion.tolist(), rel=1e-4, abs=1e-5)


def test_onnx_agrees_with_torch(first_run: dict[str, Outcome]) -> None:
    report = first_run["convert"].outputs
    assert list(report["parity_batches"]) == [1, 7, 1024]
    assert report["parity_max_abs_diff"] <= 1e-5  # the stage checked rtol 1e-3, atol 1e-5
    figures = {f["artifact"]: f for f in report["figures"]}
    assert list(figures) == ["torch_fp32", "onnx_fp32", "onnx_int8_dynamic", "onnx_int8_static"]
    assert figures["onnx_fp32"]["accuracy"] == pytest.approx(figures["torch_fp32"]["accuracy"])
    assert figures["onnx_int8_dynamic"]["agreement"] > 0.95
    assert figures["onnx_int8_static"]["agreement"] > 0.95
    assert report["calibration_split"] == "validation" and report["calibration_rows"] > 0
    assert all(Path(path).is_file() for path in report["paths"].values())
    assert all(f["bytes"] > 0 and f["throughput_rows_s"] > 0 for f in figures.values())


def test_the_gates_choice_is_the_champion_with_its_origin(
    spark: SparkSession, settings: Settings, customers: Dataset, first_run: dict[str, Outcome]
) -> None:
    from lakestory.conversion import choose_champion
    from lakestory.conversion.report import Figures

    report = first_run["convert"].outputs
    trained = first_run["train"].outputs
    figures = [Figures(**f) for f in report["figures"]]
    quantization = customers.model_spec.quantization
    gate = choose_champion(
        figures, quantization.max_accuracy_drop, quantization.require_batch_invariance
    )
    assert report["gate"]["champion"] == gate.champion
    client = mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
    champion = client.get_model_version_by_alias("customers_churn", "champion")
    assert str(champion.version) == report["champion_version"] != trained["model_version"]
    converted = last_run(spark, customers.name, "convert")
    assert converted is not None
    assert champion.tags == {
        "lakestory.artifact": gate.champion,
        "lakestory.source_version": trained["model_version"],
        "lakestory.feature_params_version": str(trained["feature_params_version"]),
        "lakestory.stage_run": converted.run_id,  # the run of the stage that registered it
    }
    assert champion.run_id == trained["run_id"]  # the ONNX version joins its training run
    run = client.get_run(trained["run_id"])
    assert run.data.tags["conversion.champion"] == gate.champion
    assert run.data.metrics["conversion.onnx_int8_static.accuracy_drop"] == pytest.approx(
        figures[3].accuracy_drop
    )
    logged = {a.path for a in client.list_artifacts(trained["run_id"], "conversion")}
    assert logged == {
        f"conversion/{name}"
        for name in (
            "model.onnx",
            "model.int8.dynamic.onnx",
            "model.int8.static.onnx",
            "conversion_report.json",
            "conversion_report.html",
        )
    }


def test_one_prediction_per_scored_row(spark: SparkSession, first_run: dict[str, Outcome]) -> None:
    predictions = spark.read.table("gold.customers_predictions")
    silver = spark.read.table("silver.customers_accounts")
    assert predictions.count() == silver.count()
    assert predictions.select("customer_id_pseudonym").distinct().count() == silver.count()
    assert predictions.where("probability < 0 OR probability > 1").count() == 0
    # every row names the champion that scored it and the input versions it read
    champion = first_run["convert"].outputs["champion_version"]
    versions = {
        t: table_version(spark, TableRef("silver", t))
        for t in ("customers_accounts", "customers_transactions")
    }
    origin = predictions.select("model_name", "model_version", "input_version").distinct()
    assert [tuple(r) for r in origin.collect()] == [
        (
            "customers_churn",
            champion,
            ",".join(f"silver.{t}@v{v}" for t, v in versions.items()),
        )
    ]


def _predictions(spark: SparkSession) -> list[tuple[object, ...]]:
    table = spark.read.table("gold.customers_predictions")
    return sorted(tuple(r) for r in table.collect())


@pytest.mark.usefixtures("changes_the_warehouse")
def test_scoring_the_same_input_with_the_same_model_again_changes_nothing(
    spark: SparkSession, settings: Settings, customers: Dataset, first_run: dict[str, Outcome]
) -> None:
    """score_dataset itself, twice, not the pipeline's skipping of an unchanged stage."""
    from lakestory.conversion.registry import load_champion
    from lakestory.features import read_params
    from lakestory.inference import score_dataset

    ref = TableRef("gold", "customers_predictions")
    before, rows = table_version(spark, ref), _predictions(spark)
    model = load_champion(settings, "customers_churn")
    params = read_params(spark, customers, model.feature_params_version)
    for _ in range(2):
        scored = score_dataset(
            spark, settings, customers, model.onnx, model.name, model.version, params
        )
        assert not scored.written and scored.table_version == before
    assert table_version(spark, ref) == before and _predictions(spark) == rows


@pytest.mark.usefixtures("changes_the_warehouse")
def test_a_new_champion_scores_again_and_its_rows_say_so(
    spark: SparkSession, settings: Settings, customers: Dataset, first_run: dict[str, Outcome]
) -> None:
    from lakestory.pipeline import score

    client = mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
    old = client.get_model_version_by_alias("customers_churn", "champion")
    new = client.create_model_version(
        "customers_churn", old.source, run_id=old.run_id, tags=old.tags
    )
    client.set_registered_model_alias("customers_churn", "champion", new.version)
    ref = TableRef("gold", "customers_predictions")
    before, rows = table_version(spark, ref), _predictions(spark)
    ctx = Context(spark, settings, customers)

    outcome = score(ctx)

    assert outcome.ran and outcome.outputs["model_version"] == str(new.version)
    after = table_version(spark, ref)
    assert after is not None and before is not None and after == before + 1
    table = spark.read.table(ref.qualified)
    assert [r[0] for r in table.select("model_version").distinct().collect()] == [str(new.version)]
    # the same graph gave the same probabilities, now recorded under the new version
    assert [r[:3] for r in _predictions(spark)] == [r[:3] for r in rows]
    assert not score(ctx).ran and table_version(spark, ref) == after


@pytest.mark.usefixtures("changes_the_warehouse")
def test_rerun_without_new_input_commits_nothing(
    spark: SparkSession, settings: Settings, customers: Dataset, first_run: dict[str, Outcome]
) -> None:
    tables = [TableRef(layer, t.name) for layer in LAYERS for t in spark.catalog.listTables(layer)]
    before = {t.qualified: table_version(spark, t) for t in tables}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAKESTORY_TOKEN_KEY", KEY)
        again = run_stages(Context(spark, settings, customers), STAGES)
    assert not any(o.ran for o in again), [str(o) for o in again]
    assert {t.qualified: table_version(spark, t) for t in tables} == before


@pytest.mark.usefixtures("changes_the_warehouse")
def test_train_and_convert_killed_after_registering_are_resumed_not_repeated(
    spark: SparkSession, settings: Settings, customers: Dataset, first_run: dict[str, Outcome]
) -> None:
    """A train or convert run killed after its model version was registered and before it
    recorded itself: its marker is left, and the run that resumes it takes that version
    (with the alias the killed run had not set yet) instead of registering another. A
    features run killed after it stored its params: the run that resumes it uses them."""
    from lakestory.pipeline import convert, features, run_stage, train

    client = mlflow.MlflowClient(settings.tracking_uri, settings.tracking_uri)
    catalog = Catalog(customers, settings)
    ctx = Context(spark, settings, customers)
    for stage, output, alias in (
        (train, "model_version", "candidate"),
        (convert, "champion_version", "champion"),
    ):
        killed = last_run(spark, customers.name, stage.name)
        assert killed is not None
        marker = _leave_marker(catalog, stage.name, killed.run_id, killed.inputs, {})
        client.delete_registered_model_alias("customers_churn", alias)
        versions = _versions(client)

        outcome = run_stage(ctx, replace(stage, forced=lambda ctx: True))

        assert outcome.ran and outcome.outputs[output] == killed.outputs[output]
        assert _versions(client) == versions
        now = client.get_model_version_by_alias("customers_churn", alias)
        assert str(now.version) == str(killed.outputs[output])
        assert not marker.exists()
    trained = last_run(spark, customers.name, "train")
    assert trained is not None
    assert trained.outputs["metrics"] == first_run["train"].outputs["metrics"]

    # last: a new features version would change the inputs of train and convert
    params = catalog.feature_params().qualified
    fitted = spark.read.table(params).collect()
    killed = last_run(spark, customers.name, "features")
    assert killed is not None
    plan = {"params_version": killed.outputs["params_version"]}
    _leave_marker(catalog, "features", killed.run_id, killed.inputs, plan)
    outcome = run_stage(ctx, replace(features, forced=lambda ctx: True))
    # the killed run's params, and its features table's write, which carries the run's id
    assert outcome.outputs == killed.outputs
    assert spark.read.table(params).collect() == fitted


def _leave_marker(
    catalog: Catalog, stage: str, run_id: str, inputs: dict[str, Any], plan: dict[str, Any]
) -> Path:
    """The marker a run of `stage` leaves when it is killed before recording itself."""
    marker = Path(catalog.stage_marker(stage))
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"run_id": run_id, "inputs": inputs, "plan": plan}))
    return marker


def _versions(client: mlflow.MlflowClient) -> list[str]:
    return sorted(v.version for v in client.search_model_versions("name = 'customers_churn'"))


def _token(value: str) -> str:
    return hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


def _subject(spark: SparkSession) -> tuple[str, str, str]:
    """A customer with a silver row and transactions, whose e-mail is no part of another's:
    (customer id, e-mail as landed, the customer's artificial id)."""
    vault = {r.token: r.id for r in spark.read.table("restricted.customers_vault").collect()}
    silver = spark.read.table("silver.customers_accounts")
    txns = spark.read.table("silver.customers_transactions")
    spending = {r[0] for r in txns.select("customer_id_pseudonym").collect()}
    in_silver = {r[0] for r in silver.select("customer_id_pseudonym").collect()}
    people = spark.read.table("bronze.customers_accounts").select("customer_id", "email")
    landed = [(r.customer_id, r.email) for r in people.collect() if r.customer_id and r.email]
    emails = [e for _, e in landed]
    for customer_id, email in landed:
        pid = vault.get(_token(customer_id.strip()))
        unique = sum(email.strip().lower() in e.lower() for e in emails) == 1
        if pid in in_silver and pid in spending and unique:
            return customer_id.strip(), email.strip(), pid
    raise AssertionError("no customer with a silver row and transactions")


@pytest.mark.usefixtures("changes_the_warehouse")
def test_a_forgotten_subject_is_in_no_file_and_stays_gone(
    spark: SparkSession,
    settings: Settings,
    customers: Dataset,
    landing: GeneratedLanding,
    first_run: dict[str, Outcome],
    tmp_path: Path,
) -> None:
    customer_id, email, pid = _subject(spark)
    silver = spark.read.table("silver.customers_accounts")
    silver_version = table_version(spark, TableRef("silver", "customers_accounts"))
    subjects = tmp_path / "subjects.csv"
    subjects.write_text(f"customer_id\n{customer_id}\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAKESTORY_TOKEN_KEY", KEY)
        receipt = forget(spark, settings, customers, subjects, KEY.encode())

    assert receipt.subjects == 1 and receipt.found == 1
    erased = {t.table for t in receipt.tables}
    assert {
        "bronze.customers_accounts",
        "bronze.customers_transactions",
        "silver.customers_accounts",
        "silver.customers_transactions",
        "gold.customers_features",
        "gold.customers_predictions",
        "restricted.customers_vault",
    } <= erased
    # with their rows, the subject's e-mail (and every other landed field) went too
    needles = [customer_id, email, email.lower(), pid]
    scanned = 0
    for layer in [*LAYERS, "_checkpoints"]:
        for path, data in _file_texts(settings.root / layer):
            scanned += 1
            found = [n for n in needles if n.encode() in data]
            assert not found, f"{path} still holds {len(found)} of the subject's values"
    assert scanned > 100
    # no time travel back to the subject: the old version's files are gone
    try:
        old = spark.read.option("versionAsOf", silver_version).table("silver.customers_accounts")
        assert old.where(F.col("customer_id_pseudonym") == pid).count() == 0
    except Exception as exc:  # Delta: the files of that version no longer exist
        assert "FileNotFound" in type(exc).__name__ + str(exc) or "not exist" in str(exc)
    receipts = spark.read.table("ops.erasures").collect()
    assert len(receipts) == 1 and receipts[0].subjects == 1
    assert not [n for n in needles if n in str(receipts[0])]

    # the subject lands again (a landing file delivered twice): ingest leaves them out
    holding = [f for f in landing.accounts_files if customer_id.encode() in f.read_bytes()]
    again = holding[0].with_name("redelivered.csv")
    again.write_bytes(holding[0].read_bytes())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LAKESTORY_TOKEN_KEY", KEY)
        run_stages(Context(spark, settings, customers), ("ingest", "refine", "features"))
    bronze = spark.read.table("bronze.customers_accounts")
    assert bronze.where(F.col("_source_file").endswith("redelivered.csv")).count() > 100
    assert bronze.where(F.trim("customer_id") == customer_id).count() == 0
    vault = spark.read.table("restricted.customers_vault")
    assert vault.where(F.col("token") == _token(customer_id)).count() == 0
    silver = spark.read.table("silver.customers_accounts")
    assert silver.where(F.col("customer_id_pseudonym") == pid).count() == 0
