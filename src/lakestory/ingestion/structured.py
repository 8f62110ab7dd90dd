"""Read a batch of landed CSV, JSON or Parquet files into bronze rows, losing nothing.

Bronze keeps every value as the text it landed as. Each file is read against what it actually
holds, not just what the config declares:

- CSV files are grouped by their header and their encoding, both sniffed from the file's first
  bytes, and every group is read with a schema of its own header, so columns are matched by
  name, whatever their order.
- JSON files are read with an inferred schema whose fields are then taken as text.
- Parquet files are grouped by their footer schema; a column whose physical type is of another
  family than the declared one (text, number, boolean, time) is reported as a type change.

Text formats carry no types, so a changed type is found by casting a sample: the records in each
file's first bytes (already read to sniff it). A declared column whose sampled values mostly fail
to cast is reported as a type change; its values stay text.

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
import json
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

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

from lakestory.columns import (
    CORRUPT,
    DECODE_ERROR,
    FILE_MODIFICATION_TIME,
    RESCUED,
    ROW_HASH,
    SOURCE_FILE,
    union,
)
from lakestory.config import Source
from lakestory.io import local_frame
from lakestory.io.files import SNIFF_BYTES, head

FILE_COLUMNS = [SOURCE_FILE, FILE_MODIFICATION_TIME]
FLAG_COLUMNS = [RESCUED, CORRUPT, DECODE_ERROR]
FALLBACK_ENCODING = "ISO-8859-1"
REPLACEMENT = "\ufffd"
_SEP, _NULL = "\u001f", "\u0000"  # keep the row hash unambiguous
# a declared column whose sampled values mostly fail to cast to its type has changed type
TYPE_CHANGE_SHARE = 0.5
TYPE_SAMPLE_ROWS = 1000  # per file, at most

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
    # file -> records from its first bytes, as text, for the type check
    samples: dict[str, list[dict[str, str | None]]] = field(default_factory=dict)


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


def _csv_reader(text: str, options: dict[str, str]) -> Iterator[list[str]]:
    """Python's CSV reader with Spark's CSV options."""
    quote = options.get("quote", '"')
    escape = options.get("escape", "\\")
    return csv.reader(
        io.StringIO(text),
        delimiter=options.get("sep", options.get("delimiter", ",")),
        quotechar=quote or None,
        escapechar=None if escape == quote else escape,
        doublequote=escape == quote,
    )


def _head_text(first_bytes: bytes, charset: str) -> str:
    return first_bytes.decode(python_codec(charset), errors="replace").lstrip("\ufeff")


def _whole(first_bytes: bytes) -> bool:
    return len(first_bytes) < SNIFF_BYTES


def sniff_csv_header(first_bytes: bytes, charset: str, options: dict[str, str]) -> list[str]:
    """The column names in the first record of a CSV file."""
    reader = _csv_reader(_head_text(first_bytes, charset), options)
    return [name.strip() for name in next(reader, [])]


def sample_csv(
    first_bytes: bytes, charset: str, options: dict[str, str], columns: list[str]
) -> list[dict[str, str | None]]:
    """The complete records in a CSV file's first bytes, by column name, with Spark's null
    value as None; records with another number of fields than `columns` (corrupt ones) are
    left out."""
    null = options.get("nullValue", "")
    reader = _csv_reader(_head_text(first_bytes, charset), options)
    try:
        records = list(reader)
    except csv.Error:
        return []
    if options.get("header", "false").lower() == "true":
        records = records[1:]
    if not _whole(first_bytes):
        records = records[:-1]  # cut short by the sniff
    return [
        {c: None if v == null else v for c, v in zip(columns, r, strict=True)}
        for r in records
        if len(r) == len(columns)
    ]


def _json_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def sample_json(first_bytes: bytes, charset: str, multiline: bool) -> list[dict[str, str | None]]:
    """The complete JSON objects in a file's first bytes, their values as text."""
    text = _head_text(first_bytes, charset)
    objects: list[object] = []
    if multiline:
        if _whole(first_bytes):
            try:
                doc = json.loads(text)
            except ValueError:
                return []
            objects = doc if isinstance(doc, list) else [doc]
    else:
        lines = text.splitlines()
        if not _whole(first_bytes):
            lines = lines[:-1]
        for line in lines:
            try:
                objects.append(json.loads(line))
            except ValueError:
                continue  # a corrupt record: bronze keeps it, the sample does not need it
    return [{k: _json_text(v) for k, v in o.items()} for o in objects if isinstance(o, dict)]


