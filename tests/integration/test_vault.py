"""The vault mints one random id per token, once, however many runs mint at the same time."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.config import Settings
from lakestory.config.models import Dataset
from lakestory.errors import WrongKeyError
from lakestory.io import Catalog, Shell
from lakestory.io.tables import clear_cut_log
from lakestory.privacy.vault import mint_ids, read_vault, with_artificial_ids

KEY = b"vault-test-key-0123456789abcdef0123"

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def _tokens(spark: SparkSession, names: list[str | None]) -> object:
    return spark.createDataFrame([(n,) for n in names], "token string")


def _mint(
    spark: SparkSession, settings: Settings, dataset: Dataset, tokens: object, key: bytes
) -> int:
    return mint_ids(Shell(spark, settings), Catalog(dataset, settings), tokens, key)  # type: ignore[arg-type]


def _ids(spark: SparkSession, settings: Settings, dataset: Dataset) -> dict[str, str]:
    vault = Shell(spark, settings).read(Catalog(dataset).vault())
    rows = vault.collect()
    assert len(rows) == len({r.token for r in rows})  # one id per token
    return {r.token: r.id for r in rows}


def test_ids_are_random_and_minted_once(
    spark: SparkSession, settings: Settings, customers: Dataset
) -> None:
    dataset = customers.model_copy(update={"name": "vault_once"})
    first = ["t1", "t2", "t2", None, "t3", "t4", "t5"]
    assert _mint(spark, settings, dataset, _tokens(spark, first), KEY) == 5
    ids = _ids(spark, settings, dataset)
    assert set(ids) == {"t1", "t2", "t3", "t4", "t5"}
    assert all(UUID4.fullmatch(i) for i in ids.values()) and len(set(ids.values())) == 5
    assert (
        mint_ids(
            Shell(spark, settings),
            Catalog(dataset, settings),
            _tokens(spark, ["t4", "t5", "t6", "t7"]),
            KEY,
        )
        == 2
    )
    again = _ids(spark, settings, dataset)
    assert {t: again[t] for t in ids} == ids  # a known token keeps its id
    assert len(again) == 7
    assert _mint(spark, settings, dataset, _tokens(spark, first), KEY) == 0
    assert _ids(spark, settings, dataset) == again


def test_a_vault_whose_first_commit_was_cut_is_created_on_the_rerun(
    spark: SparkSession, settings: Settings, customers: Dataset
) -> None:
    # what a kill during the vault's creation leaves: Delta's folders, no commit (seen in
    # the chaos run: the rerun then failed with DELTA_TABLE_NOT_FOUND)
    dataset = customers.model_copy(update={"name": "vault_cut"})
    log = Path(Shell(spark, settings).location(Catalog(dataset).vault())) / "_delta_log"
    (log / "_staged_commits").mkdir(parents=True)
    assert _mint(spark, settings, dataset, _tokens(spark, ["t1", "t2"]), KEY) == 2
    assert set(_ids(spark, settings, dataset)) == {"t1", "t2"}
    assert clear_cut_log(spark, str(log.parent)) is False  # a log with commits stays
    assert set(_ids(spark, settings, dataset)) == {"t1", "t2"}


def test_concurrent_runs_never_mint_two_ids_for_one_token(
    spark: SparkSession, settings: Settings, customers: Dataset
) -> None:
    dataset = customers.model_copy(update={"name": "vault_race"})
    mint_ids(
        Shell(spark, settings), Catalog(dataset, settings), _tokens(spark, ["seed"]), KEY
    )  # the table exists
    batches = [[f"t{i}" for i in range(0, 300)], [f"t{i}" for i in range(150, 450)]]
    start = threading.Barrier(len(batches))
    minted: list[int] = []
    errors: list[BaseException] = []

    def run(names: list[str]) -> None:
        frame = _tokens(spark, list(names))
        start.wait()
        try:
            minted.append(_mint(spark, settings, dataset, frame, KEY))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    ids = _ids(spark, settings, dataset)
    assert len(ids) == 451 and sum(minted) == 450
    assert len(set(ids.values())) == 451


def test_tokens_are_replaced_by_their_ids(
    spark: SparkSession, settings: Settings, customers: Dataset
) -> None:
    dataset = customers.model_copy(update={"name": "vault_lookup"})
    _mint(spark, settings, dataset, _tokens(spark, ["a", "b"]), KEY)
    ids = _ids(spark, settings, dataset)
    rows = spark.createDataFrame([("a", 1), ("b", 2), ("c", 3), (None, 4)], "tok string, n int")
    vault = read_vault(Shell(spark, settings), Catalog(dataset, settings))
    out = rows.transform(with_artificial_ids(vault, {"tok": "person_id"}))
    assert out.columns == ["n", "person_id"]
    got = {r.n: r.person_id for r in out.orderBy(F.col("n")).collect()}
    assert got == {1: ids["a"], 2: ids["b"], 3: None, 4: None}


def test_a_vault_refuses_tokens_of_another_key(
    spark: SparkSession, settings: Settings, customers: Dataset
) -> None:
    dataset = customers.model_copy(update={"name": "vault_keyed"})
    _mint(spark, settings, dataset, _tokens(spark, ["a"]), KEY)
    other = b"another-key-0123456789abcdef0123456"
    with pytest.raises(WrongKeyError, match="fingerprint") as caught:
        _mint(spark, settings, dataset, _tokens(spark, ["b"]), other)
    assert KEY.decode() not in str(caught.value) and other.decode() not in str(caught.value)
    assert len(_ids(spark, settings, dataset)) == 1
