"""A micro-batch of a Delta stream read again from its data files: the same rows, or the
batch itself where the files alone would not give them."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from lakestory.io.commits import rescanned


def _batches(spark: SparkSession, table: str, checkpoint: Path) -> list[tuple[bool, list, list]]:
    """For each micro-batch of a stream from `table` (one data file a batch): whether it was
    rescanned, its rows as rescanned, and its rows as Spark handed them over."""
    out = []

    def each(batch: DataFrame, batch_id: int) -> None:
        again = rescanned(spark, batch, table)
        out.append((again is not batch, sorted(again.collect()), sorted(batch.collect())))

    query = (
        spark.readStream.format("delta")
        .option("maxFilesPerTrigger", 1)
        .load(table)
        .writeStream.foreachBatch(each)
        .option("checkpointLocation", str(checkpoint))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    return out


def test_a_batch_is_read_from_its_files_with_the_same_rows(
    spark: SparkSession, tmp_path: Path
) -> None:
    table = str(tmp_path / "plain")
    for start in (0, 40, 90):  # three appends, one file each
        rows = spark.range(start, start + 40 + start // 10, numPartitions=1)
        rows.selectExpr("cast(id as string) as id", "id % 7 as k").write.format("delta").mode(
            "append"
        ).save(table)
    batches = _batches(spark, table, tmp_path / "checkpoint")
    assert len(batches) == 3
    for was_rescanned, again, given in batches:
        assert was_rescanned
        assert again == given and again


def test_a_file_with_deleted_rows_is_not_read_from_its_file(
    spark: SparkSession, tmp_path: Path
) -> None:
    table = str(tmp_path / "deleted")
    spark.sql(
        f"CREATE TABLE delta.`{table}` (id string) USING DELTA "
        "TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')"
    )
    spark.range(0, 30, numPartitions=1).selectExpr("cast(id as string) as id").write.format(
        "delta"
    ).mode("append").save(table)
    spark.sql(f"DELETE FROM delta.`{table}` WHERE id < '2'")  # a deletion vector, not a rewrite
    batches = _batches(spark, table, tmp_path / "checkpoint")
    assert len(batches) == 1
    was_rescanned, again, given = batches[0]
    assert not was_rescanned
    assert len(again) == len(given) == 30 - 12  # '0', '1' and '10' ... '19'
