"""Read a batch of landed CSV, JSON or Parquet files into bronze rows, losing nothing.

Bronze keeps every value as the text it landed as. Each file is read against what it actually
holds, not just what the config declares:

- CSV files are grouped by their header and their encoding, both sniffed from the file's first
  bytes, and every group is read with a schema of its own header, so columns are matched by
  name, whatever their order.
- JSON files are read with an inferred schema whose fields are then taken as text.
- Parquet files are grouped by their footer schema; a column whose physical type is of another
  family than the declared one (text, number, boolean, time) is reported as a type change.

A declared column a file lacks becomes null; a column the config does not declare goes to
`_rescued` (a JSON object) or, under `schema_evolution: add_new_columns`, becomes a bronze column
of its own. Both are reported as schema drift. A record the reader cannot parse keeps its raw
text in `_corrupt_record`. A file that is not valid in its declared encoding is read as
ISO-8859-1, which maps every byte to one character so no byte is lost, and its rows are flagged
in `_decode_error`; so is any row in which the decoder had to replace bytes.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import reduce

from pyspark.sql import Column, DataFrame, DataFrameReader, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DataType,
    DateType,
    MapType,
    NumericType,
    StringType,
    StructField,
    StructType,
    TimestampNTZType,
    TimestampType,
)

from lakestory.config import Source
from lakestory.ingestion.landing import head

CORRUPT = "_corrupt_record"
RESCUED = "_rescued"
DECODE_ERROR = "_decode_error"
ROW_HASH = "_row_hash"
FILE_COLUMNS = ["_source_file", "_file_modification_time"]
FLAG_COLUMNS = [RESCUED, CORRUPT, DECODE_ERROR]
FALLBACK_ENCODING = "ISO-8859-1"
REPLACEMENT = "\ufffd"
_SEP, _NULL = "\u001f", "\u0000"  # keep the row hash unambiguous

# byte-order mark -> the Java charset that decodes it (and drops the mark)
_BOMS = [
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF8, "UTF-8"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
]


@dataclass(frozen=True)
class Drift:
    """A difference between what a file holds and what bronze expects."""

    files: tuple[str, ...]
    column: str
    change: str  # new_column | missing_column | type_changed
    detail: str
    action: str  # rescued | added | null | kept_as_text


@dataclass(frozen=True)
class Decoding:
    encoding: str  # the charset the file is read with
    error: str | None = None  # why that is not the declared one, if it is not clean


@dataclass
class StructuredBatch:
    frame: DataFrame | None
    drift: list[Drift] = field(default_factory=list)
    encodings: dict[str, str] = field(default_factory=dict)  # file -> charset read with
    empty: list[str] = field(default_factory=list)  # files with no bytes
    added_columns: list[str] = field(default_factory=list)


def declared_encoding(source: Source) -> str:
    return source.options.get("encoding", source.options.get("charset", "UTF-8"))


def sniff_decoding(first_bytes: bytes, declared: str) -> Decoding:
    """The charset to read a file with: its byte-order mark, else the declared charset if the
    first bytes are valid in it, else ISO-8859-1 (lossless) with the reason."""
    for bom, charset in _BOMS:
        if first_bytes.startswith(bom):
            return Decoding(charset)
    try:
        decoder = codecs.getincrementaldecoder(declared)(errors="strict")
    except LookupError:
        return Decoding(declared)  # a charset Java knows and Python does not: trust the config
    try:
        decoder.decode(first_bytes, final=False)
    except UnicodeDecodeError as exc:
        return Decoding(
            FALLBACK_ENCODING,
            f"bytes not valid {declared} (first at offset {exc.start}); "
            f"read as {FALLBACK_ENCODING}, every byte kept",
        )
    return Decoding(declared)


def python_codec(charset: str) -> str:
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return "utf-8"


def sniff_csv_header(first_bytes: bytes, charset: str, options: dict[str, str]) -> list[str]:
    """The column names in the first record of a CSV file."""
    text = first_bytes.decode(python_codec(charset), errors="replace").lstrip("\ufeff")
    sep = options.get("sep", options.get("delimiter", ","))
    quote = options.get("quote", '"')
    escape = options.get("escape", "\\")
    reader = csv.reader(
        io.StringIO(text),
        delimiter=sep,
        quotechar=quote or None,
        escapechar=None if escape == quote else escape,
        doublequote=escape == quote,
    )
    return [name.strip() for name in next(reader, [])]


def _unique_names(header: list[str]) -> list[str]:
    seen: dict[str, int] = defaultdict(int)
    out = []
    for i, name in enumerate(header):
        name = name or f"_c{i}"
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def _as_text(col: Column, dtype: DataType) -> Column:
    if isinstance(dtype, (StructType, ArrayType, MapType)):
        return F.to_json(col)
    return col.cast("string")


def _family(dtype: DataType | str) -> str:
    """Coarse type families: a value moving between them is a type change."""
    if isinstance(dtype, str):
        return {
            "string": "text",
            "boolean": "boolean",
            "date": "time",
            "timestamp": "time",
        }.get(dtype, "number")
    if isinstance(dtype, StringType):
        return "text"
    if isinstance(dtype, NumericType):
        return "number"
    if isinstance(dtype, BooleanType):
        return "boolean"
    if isinstance(dtype, (DateType, TimestampType, TimestampNTZType)):
        return "time"
    return "nested"


def _shape(
    df: DataFrame,
    found: Mapping[str, tuple[str, DataType]],
    source: Source,
    bronze_columns: list[str],
    files: tuple[str, ...],
    batch: StructuredBatch,
) -> DataFrame:
    """Select bronze's columns from a frame whose columns `found` maps (name -> column, type)."""
    cols, rescued = [], []
    for name in bronze_columns:
        if name in found:
            physical, dtype = found[name]
            cols.append(_as_text(F.col(physical), dtype).alias(name))
        else:
            cols.append(F.lit(None).cast("string").alias(name))
            if name in source.schema_:
                batch.drift.append(Drift(files, name, "missing_column", "not in file", "null"))
    for name, (physical, dtype) in found.items():
        if name in bronze_columns:
            continue
        if source.schema_evolution == "add_new_columns":
            cols.append(_as_text(F.col(physical), dtype).alias(name))
            if name not in batch.added_columns:
                batch.added_columns.append(name)
            batch.drift.append(Drift(files, name, "new_column", dtype.simpleString(), "added"))
        else:
            rescued.append(_as_text(F.col(physical), dtype).alias(name))
            batch.drift.append(Drift(files, name, "new_column", dtype.simpleString(), "rescued"))
    rescued_json = F.nullif(F.to_json(F.struct(*rescued)), F.lit("{}")) if rescued else F.lit(None)
    corrupt = F.col(CORRUPT) if CORRUPT in df.columns else F.lit(None)
    return df.select(
        *cols,
        rescued_json.cast("string").alias(RESCUED),
        corrupt.cast("string").alias(CORRUPT),
        F.col("_metadata.file_path").alias("_source_file"),
        F.col("_metadata.file_modification_time").alias("_file_modification_time"),
    )


