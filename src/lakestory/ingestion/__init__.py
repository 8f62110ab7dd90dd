"""Sources and the bronze writer."""

from lakestory.ingestion.bronze import (
    METADATA_COLUMNS,
    IngestResult,
    bronze_table,
    ingest_source,
    landing_path,
)
from lakestory.ingestion.structured import CORRUPT, DECODE_ERROR, RESCUED

__all__ = [
    "CORRUPT",
    "DECODE_ERROR",
    "METADATA_COLUMNS",
    "RESCUED",
    "IngestResult",
    "bronze_table",
    "ingest_source",
    "landing_path",
]
