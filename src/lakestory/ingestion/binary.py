"""Read a batch of landed binary files (images, audio, text documents) into bronze rows.

One row per file, with metadata derived from the content on the executors (see `media`): sha256,
size, MIME type, image size and mode, audio duration, sample rate and channels, text length and
encoding. A file that does not decode is kept with the reason in `error`. The content is kept
inline up to the source's `max_inline_bytes`; above that, or with `content: pointer`, bronze
keeps only the pointer (`_source_file`) and the sha256 to check the file against.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.columns import FILE_MODIFICATION_TIME, SOURCE_FILE
from lakestory.config import BinarySource
from lakestory.ingestion.media import describe_batches, described_schema
from lakestory.io import local_frame
from lakestory.io.files import LandedFile


def read_binary(spark: SparkSession, source: BinarySource, files: list[LandedFile]) -> DataFrame:
    kind = source.kind
    keep = source.content == "inline"
    limit = source.max_inline_bytes

    def describe(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return describe_batches(batches, kind, keep, limit)

    raw = spark.read.format("binaryFile").load([f.path for f in files])
    described = raw.mapInPandas(describe, described_schema())
    modified = local_frame(
        spark,
        [(f.path, datetime.fromtimestamp(f.modification_ms / 1000, timezone.utc)) for f in files],
        f"path string, {FILE_MODIFICATION_TIME} timestamp",
    )
    return described.join(F.broadcast(modified), "path", "left").withColumnRenamed(
        "path", SOURCE_FILE
    )
