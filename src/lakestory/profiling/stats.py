"""Column statistics of a table from a few Spark aggregates; only their results leave Spark.

A profile is built in passes, each one aggregate over the table:

1. counts, nulls, approximate distinct values, min, max, mean, standard deviation and
   approximate quantiles (`percentile_approx`) of every column, and the Pearson correlation of
   every pair of numeric columns;
2. histogram bucket counts of every numeric and date/time column (a bucket column per column,
   exploded to (column, bucket) and grouped);
3. the most frequent values of every column that has repeated values (exploded to
   (column, value), grouped, ranked per column by a window);
4. exact duplicates (the same content, lineage columns aside) and key duplicates;
5. rows outside outlier fences: the configured method per column, Tukey's 1.5 x IQR otherwise.

Masked columns (see `spec`) get counts only: their values are hashed on the executors before
they are grouped, so no raw value reaches the driver, and min, max, quantiles and histograms
are not computed for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakestory.columns import LINEAGE
from lakestory.config.models import Outlier
from lakestory.quality.outliers import MAD_SCALE

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
BINS = 20  # histogram buckets; an integer column with fewer distinct values gets one per value
TOP_K = 10  # most frequent values shown per column
LABEL_K = 50  # label values counted (a clean label has a handful)
MAX_CORRELATED = 16  # numeric columns correlated pairwise (n * (n - 1) / 2 aggregates)
IQR_K = 1.5  # Tukey's fences for numeric columns with no configured outlier method
# lineage, not content: two rows that differ only here are duplicates
LINEAGE_COLUMNS = frozenset(
    {
        *LINEAGE,
        "_run_id",
        "_quarantined_at",
        "_reasons",
        "_outliers",
    }
)

_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
_NUMERIC = (*_INTEGRAL, T.FloatType, T.DoubleType, T.DecimalType)
_TEMPORAL = (T.DateType, T.TimestampType, T.TimestampNTZType)


def kind_of(dtype: T.DataType) -> str:
    """`numeric`, `temporal`, `string`, `boolean`, `list` (array of scalars), `binary` or
    `other` (structs, maps, vectors): what can be computed for a column."""
    if isinstance(dtype, _NUMERIC):
        return "numeric"
    if isinstance(dtype, _TEMPORAL):
        return "temporal"
    if isinstance(dtype, T.StringType):
        return "string"
    if isinstance(dtype, T.BooleanType):
        return "boolean"
    if isinstance(dtype, T.BinaryType):
        return "binary"
    if isinstance(dtype, T.ArrayType) and not isinstance(
        dtype.elementType, T.ArrayType | T.MapType | T.StructType | T.BinaryType
    ):
        return "list"
    return "other"


def jsonable(value: Any) -> Any:
    """A value as JSON holds it: dates as ISO text, decimals as floats, NaN and infinities as
    null (JSON has no such numbers)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _ordinal(field: T.StructField) -> Column:
    """The column as a number: itself, seconds since 1970 for a timestamp, days for a date."""
    column = F.col(f"`{field.name}`")
    if isinstance(field.dataType, T.DateType):
        return F.unix_date(column).cast("double")
    if isinstance(field.dataType, T.TimestampType | T.TimestampNTZType):
        return F.unix_micros(column.cast("timestamp")).cast("double") / 1e6
    return column.cast("double")


def _from_ordinal(field: T.StructField, value: float) -> Any:
    if isinstance(field.dataType, T.DateType):
        # an edge between two days names the day on or after it
        return date.fromordinal(date(1970, 1, 1).toordinal() + math.ceil(value)).isoformat()
    if isinstance(field.dataType, T.TimestampType | T.TimestampNTZType):
        return datetime.fromtimestamp(value, timezone.utc).isoformat()
    return value


def _c(name: str) -> Column:
    return F.col(f"`{name}`")


def _pearson(a: Column, b: Column) -> Column:
    """Pearson's r; null where a column is constant. (`F.corr` divides by zero there, which
    Spark's ANSI mode turns into an error.)"""
    return F.try_divide(F.covar_pop(a, b), F.stddev_pop(a) * F.stddev_pop(b))


