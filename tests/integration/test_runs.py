"""A stage's run keeps a marker until it has recorded itself, so that a run killed before then
is resumed by the next: its id and its plan are the killed run's."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from lakestory.config import Dataset, Settings
from lakestory.io import Catalog
from lakestory.io.runs import Underway

INPUTS = {"bronze.customers_accounts": 3, "config": "9f2c1e0d"}


def test_a_run_that_stopped_before_recording_itself_is_resumed_with_its_id_and_plan(
    spark: SparkSession, settings: Settings, customers: Dataset, tmp_path: Path
) -> None:
    catalog = _catalog(settings, customers, tmp_path)
    marker = Path(catalog.stage_marker("reprocess"))

    killed = Underway.begin(spark, catalog, "reprocess", INPUTS)
    assert not killed.resumed and marker.is_file()
    assert killed.planned({"accounts": 3}) == {"accounts": 3}

    resumed = Underway.begin(spark, catalog, "reprocess", INPUTS)
    assert (resumed.resumed, resumed.run_id) == (True, killed.run_id)
    # the killed run's plan, not the one this run would make now
    assert resumed.planned({"accounts": 4}) == {"accounts": 3}
    resumed.end()
    assert not marker.exists()

    fresh = Underway.begin(spark, catalog, "reprocess", INPUTS)
    assert not fresh.resumed and fresh.run_id != killed.run_id
    assert fresh.planned({"accounts": 4}) == {"accounts": 4}
    # another stage's run is its own
    assert not Underway.begin(spark, catalog, "refine", INPUTS).resumed


def test_a_run_with_other_inputs_starts_afresh(
    spark: SparkSession, settings: Settings, customers: Dataset, tmp_path: Path
) -> None:
    """New data or another config since the kill: the killed run's plan (params fitted on
    other rows, a model of other settings) is not this run's."""
    catalog = _catalog(settings, customers, tmp_path)
    killed = Underway.begin(spark, catalog, "features", INPUTS)
    killed.planned({"params_version": 2})
    later = Underway.begin(spark, catalog, "features", {**INPUTS, "config": "0123abcd"})
    assert not later.resumed and later.run_id != killed.run_id
    assert later.planned({"params_version": 3}) == {"params_version": 3}
    # the marker is the later run's now
    assert Underway.begin(spark, catalog, "features", INPUTS).run_id != killed.run_id


def test_a_marker_cut_while_written_is_no_run_to_resume(
    spark: SparkSession, settings: Settings, customers: Dataset, tmp_path: Path
) -> None:
    catalog = _catalog(settings, customers, tmp_path)
    marker = Path(catalog.stage_marker("refine"))
    marker.parent.mkdir(parents=True)
    marker.write_text('{"run_id": "3f2')
    run = Underway.begin(spark, catalog, "refine", INPUTS)
    assert not run.resumed and run.run_id != "3f2"


def _catalog(settings: Settings, dataset: Dataset, root: Path) -> Catalog:
    warehouse = settings.warehouse.model_copy(update={"root": root})
    return Catalog(dataset, settings.model_copy(update={"warehouse": warehouse}))
