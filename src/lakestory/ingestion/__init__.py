"""Sources and the bronze writer."""

from lakestory.ingestion.bronze import (
    CORRUPT,
    METADATA_COLUMNS,
    IngestResult,
    bronze_schema,
    bronze_table,
    ingest_source,
)

__all__ = [
    "CORRUPT",
    "METADATA_COLUMNS",
    "IngestResult",
    "bronze_schema",
    "bronze_table",
    "ingest_source",
]
