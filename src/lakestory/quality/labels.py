"""Label rules: a missing label, a label outside the allowed set, and the same content under
different labels.

Missing and invalid labels fail `label_missing` and `label_invalid`, whose action is the
configured route: `quarantine`, or `unlabeled` (the row goes to the source's unlabeled table,
for later labelling). `label_conflict` joins each label row's file to the sha256 bronze holds
for it (a binary source of the dataset) and fails every row whose content carries two or more
labels among this batch's latest rows and silver's other rows.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.columns import FILE_MODIFICATION_TIME, SOURCE_FILE
from lakestory.config import Dataset, Source
from lakestory.config.models import label_text
from lakestory.io import Catalog
from lakestory.quality.dedup import keep_latest_per_key
from lakestory.quality.rules import UNLABELED_ACTION, Rule

UNLABELED = UNLABELED_ACTION  # the action that routes a row to the unlabeled table
LABEL_TEXT = "_label_text"  # the unlabeled table's copy of the label as it landed
CONFLICT = "__label_conflict"
_FILE, _SHA, _LABEL = "__label_file", "__label_sha256", "__label_value"


def is_missing(raw: Column, tokens: list[str]) -> Column:
    """The raw label text is null, blank or one of the tokens (trimmed, any case)."""
    text = F.lower(F.trim(raw))
    missing = raw.isNull() | (text == "")
    if tokens:
        missing = missing | text.isin(*[t.strip().lower() for t in tokens])
    return missing


def class_index(source: Source, value: Column) -> Column:
    """The class number (int) of a value of `source`'s label, as its `allowed`, `positive` or
    `classes` map it; null for a null value and for one that matches no class. Values are
    compared as text (a boolean column's `true`, `false` in any case), trimmed and in lower
    case under `ignore_case`."""
    label = source.label
    assert label is not None
    text = value.cast("string")
    boolean = source.schema_.get(label.column) == "boolean"
    if label.ignore_case:
        text = F.lower(F.trim(text))

    def key(v: object) -> str:
        t = label.normalise(label_text(v))  # type: ignore[arg-type]
        return t.lower() if boolean else t

    index = F.when(value.isNull(), F.lit(None))
    for number, values in enumerate(label.class_values()):
        if values:
            index = index.when(text.isin(*[key(v) for v in values]), F.lit(number))
    if label.others_negative:
        index = index.otherwise(F.lit(0))
    return index.cast("int")


def label_rules(
    spark: SparkSession, source: Source, raw: str, order: list[str], catalog: Catalog | None
) -> list[Rule]:
    """The label rules of a source with a label; `raw` names the column holding the label's
    text as it landed, `order` what makes one version of a record later than another. Label
    conflicts, which look at another source of the dataset, need its `catalog`."""
    label = source.label
    assert label is not None
    missing = is_missing(F.col(raw), label.missing)
    rules = [
        Rule("label_missing", ~missing, label.on_missing),
        Rule(
            "label_invalid",
            missing | class_index(source, F.col(label.column)).isNotNull(),
            label.on_invalid,
        ),
    ]
    if label.conflicts is not None:
        if catalog is None:
            raise ValueError("label conflicts are checked against a source of the dataset")
        binary = catalog.bronze(label.conflicts.source).qualified
        silver = catalog.silver(_source_name(catalog.dataset, source)).qualified
        rules.append(label_conflicts(spark, source, binary, silver, order))
    return rules


def _source_name(dataset: Dataset, source: Source) -> str:
    return next(name for name, s in dataset.sources.items() if s is source)


def file_name(path: Column) -> Column:
    """The last part of a path."""
    return F.element_at(F.split(path, "/"), -1)


def url_file_name(url: Column) -> Column:
    """The last part of a file URL as Spark writes it (`_source_file`), decoded."""
    return F.url_decode(file_name(url))


def label_conflicts(
    spark: SparkSession, source: Source, binary: str, silver: str, order: list[str]
) -> Rule:
    """`label_conflict`: no other file with the same content (sha256 in the binary source's
    bronze table) carries another label. Tables are read when a batch is checked, so each batch
    sees what earlier ones wrote."""
    label = source.label
    assert label is not None and label.conflicts is not None
    on, column = label.conflicts.file, label.column
    number = class_index(source, F.col(column))  # values of one class are one label

    def _prepare(df: DataFrame) -> DataFrame:
        if not spark.catalog.tableExists(binary):
            return df.withColumn(CONFLICT, F.lit(None).cast("boolean"))
        # a file landed twice counts with its latest content
        content = (
            spark.read.table(binary)
            .where(F.col("sha256").isNotNull())
            .groupBy(url_file_name(F.col(SOURCE_FILE)).alias(_FILE))
            .agg(F.max_by("sha256", FILE_MODIFICATION_TIME).alias(_SHA))
        )
        batch = df.where(number.isNotNull()).transform(keep_latest_per_key(source.key, order))
        seen = batch.select(file_name(F.col(on)).alias(_FILE), number.alias(_LABEL))
        if spark.catalog.tableExists(silver):
            key = source.silver_name(source.key)
            others = (
                spark.read.table(silver)
                .where(F.col(column).isNotNull())
                .join(batch.select(F.col(source.key).alias(key)), key, "left_anti")
            )
            seen = seen.unionByName(
                others.select(file_name(F.col(on)).alias(_FILE), number.alias(_LABEL))
            )
        conflicted = (
            seen.join(content, _FILE)
            .groupBy(_SHA)
            .agg(F.count_distinct(_LABEL).alias("__labels"))
            .where(F.col("__labels") > 1)
            .select(_SHA, F.lit(True).alias(CONFLICT))
        )
        with_sha = df.withColumn(_FILE, file_name(F.col(on))).join(content, _FILE, "left")
        return with_sha.join(conflicted, _SHA, "left").drop(_FILE, _SHA)

    return Rule(
        "label_conflict", F.col(CONFLICT).isNull(), label.conflicts.action, _prepare, (CONFLICT,)
    )
