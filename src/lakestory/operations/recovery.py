"""`lakestory backup --to DIR` and `lakestory restore --from DIR`, with erasures kept.

A backup is a consistent copy of every table at its current version and of the stream
checkpoints (`io.backup`). The rule for erasures: **a restore never brings back a subject
erased after the backup was taken.** Two things make it hold:

- the tombstone lists (`restricted.<dataset>_erasures`) and the erasure receipts
  (`ops.erasures`) are never put back in time: a restore keeps them as they are now (a
  warehouse that lost them gets the backup's);
- after the tables are back, every tombstone is applied again (`erasure.reapply`): the rows of
  every subject erased since, by token or by raw record, are deleted and purged as `forget`
  does, and the vault's links with them.

Tombstones are tokens made with the key in use when the subject was erased; a backup's vault
must have been made with the current key for its ids to be found. A restore checks that
before it touches anything and otherwise stops, naming the key fingerprints: restore with the
backup's key in place, then `rotate-key` to the current one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from lakestory.config import Dataset, Settings
from lakestory.errors import WrongKeyError
from lakestory.io import ERASURES, RESTRICTED, Shell
from lakestory.io.backup import Manifest, read_manifest, restore
from lakestory.io.tables import stored
from lakestory.operations.erasure import Receipt, reapply
from lakestory.privacy.vault import FINGERPRINT, key_fingerprint

log = logging.getLogger("lakestory.backup")


def _never_restored(table: str) -> bool:
    """Erasure records, which must not go back in time."""
    layer, _, name = table.partition(".")
    return table == ERASURES.qualified or (layer == RESTRICTED and name.endswith("_erasures"))


@dataclass(frozen=True)
class Restored:
    manifest: Manifest
    receipts: list[Receipt]  # one per dataset with erasures, applied again

    def __str__(self) -> str:
        lines = [
            f"restored {len(self.manifest.tables)} tables as of "
            f"{self.manifest.taken_at:%Y-%m-%d %H:%M:%S} UTC"
        ]
        for r in self.receipts:
            lines.append(
                f"{r.dataset}: erasures applied again, {r.rows} rows removed "
                f"({len(r.tables)} tables); receipt {r.receipt_id} in {ERASURES}"
            )
        return "\n".join(lines)


def _check_vault_keys(shell: Shell, source: Path, manifest: Manifest, key: bytes) -> None:
    given = key_fingerprint(key)
    for copy in manifest.tables:
        layer, _, name = copy.table.partition(".")
        if layer != RESTRICTED or not name.endswith("_vault"):
            continue
        made = shell.properties_at(str(source / layer / name)).get(FINGERPRINT)
        if made is not None and made != given:
            raise WrongKeyError(
                f"{copy.table} in the backup {source} was made with the key of fingerprint "
                f"{made}, not the current one ({given}): nothing was restored. Restore with "
                "that key in place, then run `lakestory rotate-key` to the current one"
            )


def restore_backup(
    spark: SparkSession, settings: Settings, source: Path, datasets: list[Dataset], key: bytes
) -> Restored:
    """Put the backup's tables back, keep erasure records as they are now, and apply every
    tombstone of `datasets` again."""
    manifest = read_manifest(source)
    _check_vault_keys(Shell(spark, settings), source.resolve(), manifest, key)

    def keep(table: str) -> bool:
        return _never_restored(table) and stored(settings, table)

    restore(spark, settings, source, keep=keep)
    receipts = []
    for dataset in datasets:
        receipt = reapply(spark, settings, dataset, key)
        if receipt is not None:
            log.info("%s: erasures applied again: %d rows", dataset.name, receipt.rows)
            receipts.append(receipt)
    return Restored(manifest, receipts)
