"""Storage: the catalog of names, the shell that writes, Delta versions, checkpoints, files.

Nothing else in lakestory knows where or how a table is stored.
"""

from lakestory.io.catalog import (
    ERASURES,
    INGESTION_FILES,
    INGESTION_RUNS,
    QUALITY_METRICS,
    SCHEMA_DRIFT,
    STAGE_RUNS,
    Catalog,
    checkpoint_path,
)
from lakestory.io.local import local_frame
from lakestory.io.shell import Shell, StreamTxns, Txn
from lakestory.io.tables import (
    LAYERS,
    RESTRICTED,
    TableRef,
    ensure_layers,
    exists,
    log_version,
    read,
    register,
    table_version,
)

__all__ = [
    "ERASURES",
    "INGESTION_FILES",
    "INGESTION_RUNS",
    "LAYERS",
    "QUALITY_METRICS",
    "RESTRICTED",
    "SCHEMA_DRIFT",
    "STAGE_RUNS",
    "Catalog",
    "Shell",
    "StreamTxns",
    "TableRef",
    "Txn",
    "checkpoint_path",
    "ensure_layers",
    "exists",
    "local_frame",
    "log_version",
    "read",
    "register",
    "table_version",
]
