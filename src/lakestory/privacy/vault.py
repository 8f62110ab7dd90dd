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

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakestory.columns import Transform
from lakestory.errors import WrongKeyError
from lakestory.io import Catalog, Shell, ensure_layers

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


def _conflict(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return any(name in text for name in _CONFLICTS)


def check_key(shell: Shell, catalog: Catalog, key: bytes) -> None:
    """Stop when `key` is not the key the dataset's vault was made with (a vault that does
    not exist yet takes any)."""
    table = catalog.vault()
    if not shell.has(table):
        return
    made = shell.properties(table).get(FINGERPRINT)
    given = key_fingerprint(key)
    if made is not None and made != given:
        raise WrongKeyError(
            f"the token key (fingerprint {given}) is not the one {table} was made with "
            f"(fingerprint {made}): provide that key, or, after `lakestory rotate-key`, the "
            "new one"
        )


def mint_ids(shell: Shell, catalog: Catalog, tokens: DataFrame, key: bytes) -> int:
    """Give every token in `tokens` (a `token` column made with `key`; nulls skipped) that the
    dataset's vault lacks a new random id. Returns how many were minted by this call's
    commit. A vault made with another key stops it (`check_key`)."""
    check_key(shell, catalog, key)
    table = catalog.vault()
    seen = tokens.select(TOKEN).where(F.col(TOKEN).isNotNull())
    if shell.has(table):
        # the tokens the vault lacks; when there are none (a refresh of people known), no
        # MERGE runs and nothing is committed. Made distinct after the anti-join, which
        # leaves the few new ones, rather than before it, over every row of the batch
        known = shell.read(table).select(TOKEN)
        new = seen.join(known, TOKEN, "left_anti").distinct().localCheckpoint()
        if new.isEmpty():
            return 0
    else:
        new = seen.distinct()
    insert: dict[str, str | Column] = {
        TOKEN: f"s.{TOKEN}",
        ID: "uuid()",
        "minted_at": "current_timestamp()",
    }
    for attempt in range(1, ATTEMPTS + 1):
        try:
            # the empty vault, if there is none yet (creating it twice at once is a conflict
            # too), marked with the fingerprint of the key its tokens are made with
            if not shell.has(table):
                ensure_layers(shell.spark, shell.settings)
                empty = shell.spark.createDataFrame([], SCHEMA)
                shell.create(table, empty, {FINGERPRINT: key_fingerprint(key)})
            done = shell.merge(
                table,
                new,
                f"t.{TOKEN} = s.{TOKEN}",
                lambda m: m.whenNotMatchedInsert(values=insert),
            )
            break
        except Exception as exc:  # Delta's conflicts come as Py4J errors naming them
            if attempt == ATTEMPTS or not _conflict(exc):
                raise
            log.info("%s: another run minted ids meanwhile; merging again (%d)", table, attempt)
            time.sleep(0.05 * attempt)
    return int(done["num_inserted_rows"]) if done is not None else 0  # MERGE's own counts


def read_vault(shell: Shell, catalog: Catalog) -> DataFrame:
    """The dataset's vault as it is now, or an empty one if no id was minted yet."""
    if not shell.has(catalog.vault()):
        return shell.spark.createDataFrame([], SCHEMA)
    return shell.read(catalog.vault())


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
