"""The landing zone through Hadoop's FileSystem API, so that the same code reads a local folder,
HDFS or an object store: list files, and read the first bytes of one (CSV headers, BOMs).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession

SNIFF_BYTES = 64 * 1024


@dataclass(frozen=True)
class LandedFile:
    path: str
    size: int
    modification_ms: int


def _fs(spark: SparkSession, path: str) -> tuple[Any, Any]:
    jvm = spark._jvm
    assert jvm is not None
    hpath = jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark._jsc.hadoopConfiguration()), hpath


def visible(name: str, glob: str | None) -> bool:
    """Spark's file source ignores names starting with `_` or `.`; so do we."""
    if name.startswith(("_", ".")):
        return False
    return glob is None or fnmatch.fnmatch(name, glob)


def list_files(spark: SparkSession, folder: str, glob: str | None = None) -> list[LandedFile]:
    """Every visible file under `folder`, recursively; an absent folder has none."""
    fs, hpath = _fs(spark, folder)
    if not fs.exists(hpath):
        return []
    out = []
    it = fs.listFiles(hpath, True)
    while it.hasNext():
        status = it.next()
        p = status.getPath()
        if visible(p.getName(), glob) and not _hidden_parent(p.toString(), folder):
            out.append(LandedFile(p.toString(), status.getLen(), status.getModificationTime()))
    return out


def _hidden_parent(path: str, folder: str) -> bool:
    relative = path.split(folder.rstrip("/"), 1)[-1]
    return any(part.startswith(("_", ".")) for part in relative.split("/")[:-1] if part)


def head(spark: SparkSession, path: str, n: int = SNIFF_BYTES) -> bytes:
    """The first `n` bytes of a file (fewer if it is shorter)."""
    fs, hpath = _fs(spark, path)
    stream = fs.open(hpath)
    try:
        return bytes(stream.readNBytes(n))
    finally:
        stream.close()


def read_text(spark: SparkSession, path: str) -> str | None:
    """A small text file's content, or None if it does not exist."""
    fs, hpath = _fs(spark, path)
    if not fs.exists(hpath):
        return None
    return head(spark, path, 1 << 20).decode("utf-8")
