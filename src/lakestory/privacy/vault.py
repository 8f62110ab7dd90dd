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

import hashlib
import hmac
import logging
import time

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.config import Settings
from lakestory.config.models import Dataset
from lakestory.errors import WrongKeyError
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
# a table property of the vault: which key its tokens were made with (see `key_fingerprint`)
FINGERPRINT = "lakestory.tokenKey.fingerprint"


def key_fingerprint(key: bytes) -> str:
    """Names a key without revealing it: the HMAC of a fixed text under the key, cut short."""
    return hmac.new(key, b"lakestory token key fingerprint", hashlib.sha256).hexdigest()[:16]


def vault_table(dataset: Dataset) -> TableRef:
    return TableRef(RESTRICTED, f"{dataset.name}_vault")


def _conflict(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return any(name in text for name in _CONFLICTS)


def _create(spark: SparkSession, settings: Settings, table: TableRef, fingerprint: str) -> None:
    """The empty vault, if there is none yet (creating it twice at once is a conflict too),
    marked with the fingerprint of the key its tokens are made with."""
    ensure_layers(spark, settings)
    path = str(table.path(settings))
    if log_version(spark, path) is None:
        (
            DeltaTable.createIfNotExists(spark)
            .location(path)
            .addColumns(spark.createDataFrame([], SCHEMA).schema)
            .property(FINGERPRINT, fingerprint)
            .execute()
        )
    register(spark, settings, table)


def check_key(spark: SparkSession, settings: Settings, dataset: Dataset, key: bytes) -> None:
    """Stop when `key` is not the key the dataset's vault was made with (a vault that does
    not exist yet takes any)."""
    table = vault_table(dataset)
    path = str(table.path(settings))
    if log_version(spark, path) is None:
        return
    detail = DeltaTable.forPath(spark, path).detail().select("properties").first()
    made = (detail[0] if detail is not None else {}).get(FINGERPRINT)
    given = key_fingerprint(key)
    if made is not None and made != given:
        raise WrongKeyError(
            f"the token key (fingerprint {given}) is not the one {table} was made with "
            f"(fingerprint {made}): provide that key, or, after `lakestory rotate-key`, the "
            "new one"
        )


def mint_ids(
    spark: SparkSession, settings: Settings, dataset: Dataset, tokens: DataFrame, key: bytes
) -> int:
    """Give every token in `tokens` (a `token` column made with `key`; nulls skipped) that the
    dataset's vault lacks a new random id. Returns how many were minted by this call's
    commit. A vault made with another key stops it (`check_key`)."""
    check_key(spark, settings, dataset, key)
    table = vault_table(dataset)
    path = str(table.path(settings))
    seen = tokens.select(TOKEN).where(F.col(TOKEN).isNotNull()).distinct()
    if log_version(spark, path) is not None:
        # the tokens the vault lacks; when there are none (a refresh of people known), no
        # MERGE runs and nothing is committed
        known = spark.read.format("delta").load(path).select(TOKEN)
        new = seen.join(known, TOKEN, "left_anti").localCheckpoint()
        if new.isEmpty():
            return 0
    else:
        new = seen
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _create(spark, settings, table, key_fingerprint(key))
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


def read_vault(spark: SparkSession, settings: Settings, dataset: Dataset) -> DataFrame:
    """The dataset's vault as it is now, or an empty one if no id was minted yet."""
    path = str(vault_table(dataset).path(settings))
    if log_version(spark, path) is None:
        return spark.createDataFrame([], SCHEMA)
    return spark.read.format("delta").load(path)


def with_artificial_ids(vault: DataFrame, columns: dict[str, str]) -> Transform:
    """Replace each token column (key) by its artificial id (value: the id column's name),
    looked up in `vault` (`read_vault`); a token the vault lacks gives a null id (mint first)."""

    def _apply(df: DataFrame) -> DataFrame:
        for token_column, id_column in columns.items():
            looked_up = f"__vault_{token_column}"
            ids = vault.select(F.col(TOKEN).alias(looked_up), F.col(ID).alias(id_column))
            df = df.join(ids, df[token_column] == ids[looked_up], "left").drop(
                token_column, looked_up
            )
        return df

    return _apply
