"""Names every layer shares: the lineage columns bronze adds to each row (and silver and
quarantine keep), the type of a transform, and a union of frames.

They live here, below every stage, so that a column is spelled once and a reader finds where a
row came from by grepping one constant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import reduce

from pyspark.sql import DataFrame

# a pure step of a pipeline, chained with `DataFrame.transform`
Transform = Callable[[DataFrame], DataFrame]

# where a bronze row came from, and when it was taken in
SOURCE_FILE = "_source_file"
FILE_MODIFICATION_TIME = "_file_modification_time"
INGESTED_AT = "_ingested_at"
BATCH_ID = "_batch_id"
# the SHA-256 of the raw record (of the file, for binary sources): what makes two rows copies
ROW_HASH = "_row_hash"
LINEAGE = [SOURCE_FILE, FILE_MODIFICATION_TIME, INGESTED_AT, BATCH_ID, ROW_HASH]

# what a reader could not make of a record, kept beside it rather than dropped
CORRUPT = "_corrupt_record"  # the raw text of a record that does not parse
RESCUED = "_rescued"  # fields of a record that the schema does not declare, as JSON
DECODE_ERROR = "_decode_error"  # bytes that are not text in the file's encoding


def union(frames: Iterable[DataFrame | None], allow_missing: bool = False) -> DataFrame | None:
    """The rows of every frame given (None ones skipped), matched by column name; None if no
    frame is given. With `allow_missing`, a column some frames lack is null in their rows."""
    kept = [f for f in frames if f is not None]
    if not kept:
        return None
    return reduce(lambda a, b: a.unionByName(b, allowMissingColumns=allow_missing), kept)