def _column_aggregates(
    i: int, field: T.StructField, masked: set[str], declared: dict[str, str]
) -> list[Column]:
    """The pass 1 aggregates of column `i`, each aliased by what it is and `i` (`nulls3`,
    `q3`): what `_column_stats` reads back. What a column gets depends on its kind; a masked
    one gets counts and lengths only, so no value of it reaches the driver."""
    kind, col = kind_of(field.dataType), _c(field.name)
    aggs = [F.count_if(col.isNull()).alias(f"nulls{i}")]
    if kind in ("numeric", "temporal", "string", "boolean"):
        aggs.append(F.approx_count_distinct(col).alias(f"distinct{i}"))
    if kind == "string" and declared.get(field.name, "string") != "string":
        cast = F.trim(col).try_cast(declared[field.name])
        aggs.append(F.count_if(col.isNotNull() & cast.isNull()).alias(f"uncast{i}"))
    if kind == "string":
        length = F.length(col)
        aggs += [
            F.min(length).alias(f"lmin{i}"),
            F.max(length).alias(f"lmax{i}"),
            F.avg(length).alias(f"lmean{i}"),
        ]
    if field.name in masked or kind not in ("numeric", "temporal"):
        return aggs
    if kind == "temporal":  # as numbers, so that bucket edges need no time zone here
        return aggs + [
            F.min(_ordinal(field)).alias(f"omin{i}"),
            F.max(_ordinal(field)).alias(f"omax{i}"),
        ]
    number = col.cast("double")
    return aggs + [
        F.min(col).alias(f"min{i}"),
        F.max(col).alias(f"max{i}"),
        F.avg(number).alias(f"mean{i}"),
        F.stddev_samp(number).alias(f"std{i}"),
        F.percentile_approx(number, list(QUANTILES)).alias(f"q{i}"),
    ]


def _correlated(fields: list[T.StructField], masked: set[str]) -> list[str]:
    """The numeric content columns correlated pairwise: the first `MAX_CORRELATED`, since the
    aggregates grow with the square of their number."""
    return [
        f.name
        for f in fields
        if kind_of(f.dataType) == "numeric" and f.name not in masked | LINEAGE_COLUMNS
    ][:MAX_CORRELATED]


def _column_stats(
    i: int,
    field: T.StructField,
    got: dict[str, Any],
    rows: int,
    masked: set[str],
    declared: dict[str, str],
) -> dict[str, Any]:
    """Column `i`'s statistics from the pass 1 row `got`, as JSON holds them; a statistic is
    there when its aggregate is (see `_column_aggregates`)."""
    nulls = int(got[f"nulls{i}"])
    stats: dict[str, Any] = {
        "type": field.dataType.simpleString(),
        "kind": kind_of(field.dataType),
        "masked": field.name in masked,
        "nulls": nulls,
        "null_rate": nulls / rows if rows else 0.0,
    }
    if f"distinct{i}" in got:
        stats["distinct"] = int(got[f"distinct{i}"])
    if f"uncast{i}" in got:
        stats["declared_type"] = declared[field.name]
        stats["uncastable"] = int(got[f"uncast{i}"])
    if f"lmin{i}" in got:
        stats["length"] = {
            "min": got[f"lmin{i}"],
            "max": got[f"lmax{i}"],
            "mean": jsonable(got[f"lmean{i}"]),
        }
    if f"min{i}" in got:
        stats["min"], stats["max"] = jsonable(got[f"min{i}"]), jsonable(got[f"max{i}"])
    if f"omin{i}" in got:
        low, high = got[f"omin{i}"], got[f"omax{i}"]
        stats["min"] = None if low is None else _from_ordinal(field, low)
        stats["max"] = None if high is None else _from_ordinal(field, high)
        stats["ordinal_range"] = [low, high]  # the ordinals: days or seconds since 1970
    if f"mean{i}" in got:
        stats["mean"], stats["std"] = jsonable(got[f"mean{i}"]), jsonable(got[f"std{i}"])
        q = got[f"q{i}"]
        stats["quantiles"] = (
            {str(p): jsonable(v) for p, v in zip(QUANTILES, q, strict=True)} if q else None
        )
    return stats


def _correlation_matrix(
    correlated: list[str], pairs: list[tuple[str, str]], got: dict[str, Any]
) -> dict[str, Any]:
    """The symmetric matrix of Pearson's r from the pass 1 row `got` (`corr<n>` for the n-th of
    `pairs`), over the columns that correlate with at least one other."""
    r = {(a, b): jsonable(got[f"corr{n}"]) for n, (a, b) in enumerate(pairs)}
    r.update({(b, a): v for (a, b), v in r.items()})
    # a constant or empty column correlates with nothing: leave it out
    varying = [a for a in correlated if any(r.get((a, b)) is not None for b in correlated)]
    matrix = [[1.0 if a == b else r[(a, b)] for b in varying] for a in varying]
    return {"columns": varying, "matrix": matrix}