def _flag_and_hash(df: DataFrame, decoding: Decoding | None) -> DataFrame:
    """Add `_decode_error` and `_row_hash` (sha256 over the row's text), sharing one string."""
    content = [c for c in df.columns if c not in FILE_COLUMNS]
    parts = [F.coalesce(F.col(c), F.lit(_NULL)) for c in content]
    joined = F.concat_ws(_SEP, *parts)
    if decoding is None:
        flag = F.lit(None)
    elif decoding.error:
        flag = F.lit(decoding.error)
    else:
        replaced = f"bytes not valid {decoding.encoding} were replaced"
        flag = F.when(F.instr(joined, REPLACEMENT) > 0, F.lit(replaced))
    return df.select(
        "*", flag.cast("string").alias(DECODE_ERROR), F.sha2(joined, 256).alias(ROW_HASH)
    )


def _corrupt_schema(fields: list[StructField]) -> StructType:
    return StructType([*fields, StructField(CORRUPT, StringType())])


def _sniffed(
    spark: SparkSession, source: Source, files: list[str], batch: StructuredBatch
) -> Iterator[tuple[str, bytes, Decoding]]:
    """Each non-empty file with its first bytes and the charset to read it with; empty files
    are noted in `batch.empty`."""
    declared = declared_encoding(source)
    for path in files:
        first = head(spark, path)
        if first:
            yield path, first, sniff_decoding(first, declared)
        else:
            batch.empty.append(path)


def _text_reader(spark: SparkSession, source: Source, decoding: Decoding) -> DataFrameReader:
    """A reader of the source's text format that keeps unparseable records' raw text."""
    return (
        spark.read.format(source.format)
        .options(**source.options)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT)
        .option("encoding", decoding.encoding)
    )


