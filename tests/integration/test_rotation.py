"""`rotate-key`: the vault's tokens re-made under a new key, no artificial id changed."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from lakestory.config import Settings
from lakestory.errors import WrongKeyError
from lakestory.operations.erasure import forget
from lakestory.operations.ingest import ingest_source
from lakestory.operations.refine import refine_source
from lakestory.operations.rotation import rotate_key
from tests.integration.test_refine import dataset, land

pytestmark = pytest.mark.slow

OLD = b"rotation-old-key-0123456789abcdef"
NEW = b"rotation-new-key-fedcba9876543210"


def _token(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def test_rotation_keeps_every_id_and_the_old_key_is_refused(
    spark: SparkSession, settings: Settings, tmp_path: Path
) -> None:
    ds = dataset("rotated")
    land(spark, settings, ds)
    refine_source(spark, settings, ds, "people", OLD, "run-1")
    silver = spark.read.table("silver.rotated_people")
    before = {r.id_pseudonym for r in silver.collect()}
    vault_before = {r.id: r.token for r in spark.read.table("restricted.rotated_vault").collect()}
    assert len(before) == 3

    subjects = tmp_path / "subjects.csv"
    subjects.write_text("id\n3\n")  # person 3 is erased; landing still holds their record
    forget(spark, settings, ds, subjects, OLD)
    erased = next(i for i, t in vault_before.items() if t == _token(OLD, "3"))
    del vault_before[erased]
    before.discard(erased)

    rotation = rotate_key(spark, settings, ds, OLD, NEW)

    vault = {r.id: r.token for r in spark.read.table("restricted.rotated_vault").collect()}
    assert vault.keys() == vault_before.keys()  # every id kept
    assert rotation.ids == rotation.rekeyed == len(vault) and rotation.tombstones == 1
    # each id's token is now the new key's token of the same identifier
    by_old = {_token(OLD, str(i)): _token(NEW, str(i)) for i in range(1, 8)}
    assert all(vault[i] == by_old[vault_before[i]] for i in vault)
    with pytest.raises(WrongKeyError, match="rotate-key"):
        refine_source(spark, settings, ds, "people", OLD, "run-2")

    # a later record of person 1 and a new person 8, refined under the new key
    folder = settings.root / "landing" / ds.name / "people"
    (folder / "b.csv").write_text(
        "id,name,age,country,updated\n1,Ann Ames,35,NL,2025-01-01\n8,Hal Hu,50,BE,2025-01-01\n"
        "3,Cy Cole,18,NL,2025-01-01\n"  # a new record of the erased person: kept out
    )
    with pytest.MonkeyPatch.context() as mp:  # ingest reads the key lakestory is given
        mp.setenv("LAKESTORY_TOKEN_KEY", OLD.decode())
        with pytest.raises(WrongKeyError):  # the old key would miss the tombstones
            ingest_source(spark, settings, ds, "people")
        mp.setenv("LAKESTORY_TOKEN_KEY", NEW.decode())
        ingest_source(spark, settings, ds, "people")
    refine_source(spark, settings, ds, "people", NEW, "run-3")
    after = {r.id_pseudonym: r.age for r in spark.read.table("silver.rotated_people").collect()}
    assert before < after.keys() and len(after) == 3  # person 1 kept their id; 3 stays out
    assert spark.read.table("bronze.rotated_people").where("id = '3'").count() == 0
    ann = next(i for i, t in vault_before.items() if t == _token(OLD, "1"))
    assert after[ann] == 35
