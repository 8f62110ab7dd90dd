"""The vault: `restricted.<dataset>_vault` maps each keyed token to an artificial id.

An id is a random UUID (version 4, Spark's `uuid()`), minted the first time its token is
seen, and not derivable from the token: the link back from an id to a person goes through the
vault and the key, which are kept apart from silver and gold (`restricted/`, mode 0700).

Ids are minted with a MERGE that inserts only the tokens the vault lacks, so a rerun mints
nothing twice. Two runs minting at once both read the vault; Delta commits the first and
fails the second with a concurrent-append conflict (a MERGE reads the whole table, so the
other's new rows are a conflict), and the second then runs again against the vault as it now
is: one token never gets two ids.
"""

from __future__ import annotations

import logging
import time

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.config import Settings
from lakestory.config.models import Dataset
from lakestory.io import TableRef, ensure_layers, log_version, register
from lakestory.io.tables import RESTRICTED
from lakestory.privacy.tokens import Transform

log = logging.getLogger(__name__)

TOKEN, ID = "token", "id"
SCHEMA = "token string NOT NULL, id string NOT NULL, minted_at timestamp NOT NULL"
# the Delta conflicts after which a MERGE is run again: another writer committed first
_CONFLICTS = (
    "ConcurrentAppendException",
    "ConcurrentDeleteReadException",
    "ConcurrentTransactionException",
    "ProtocolChangedException",
    "MetadataChangedException",
    "DELTA_CONCURRENT_APPEND",
    "DELTA_CONCURRENT_DELETE_READ",
    "DELTA_CONCURRENT_TRANSACTION",
    "DELTA_PROTOCOL_CHANGED",
    "DELTA_METADATA_CHANGED",
)
ATTEMPTS = 8


def vault_table(dataset: Dataset) -> TableRef:
    return TableRef(RESTRICTED, f"{dataset.name}_vault")


def _conflict(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return any(name in text for name in _CONFLICTS)


def _create(spark: SparkSession, settings: Settings, table: TableRef) -> None:
    """The empty vault, if there is none yet (creating it twice at once is a conflict too)."""
    ensure_layers(spark, settings)
    path = str(table.path(settings))
    if log_version(spark, path) is None:
        (
            DeltaTable.createIfNotExists(spark)
            .location(path)
            .addColumns(spark.createDataFrame([], SCHEMA).schema)
            .execute()
        )
    register(spark, settings, table)


def mint_ids(spark: SparkSession, settings: Settings, dataset: Dataset, tokens: DataFrame) -> int:
    """Give every token in `tokens` (a `token` column; nulls skipped) that the dataset's vault
    lacks a new random id. Returns how many were minted by this call's commit."""
    table = vault_table(dataset)
    path = str(table.path(settings))
    new = tokens.select(TOKEN).where(F.col(TOKEN).isNotNull()).distinct()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _create(spark, settings, table)
            done = (
                DeltaTable.forPath(spark, path)
                .alias("v")
                .merge(new.alias("n"), f"v.{TOKEN} = n.{TOKEN}")
                .whenNotMatchedInsert(
                    values={TOKEN: f"n.{TOKEN}", ID: "uuid()", "minted_at": "current_timestamp()"}
                )
                .execute()
            )
            break
        except Exception as exc:  # Delta's conflicts come as Py4J errors naming them
            if attempt == ATTEMPTS or not _conflict(exc):
                raise
            log.info("%s: another run minted ids meanwhile; merging again (%d)", table, attempt)
            time.sleep(0.05 * attempt)
    row = done.first()  # MERGE's own counts of what its commit did
    return int(row["num_inserted_rows"]) if row is not None else 0


def with_artificial_ids(
    spark: SparkSession, settings: Settings, dataset: Dataset, columns: dict[str, str]
) -> Transform:
    """Replace each token column (key) by its artificial id (value: the id column's name),
    looked up in the dataset's vault; a token the vault lacks gives a null id (mint first)."""
    vault = spark.read.format("delta").load(str(vault_table(dataset).path(settings)))

    def _apply(df: DataFrame) -> DataFrame:
        for token_column, id_column in columns.items():
            ids = vault.select(
                F.col(TOKEN).alias(f"__vault_{token_column}"), F.col(ID).alias(id_column)
            )
            df = df.join(ids, df[token_column] == ids[f"__vault_{token_column}"], "left").drop(
                token_column, f"__vault_{token_column}"
            )
        return df

    return _apply