def _read_csv(
    spark: SparkSession, source: Source, files: list[str], bronze_columns: list[str]
) -> StructuredBatch:
    batch = StructuredBatch(None)
    header = source.options.get("header", "false").lower() == "true"
    groups: dict[tuple[tuple[str, ...], Decoding], list[str]] = defaultdict(list)
    for path, first, decoding in _sniffed(spark, source, files, batch):
        names = tuple(sniff_csv_header(first, decoding.encoding, source.options)) if header else ()
        groups[(names, decoding)].append(path)
    frames = []
    for (names, decoding), group in groups.items():
        columns = _unique_names(list(names)) if header else list(source.schema_)
        physical = [f"__c{i}" for i in range(len(columns))]
        reader = _text_reader(spark, source, decoding).schema(
            _corrupt_schema([StructField(p, StringType()) for p in physical])
        )
        if decoding.encoding.startswith("UTF-16") or decoding.encoding.startswith("UTF-32"):
            reader = reader.option("multiLine", "true")  # line splitting is byte-based otherwise
        df = reader.load(group)
        found = {c: (p, StringType()) for c, p in zip(columns, physical, strict=True)}
        shaped = _shape(df, found, source, bronze_columns, tuple(group), batch)
        frames.append(_flag_and_hash(shaped, decoding))
        batch.encodings.update({path: decoding.encoding for path in group})
    batch.frame = _union(frames)
    return batch


def _read_json(
    spark: SparkSession, source: Source, files: list[str], bronze_columns: list[str]
) -> StructuredBatch:
    batch = StructuredBatch(None)
    multiline = source.options.get("multiLine", "false").lower() == "true"
    groups: dict[Decoding, list[str]] = defaultdict(list)
    for path, _, decoding in _sniffed(spark, source, files, batch):
        groups[decoding].append(path)
    frames = []
    for decoding, group in groups.items():
        reader = _text_reader(spark, source, decoding)
        if not multiline:
            reader = reader.option("lineSep", "\n")
        inferred = reader.load(group).schema  # a pass over the data, for drift and rescue
        fields = [f for f in inferred.fields if f.name != CORRUPT]
        df = reader.schema(
            _corrupt_schema([StructField(f.name, StringType()) for f in fields])
        ).load(group)
        text = {f.name: (f.name, StringType()) for f in fields}
        shaped = _shape(df, text, source, bronze_columns, tuple(group), batch)
        frames.append(_flag_and_hash(shaped, decoding))
        batch.encodings.update({path: decoding.encoding for path in group})
    batch.frame = _union(frames)
    return batch


def _type_drift(
    found: dict[str, tuple[str, DataType]],
    source: Source,
    files: tuple[str, ...],
    batch: StructuredBatch,
) -> None:
    for name, (_, dtype) in found.items():
        declared = source.schema_.get(name)
        if declared and _family(declared) not in ("text", _family(dtype)):
            detail = f"declared {declared}, found {dtype.simpleString()}"
            batch.drift.append(Drift(files, name, "type_changed", detail, "kept_as_text"))


def _read_parquet(
    spark: SparkSession, source: Source, files: list[str], bronze_columns: list[str]
) -> StructuredBatch:
    batch = StructuredBatch(None)
    groups: dict[str, tuple[StructType, list[str]]] = {}
    for path in files:
        schema = spark.read.options(**source.options).parquet(path).schema
        groups.setdefault(schema.json(), (schema, []))[1].append(path)
    frames = []
    for schema, group in groups.values():
        df = spark.read.options(**source.options).parquet(*group)
        found = {f.name: (f.name, f.dataType) for f in schema.fields}
        shaped = _shape(df, found, source, bronze_columns, tuple(group), batch)
        _type_drift(found, source, tuple(group), batch)
        frames.append(_flag_and_hash(shaped, None))
        batch.encodings.update({path: "parquet" for path in group})
    batch.frame = _union(frames)
    return batch


def _union(frames: list[DataFrame]) -> DataFrame | None:
    if not frames:
        return None
    return reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)


READERS = {"csv": _read_csv, "json": _read_json, "parquet": _read_parquet}


def read_structured(
    spark: SparkSession, source: Source, files: list[str], bronze_columns: list[str]
) -> StructuredBatch:
    """Bronze rows for `files`: `bronze_columns` (as text, in that order), then any columns
    added by schema evolution, `_rescued`, `_corrupt_record`, `_decode_error`, `_source_file`,
    `_file_modification_time` and `_row_hash`."""
    batch = READERS[source.format](spark, source, files, bronze_columns)
    if batch.frame is not None:
        order = [*bronze_columns, *batch.added_columns, *FLAG_COLUMNS, *FILE_COLUMNS, ROW_HASH]
        batch.frame = batch.frame.select(*order)
    return batch
