"""Storage: table names, paths, Delta reads/writes, versions, checkpoints, run records.

Nothing else in lakestory knows where or how a table is stored.
"""

from lakestory.io.local import local_frame
from lakestory.io.tables import (
    LAYERS,
    TableRef,
    append,
    checkpoint_path,
    ensure_layers,
    exists,
    log_version,
    overwrite,
    read,
    register,
    table_version,
)

__all__ = [
    "LAYERS",
    "TableRef",
    "append",
    "checkpoint_path",
    "ensure_layers",
    "exists",
    "local_frame",
    "log_version",
    "overwrite",
    "read",
    "register",
    "table_version",
]