def sampled_type_changes(
    spark: SparkSession,
    declared: Mapping[str, str],
    samples: Mapping[str, list[dict[str, str | None]]],
) -> list[Drift]:
    """Per file, the declared non-text columns whose sampled values mostly fail to cast.

    The casts are Spark's own (`try_cast`), on at most TYPE_SAMPLE_ROWS records per file,
    handed to Spark as a local frame."""
    typed = [(name, dtype) for name, dtype in declared.items() if dtype != "string"]
    rows = [
        (path, *[record.get(name) for name, _ in typed])
        for path, records in samples.items()
        for record in records[:TYPE_SAMPLE_ROWS]
    ]
    if not typed or not rows:
        return []
    names = ["file"] + [f"c{i}" for i in range(len(typed))]
    schema = StructType([StructField(n, StringType()) for n in names])
    local = local_frame(spark, rows, schema)
    checks = []
    for i, (_, dtype) in enumerate(typed):
        c = F.col(f"c{i}")
        checks.append(F.when(c.isNotNull(), c.try_cast(dtype).isNull()).alias(f"c{i}"))
    counts: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])  # values, bad
    for row in local.select("file", *checks).collect():
        for i in range(len(typed)):
            if row[i + 1] is not None:
                counts[(row[0], i)][0] += 1
                counts[(row[0], i)][1] += row[i + 1]
    out = []
    for (path, i), (values, bad) in sorted(counts.items()):
        if bad / values >= TYPE_CHANGE_SHARE:
            name, dtype = typed[i]
            detail = f"declared {dtype}; {bad} of {values} sampled values do not cast"
            out.append(Drift((path,), name, "type_changed", detail, "kept_as_text"))
    return out


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
        F.col("_metadata.file_path").alias(SOURCE_FILE),
        F.col("_metadata.file_modification_time").alias(FILE_MODIFICATION_TIME),
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
        # `contains` matches bytes; `instr` counts characters to the match, which made this
        # check cost as much as the whole row hash
        flag = F.when(joined.contains(REPLACEMENT), F.lit(replaced))
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
        columns = _unique_names(list(names)) if header else list(source.schema_)
        batch.samples[path] = sample_csv(first, decoding.encoding, source.options, columns)
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
    batch.frame = union(frames, allow_missing=True)
    return batch


def _read_json(
    spark: SparkSession, source: Source, files: list[str], bronze_columns: list[str]
) -> StructuredBatch:
    batch = StructuredBatch(None)
    multiline = source.options.get("multiLine", "false").lower() == "true"
    groups: dict[Decoding, list[str]] = defaultdict(list)
    for path, first, decoding in _sniffed(spark, source, files, batch):
        groups[decoding].append(path)
        batch.samples[path] = sample_json(first, decoding.encoding, multiline)
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
    batch.frame = union(frames, allow_missing=True)
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
    batch.frame = union(frames, allow_missing=True)
    return batch


READERS = {"csv": _read_csv, "json": _read_json, "parquet": _read_parquet}


def read_structured(
    spark: SparkSession,
    source: Source,
    files: list[str],
    bronze_columns: list[str],
    type_check: bool = True,
) -> StructuredBatch:
    """Bronze rows for `files`: `bronze_columns` (as text, in that order), then any columns
    added by schema evolution, `_rescued`, `_corrupt_record`, `_decode_error`, `_source_file`,
    `_file_modification_time` and `_row_hash`. Without `type_check`, the caller runs
    `sampled_type_changes` on the batch's samples itself."""
    batch = READERS[source.format](spark, source, files, bronze_columns)
    if type_check:
        batch.drift += sampled_type_changes(spark, source.schema_, batch.samples)
    if batch.frame is not None:
        order = [*bronze_columns, *batch.added_columns, *FLAG_COLUMNS, *FILE_COLUMNS, ROW_HASH]
        batch.frame = batch.frame.select(*order)
    return batch
