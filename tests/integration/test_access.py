"""Roles decide from the tables a query's analysed plan reads: views, CTEs, subqueries and
paths reach the same tables, and nothing refused runs."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from lakestory.access import analyse, query_as
from lakestory.config import Settings
from lakestory.errors import AccessDeniedError
from lakestory.io import TableRef, ensure_layers, register
from lakestory.io.tables import private_folder

VAULT = TableRef("restricted", "access_vault")
SCORES = TableRef("gold", "access_scores")
ACCOUNTS = TableRef("silver", "access_accounts")


@pytest.fixture(scope="module")
def tables(spark: SparkSession, settings: Settings) -> Iterator[Settings]:
    ensure_layers(spark, settings)
    rows = {
        VAULT: [("t1", "id-1"), ("t2", "id-2")],
        SCORES: [("id-1", 0.9), ("id-2", 0.1)],
        ACCOUNTS: [("id-1", 3), ("id-2", 5)],
    }
    schemas = {VAULT: "token string, id string", SCORES: "id string, score double"}
    for table, data in rows.items():
        schema = schemas.get(table, "id string, products int")
        frame = spark.createDataFrame(data, schema)
        frame.write.format("delta").mode("overwrite").save(str(table.path(settings)))
        register(spark, settings, table)
    spark.sql(f"CREATE OR REPLACE VIEW gold.access_linked AS SELECT * FROM {VAULT}")
    yield settings
    spark.sql("DROP VIEW gold.access_linked")  # other modules take gold's tables for Delta ones


def test_a_role_reads_the_tables_it_may(spark: SparkSession, tables: Settings) -> None:
    query = f"SELECT s.id, s.score, a.products FROM {SCORES} s JOIN {ACCOUNTS} a USING (id)"
    rows = query_as(spark, tables, "analyst", query).orderBy("id").collect()
    assert [(r.id, r.products) for r in rows] == [("id-1", 3), ("id-2", 5)]
    assert query_as(spark, tables, "privacy_officer", f"SELECT * FROM {VAULT}").count() == 2
    assert query_as(spark, tables, "analyst", "SELECT 1 AS one").first() == (1,)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM restricted.access_vault",
        "SELECT * FROM gold.access_linked",  # a view in an allowed layer over the vault
        "WITH v AS (SELECT * FROM restricted.access_vault) SELECT * FROM v",
        "SELECT * FROM gold.access_scores WHERE id IN (SELECT id FROM restricted.access_vault)",
        "SELECT s.* FROM gold.access_scores s JOIN restricted.access_vault v ON s.id = v.id",
        "SELECT (SELECT max(token) FROM restricted.access_vault) AS t",
        "SELECT * FROM delta.`{root}/restricted/access_vault`",
        "SELECT * FROM parquet.`{root}/restricted/access_vault`",
    ],
)
def test_every_way_to_the_vault_is_refused_to_an_analyst(
    spark: SparkSession, tables: Settings, query: str
) -> None:
    with pytest.raises(AccessDeniedError) as err:
        query_as(spark, tables, "analyst", query.format(root=tables.root))
    assert "'analyst' may not read restricted.access_vault" in str(err.value)
    assert "it may read gold.*, silver.*" in str(err.value)


def test_an_engineer_reads_everything_but_restricted(spark: SparkSession, tables: Settings) -> None:
    assert query_as(spark, tables, "engineer", f"SELECT * FROM {ACCOUNTS}").count() == 2
    with pytest.raises(AccessDeniedError, match="except restricted"):
        query_as(spark, tables, "engineer", "SELECT * FROM gold.access_linked")
    with pytest.raises(AccessDeniedError, match=r"may not read gold\.access_scores"):
        query_as(spark, tables, "privacy_officer", f"SELECT * FROM {SCORES}")


def test_files_outside_the_warehouse_are_refused(
    spark: SparkSession, tables: Settings, tmp_path: Path
) -> None:
    spark.range(2).write.parquet(str(tmp_path / "elsewhere"))
    with pytest.raises(AccessDeniedError, match="outside the warehouse"):
        query_as(spark, tables, "engineer", f"SELECT * FROM parquet.`{tmp_path / 'elsewhere'}`")


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE restricted.access_vault",
        "DELETE FROM restricted.access_vault",
        "INSERT INTO restricted.access_vault VALUES ('t3', 'id-3')",
        "CREATE OR REPLACE VIEW restricted.access_copy AS SELECT * FROM restricted.access_vault",
    ],
)
def test_commands_are_refused_and_never_run(
    spark: SparkSession, tables: Settings, statement: str
) -> None:
    with pytest.raises(AccessDeniedError, match="runs queries only") as err:
        query_as(spark, tables, "privacy_officer", statement)  # its tables, but a command
    assert "was not run" in str(err.value)
    assert spark.catalog.tableExists(VAULT.qualified)
    assert spark.read.table(VAULT.qualified).count() == 2
    assert not spark.catalog.tableExists("restricted.access_copy")


def test_the_plan_names_tables_by_their_files(spark: SparkSession, tables: Settings) -> None:
    path = VAULT.path(tables)
    query = f"SELECT * FROM gold.access_linked UNION ALL SELECT * FROM delta.`{path}`"
    found = analyse(spark, tables, query)
    assert found.tables == {VAULT.qualified} and found.command is None


def test_java_methods_are_not_called_under_a_role(spark: SparkSession, tables: Settings) -> None:
    query = "SELECT id, reflect('java.lang.System', 'getenv', 'HOME') FROM gold.access_scores"
    with pytest.raises(AccessDeniedError, match="calls a Java method"):
        query_as(spark, tables, "analyst", query)


def test_an_unknown_role_lists_the_known_ones(spark: SparkSession, tables: Settings) -> None:
    with pytest.raises(AccessDeniedError, match="no role 'auditor'.*analyst, engineer"):
        query_as(spark, tables, "auditor", "SELECT 1")


def test_the_restricted_folder_is_its_owners_alone(
    spark: SparkSession, tables: Settings, tmp_path: Path
) -> None:
    assert stat.S_IMODE((tables.root / "restricted").stat().st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    private_folder(loose)
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
