"""The vault mints one random id per token, once, however many runs mint at the same time."""

from __future__ import annotations

import re
import threading

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.config import Settings
from lakestory.config.models import Dataset
from lakestory.privacy.vault import mint_ids, vault_table, with_artificial_ids

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def _tokens(spark: SparkSession, names: list[str | None]) -> object:
    return spark.createDataFrame([(n,) for n in names], "token string")


def _ids(spark: SparkSession, settings: Settings, dataset: Dataset) -> dict[str, str]:
    vault = spark.read.format("delta").load(str(vault_table(dataset).path(settings)))
    rows = vault.collect()
    assert len(rows) == len({r.token for r in rows})  # one id per token
    return {r.token: r.id for r in rows}


def test_ids_are_random_and_minted_once(
    spark: SparkSession, settings: Settings, customers: Dataset
) -> None:
    dataset = customers.model_copy(update={"name": "vault_once"})
    first = ["t1", "t2", "t2", None, "t3", "t4", "t5"]
    assert mint_ids(spark, settings, dataset, _tokens(spark, first)) == 5
    ids = _ids(spark, settings, dataset)
    assert set(ids) == {"t1", "t2", "t3", "t4", "t5"}
    assert all(UUID4.fullmatch(i) for i in ids.values()) and len(set(ids.values())) == 5
    assert mint_ids(spark, settings, dataset, _tokens(spark, ["t4", "t5", "t6", "t7"])) == 2
    again = _ids(spark, settings, dataset)
    assert {t: again[t] for t in ids} == ids  # a known token keeps its id
    assert len(again) == 7
    assert mint_ids(spark, settings, dataset, _tokens(spark, first)) == 0
    assert _ids(spark, settings, dataset) == again


def test_concurrent_runs_never_mint_two_ids_for_one_token(
    spark: SparkSession, settings: Settings, customers: Dataset
) -> None:
    dataset = customers.model_copy(update={"name": "vault_race"})
    mint_ids(spark, settings, dataset, _tokens(spark, ["seed"]))  # the table exists
    batches = [[f"t{i}" for i in range(0, 300)], [f"t{i}" for i in range(150, 450)]]
    start = threading.Barrier(len(batches))
    minted: list[int] = []
    errors: list[BaseException] = []

    def run(names: list[str]) -> None:
        frame = _tokens(spark, list(names))
        start.wait()
        try:
            minted.append(mint_ids(spark, settings, dataset, frame))
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
    mint_ids(spark, settings, dataset, _tokens(spark, ["a", "b"]))
    ids = _ids(spark, settings, dataset)
    rows = spark.createDataFrame([("a", 1), ("b", 2), ("c", 3), (None, 4)], "tok string, n int")
    out = rows.transform(with_artificial_ids(spark, settings, dataset, {"tok": "person_id"}))
    assert out.columns == ["n", "person_id"]
    got = {r.n: r.person_id for r in out.orderBy(F.col("n")).collect()}
    assert got == {1: ids["a"], 2: ids["b"], 3: None, 4: None}