def column_summaries(
    df: DataFrame, masked: set[str], declared: dict[str, str] | None = None
) -> tuple[int, dict[str, dict[str, Any]], dict[str, Any]]:
    """Pass 1: rows, per column statistics, and the correlation matrix of numeric columns.

    `declared`: the types a raw table's text columns are declared to have; the values present
    that do not cast to them (as refine casts: trimmed, `try_cast`) are counted.
    """
    declared = declared or {}
    fields = list(df.schema.fields)
    aggs: list[Column] = [F.count(F.lit(1)).alias("rows")]
    for i, f in enumerate(fields):
        aggs += _column_aggregates(i, f, masked, declared)
    correlated = _correlated(fields, masked)
    pairs = [(a, b) for i, a in enumerate(correlated) for b in correlated[i + 1 :]]
    aggs += [
        _pearson(_c(a).cast("double"), _c(b).cast("double")).alias(f"corr{n}")
        for n, (a, b) in enumerate(pairs)
    ]
    # pass 1's one Spark action: every statistic above comes back in this one row
    row = df.agg(*aggs).first()
    assert row is not None
    got = row.asDict()
    rows = int(got["rows"])
    columns = {
        f.name: _column_stats(i, f, got, rows, masked, declared) for i, f in enumerate(fields)
    }
    return rows, columns, _correlation_matrix(correlated, pairs, got)


def _bucketing(field: T.StructField, low: float, high: float) -> tuple[Column, list[float]]:
    """The bucket of each value and the bucket edges: one bucket per value for an integer
    column with fewer than `BINS` of them, else `BINS` equal widths (the last one closed)."""
    value = _ordinal(field)
    integral = isinstance(field.dataType, (*_INTEGRAL, T.DateType))
    if high == low:
        return F.lit(0), [low - 0.5, low + 0.5]
    if integral and high - low + 1 <= BINS:
        n = int(high - low) + 1
        return (value - F.lit(low)).cast("int"), [low - 0.5 + i for i in range(n + 1)]
    width = (high - low) / BINS
    # F.least skips nulls: a null value must stay out of every bucket
    bucket = F.when(
        value.isNotNull(), F.least(F.floor((value - F.lit(low)) / F.lit(width)), F.lit(BINS - 1))
    ).cast("int")
    return bucket, [low + i * width for i in range(BINS)] + [high]


def histograms(
    df: DataFrame, columns: dict[str, dict[str, Any]]
) -> dict[str, dict[str, list[Any]]]:
    """Pass 2: bucket counts of every numeric and date/time column with values."""
    fields = {f.name: f for f in df.schema.fields}
    plans: dict[str, tuple[Column, list[float]]] = {}
    for name, stats in columns.items():
        if stats["kind"] not in ("numeric", "temporal") or stats.get("min") is None:
            continue
        low, high = (
            stats["ordinal_range"] if "ordinal_range" in stats else (stats["min"], stats["max"])
        )
        plans[name] = _bucketing(fields[name], float(low), float(high))
    if not plans:
        return {}
    names = list(plans)
    tagged = F.array(
        *[F.struct(F.lit(i).alias("c"), plans[name][0].alias("b")) for i, name in enumerate(names)]
    )
    counts = (
        df.select(F.explode(tagged).alias("t"))
        .where(F.col("t.b").isNotNull())
        .groupBy("t.c", "t.b")
        .count()
        .collect()
    )
    out: dict[str, dict[str, list[Any]]] = {}
    for i, name in enumerate(names):
        edges = plans[name][1]
        bucket_counts = [0] * (len(edges) - 1)
        for r in counts:
            if r["c"] == i:
                bucket_counts[int(r["b"])] = int(r["count"])
        field = fields[name]
        out[name] = {
            "edges": [jsonable(_from_ordinal(field, e)) for e in edges],
            "counts": bucket_counts,
        }
    return out


def _values_of(field: T.StructField, kind: str, masked: bool) -> Column:
    """The column's values as text, one array element each (a list column: its elements);
    a masked column's values are replaced by their hash before they are grouped."""
    col = _c(field.name)
    if kind == "list":
        empty = F.array().cast(T.ArrayType(T.StringType()))
        values = F.coalesce(F.transform(col, lambda x: x.cast("string")), empty)
    else:
        values = F.array(col.cast("string"))
    if masked:
        values = F.transform(values, lambda x: F.when(x.isNotNull(), F.xxhash64(x).cast("string")))
    return values


def _tagged_with(index: int) -> Callable[[Column], Column]:
    # a lambda with a default argument would look like (element, index) to F.transform
    def _tag(value: Column) -> Column:
        return F.struct(F.lit(index).alias("c"), value.alias("v"))

    return _tag


