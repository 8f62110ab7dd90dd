"""Row rules and the one function that splits a frame into valid and rejected rows."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

REASONS = "_reasons"


@dataclass(frozen=True)
class Rule:
    """A named condition that holds for a good row; a null condition counts as failed."""

    name: str
    condition: Column


def not_null(column: str) -> Rule:
    """The column holds a value; empty and blank strings count as missing."""
    value = F.col(column)
    return Rule(f"not_null:{column}", value.isNotNull() & (F.trim(value.cast("string")) != ""))


def castable(column: str, raw: str, spark_type: str) -> Rule:
    """The raw text of `column` was empty or parsed as `spark_type` (into column `raw`->typed)."""
    text = F.trim(F.col(raw))
    return Rule(
        f"castable:{column}:{spark_type}", text.isNull() | (text == "") | F.col(column).isNotNull()
    )


def in_set(column: str, allowed: list[object], name: str | None = None) -> Rule:
    """The column's value is one of `allowed` (a missing value passes; pair with not_null)."""
    return Rule(
        name or f"in_set:{column}",
        F.col(column).isNull() | F.col(column).isin(*allowed),
    )


def expression(name: str, expr: str) -> Rule:
    """A Spark SQL boolean expression, e.g. `credit_score BETWEEN 300 AND 900`."""
    return Rule(name, F.expr(expr))


def not_malformed(corrupt_column: str = "_corrupt_record") -> Rule:
    """The reader could parse the record (the file source left no raw text aside)."""
    return Rule("malformed_record", F.col(corrupt_column).isNull())


def with_reasons(rules: list[Rule]) -> Column:
    """array<string> of the names of every rule the row fails (empty when it passes all)."""
    failed = [F.when(~F.coalesce(rule.condition, F.lit(False)), F.lit(rule.name)) for rule in rules]
    if not failed:
        return F.array().cast("array<string>")
    return F.filter(F.array(*failed), lambda name: name.isNotNull())


def split(df: DataFrame, rules: list[Rule]) -> tuple[DataFrame, DataFrame]:
    """Apply every rule in one pass; return (rows passing all, rows failing any + `_reasons`)."""
    checked = df.withColumn(REASONS, with_reasons(rules))
    valid = checked.where(F.size(REASONS) == 0).drop(REASONS)
    rejected = checked.where(F.size(REASONS) > 0)
    return valid, rejected
