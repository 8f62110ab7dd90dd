"""Landing files -> bronze Delta tables, incrementally and exactly once.

Each source is read with Structured Streaming's file source under `trigger(availableNow=True)`
with one checkpoint per table, into the Delta sink, whose commits are idempotent per batch. A
rerun with no new files commits nothing; a file is never ingested twice.

Bronze keeps every field as text, exactly as landed, with the reader's view of records it could
not parse in `_corrupt_record`; refine casts to the declared types.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from lakestory.config import Dataset, Settings, Source
from lakestory.io import TableRef, checkpoint_path, register, table_version

CORRUPT = "_corrupt_record"
METADATA_COLUMNS = ["_source_file", "_file_modification_time", "_ingested_at"]


def bronze_table(dataset: Dataset, source_name: str) -> TableRef:
    return TableRef("bronze", f"{dataset.name}_{source_name}")


def landing_path(settings: Settings, source: Source) -> str:
    return str(settings.root / "landing" / source.path)


def bronze_schema(source: Source) -> StructType:
    """Every declared column as a string, plus the reader's slot for unparseable records."""
    fields = [StructField(name, StringType()) for name in source.schema_]
    if source.format in ("csv", "json"):
        fields.append(StructField(CORRUPT, StringType()))
    return StructType(fields)


def read_landing_stream(spark: SparkSession, settings: Settings, source: Source) -> DataFrame:
    reader = spark.readStream.format(source.format).schema(bronze_schema(source))
    if source.format in ("csv", "json"):
        reader = reader.option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT)
    stream = reader.options(**source.options).load(landing_path(settings, source))
    return stream.select(
        "*",
        F.col("_metadata.file_path").alias("_source_file"),
        F.col("_metadata.file_modification_time").alias("_file_modification_time"),
        F.current_timestamp().alias("_ingested_at"),
    )


@dataclass(frozen=True)
class IngestResult:
    table: TableRef
    version_before: int | None
    version_after: int | None
    rows: int

    @property
    def changed(self) -> bool:
        return self.version_after != self.version_before


def ingest_source(
    spark: SparkSession, settings: Settings, dataset: Dataset, source_name: str
) -> IngestResult:
    """Append the source's new landing files to its bronze table; wait until they are in."""
    source = dataset.sources[source_name]
    table = bronze_table(dataset, source_name)
    before = table_version(spark, table)
    path = table.path(settings)
    query = (
        read_landing_stream(spark, settings, source)
        .writeStream.format("delta")
        .outputMode("append")
        .option("checkpointLocation", str(checkpoint_path(settings, table)))
        .trigger(availableNow=True)
        .queryName(f"ingest_{table.name}")
        .start(str(path))
    )
    query.awaitTermination()
    rows = sum(int(p.get("numInputRows", 0)) for p in query.recentProgress)
    if (path / "_delta_log").is_dir():
        register(spark, settings, table)
    return IngestResult(table, before, table_version(spark, table), rows)
