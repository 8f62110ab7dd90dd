"""One Spark session per test run, built by lakestory's own builder on a temporary warehouse."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from lakestory import session
from lakestory.config import Settings, load_dataset, load_settings
from lakestory.config.models import Dataset

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
