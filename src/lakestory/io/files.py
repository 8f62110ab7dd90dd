"""The landing zone through Hadoop's FileSystem API, so that the same code reads a local folder,
HDFS or an object store: list files, and read the first bytes of one (CSV headers, BOMs).
"""

from __future__ import annotations

import fnmatch
import os
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


def _local(path: str) -> str | None:
    """The local filesystem path of a `file:` URI (as Hadoop writes them), else None."""
    if path.startswith("file:"):
        return "/" + path[len("file:") :].lstrip("/")
    return None


def _qualified(spark: SparkSession, path: str) -> str:
    """`path` with its filesystem's scheme: a bare path means the default filesystem, which on
    a cluster need not be the local one."""
    if ":" in path.split("/", 1)[0]:
        return path
    fs, hpath = _fs(spark, path)
    return str(fs.makeQualified(hpath).toString())


def head(spark: SparkSession, path: str, n: int = SNIFF_BYTES) -> bytes:
    """The first `n` bytes of a file (fewer if it is shorter). A local file is read directly,
    which spares a round trip through the JVM (about 50 ms a file)."""
    local = _local(_qualified(spark, path))
    if local is not None:
        with open(local, "rb") as f:
            return f.read(n)
    fs, hpath = _fs(spark, path)
    stream = fs.open(hpath)
    try:
        return bytes(stream.readNBytes(n))
    finally:
        stream.close()


def read_text(spark: SparkSession, path: str, limit: int = 1 << 20) -> str | None:
    """A small text file's content (its first `limit` bytes), or None if it does not exist."""
    path = _qualified(spark, path)  # once: `head` then finds the scheme there
    local = _local(path)
    if local is not None:
        if not os.path.isfile(local):
            return None
    else:
        fs, hpath = _fs(spark, path)
        if not fs.exists(hpath):
            return None
    return head(spark, path, limit).decode("utf-8")


def write_text(spark: SparkSession, path: str, text: str) -> None:
    """Write a small text file (replacing one that is there), on whatever filesystem holds it."""
    fs, hpath = _fs(spark, _qualified(spark, path))
    stream = fs.create(hpath, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()