def label_order(values: list[str]) -> list[str]:
    """Label values in their natural order: numerically when they are all numbers."""
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def top_values(
    df: DataFrame,
    columns: dict[str, dict[str, Any]],
    rows: int,
    label: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Pass 3: the most frequent values of each column that repeats values (`LABEL_K` of the
    label column, `TOP_K` of the others), most first; a masked column's come without values.

    A column whose values are (nearly) all distinct, such as a key, is left out: its top values
    would be arbitrary ones seen once.
    """
    fields = {f.name: f for f in df.schema.fields}
    chosen: list[str] = []
    for name, stats in columns.items():
        if stats["kind"] not in ("string", "boolean", "numeric", "temporal", "list"):
            continue
        if stats["type"] in ("double", "float") and name != label:
            continue  # continuous: the histogram says more
        present = rows - stats["nulls"]
        distinct = stats.get("distinct")
        if (
            name != label
            and distinct is not None
            and present > TOP_K
            and distinct >= 0.95 * present
        ):
            continue
        chosen.append(name)
    if not chosen:
        return {}
    tagged = F.flatten(
        F.array(
            *[
                F.transform(
                    _values_of(fields[name], columns[name]["kind"], columns[name]["masked"]),
                    _tagged_with(i),
                )
                for i, name in enumerate(chosen)
            ]
        )
    )
    label_index = chosen.index(label) if label in chosen else -1
    ranked = Window.partitionBy("c").orderBy(F.col("count").desc(), F.col("v"))
    found = (
        df.select(F.explode(tagged).alias("t"))
        .select("t.c", "t.v")
        .where(F.col("v").isNotNull())
        .groupBy("c", "v")
        .count()
        .withColumn("rank", F.row_number().over(ranked))
        .where(F.col("rank") <= F.when(F.col("c") == label_index, LABEL_K).otherwise(TOP_K))
        .collect()
    )
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
    for r in sorted(found, key=lambda r: (r["c"], r["rank"])):
        name = chosen[r["c"]]
        value = None if columns[name]["masked"] else r["v"]
        out[name].append({"value": value, "count": int(r["count"])})
    return out


def duplicates(df: DataFrame, key: str | None) -> dict[str, Any]:
    """Pass 4: rows whose content (lineage columns aside) an earlier row already has, and rows
    whose key an earlier row already has."""
    # maps cannot be compared, so two rows differing only in a map count as the same here
    content = [
        _c(f.name)
        for f in df.schema.fields
        if f.name not in LINEAGE_COLUMNS and not isinstance(f.dataType, T.MapType)
    ]
    aggs = [F.count(F.lit(1)).alias("rows")]
    if content:
        aggs.append(F.count_distinct(F.struct(*content)).alias("content"))
    if key is not None and key in df.columns:
        aggs += [F.count(_c(key)).alias("keyed"), F.count_distinct(_c(key)).alias("keys")]
    row = df.agg(*aggs).first()
    assert row is not None
    got = row.asDict()
    out: dict[str, Any] = {"exact": int(got["rows"]) - int(got.get("content", got["rows"]))}
    if "keys" in got:
        out["key_column"] = key
        out["key"] = int(got["keyed"]) - int(got["keys"])
    return out


def outliers(
    df: DataFrame, columns: dict[str, dict[str, Any]], configured: dict[str, Outlier]
) -> dict[str, dict[str, Any]]:
    """Pass 5: rows outside the fences of each numeric column, by the method the dataset
    configures for it (as `quality.outliers` defines the fences), else Tukey's fences at
    `IQR_K` x IQR. Quartiles and medians come from pass 1; columns with `mad` take one more
    aggregate for their median absolute deviations."""
    numeric = {
        n: s
        for n, s in columns.items()
        if s["kind"] == "numeric" and s.get("quantiles") and n not in LINEAGE_COLUMNS
    }
    methods = {n: configured.get(n, Outlier(method="iqr", threshold=IQR_K)) for n in numeric}
    q = {n: s["quantiles"] for n, s in numeric.items()}
    mad_columns = [n for n, o in methods.items() if o.method == "mad"]
    mads: dict[str, Any] = {}
    if mad_columns:
        row = df.agg(
            *[
                F.percentile_approx(F.abs(_c(n).cast("double") - F.lit(q[n]["0.5"])), 0.5)
                for n in mad_columns
            ]
        ).first()
        assert row is not None
        mads = dict(zip(mad_columns, row, strict=True))
    plans: dict[str, dict[str, Any]] = {}
    for name, o in methods.items():
        low = high = None
        if o.method == "mad" and mads[name]:  # a MAD of 0 gives no usable fences
            spread = o.k * mads[name] / MAD_SCALE
            low, high = q[name]["0.5"] - spread, q[name]["0.5"] + spread
        elif o.method == "iqr":
            iqr = q[name]["0.75"] - q[name]["0.25"]
            low, high = q[name]["0.25"] - o.k * iqr, q[name]["0.75"] + o.k * iqr
        plans[name] = {"method": o.method, "threshold": o.k, "low": low, "high": high}
    bounded = {n: p for n, p in plans.items() if p["low"] is not None}
    if not bounded:
        return plans
    outside = [
        F.count_if((_c(n).cast("double") < p["low"]) | (_c(n).cast("double") > p["high"]))
        for n, p in bounded.items()
    ]
    counts = df.agg(*outside).first()
    assert counts is not None
    for name, count in zip(bounded, counts, strict=True):
        plans[name]["rows"] = int(count)
    return plans
