"""One Spark session per test run, built by lakestory's own builder on a temporary warehouse."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from lakestory import session
from lakestory.config import Settings, load_dataset, load_settings
from lakestory.config.models import Dataset
from lakestory.io import tables

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("lakehouse")
    return load_settings(CONF, environ={"LAKESTORY_ROOT": str(root)})


@pytest.fixture(scope="session")
def spark(settings: Settings) -> Iterator[SparkSession]:
    spark = session.build(settings)
    yield spark
    spark.stop()


@pytest.fixture
def own_warehouse(spark: SparkSession, tmp_path: Path) -> Iterator[Settings]:
    """Settings for a warehouse of the test's own under `tmp_path`, for a test about a whole
    warehouse (backup, restore). The run's one metastore names each table once, so names this
    test registers point into its warehouse: they are dropped afterwards (external tables: the
    files stay), so that later tests find their own tables by name, in any order."""
    settings = load_settings(CONF, environ={"LAKESTORY_ROOT": str(tmp_path / "wh")})
    before = _registered(spark)
    yield settings
    for name in _registered(spark) - before:
        spark.sql(f"DROP TABLE IF EXISTS {name}")
    tables._known_in(spark).clear()  # registrations it remembered are asked for again


def _registered(spark: SparkSession) -> set[str]:
    return {
        f"{layer}.{t.name}"
        for layer in tables.LAYERS
        if spark.catalog.databaseExists(layer)
        for t in spark.catalog.listTables(layer)
    }


@pytest.fixture(scope="session")
def customers() -> Dataset:
    return load_dataset("customers", CONF)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reverse-order",
        action="store_true",
        help="run the collected tests in reverse order, to show a test that needs an earlier one",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--reverse-order"):
        items.reverse()
