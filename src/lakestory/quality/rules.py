"""Row rules, their actions, and the one pass that sorts rows into kept, dropped and rejected."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from lakestory.config.models import Expectation

REASONS = "_reasons"
ACTION = "_action"
# a row's fate is decided by the most severe action among the rules it fails; `unlabeled`
# (only label rules have it) sends a row to the source's unlabeled table, unless a rule that
# drops, quarantines or fails it says otherwise
SEVERITY = ("warn", "unlabeled", "drop", "quarantine", "fail")

Transform = Callable[[DataFrame], DataFrame]


@dataclass(frozen=True)
class Rule:
    """A named condition that holds for a good row; a null condition counts as failed.

    `prepare` adds the helper columns the condition reads (a join, say), named in `helpers`
    so that the split drops them again.
    """

    name: str
    condition: Column
    action: str = "quarantine"
    prepare: Transform | None = None
    helpers: tuple[str, ...] = field(default=())


def not_null(column: str, name: str | None = None, action: str = "quarantine") -> Rule:
    """The column holds a value; empty and blank strings count as missing."""
    value = F.col(column)
    return Rule(
        name or f"not_null:{column}",
        value.isNotNull() & (F.trim(value.cast("string")) != ""),
        action,
    )


def castable(column: str, raw: str, spark_type: str) -> Rule:
    """The raw text of `column` was empty or parsed as `spark_type` (into column `raw`->typed)."""
    text = F.trim(F.col(raw))
    return Rule(
        f"castable:{column}:{spark_type}", text.isNull() | (text == "") | F.col(column).isNotNull()
    )


def castable_text(column: str, spark_type: str, name: str, action: str = "quarantine") -> Rule:
    """The column's value (text) is empty or casts to `spark_type`."""
    text = F.trim(F.col(column).cast("string"))
    return Rule(name, text.isNull() | (text == "") | text.try_cast(spark_type).isNotNull(), action)


def in_set(
    column: str, allowed: list[object], name: str | None = None, action: str = "quarantine"
) -> Rule:
    """The column's value is one of `allowed` (a missing value passes; pair with not_null)."""
    return Rule(
        name or f"in_set:{column}", F.col(column).isNull() | F.col(column).isin(*allowed), action
    )


def in_range(
    column: str, low: float | None, high: float | None, name: str, action: str = "quarantine"
) -> Rule:
    """low <= value <= high, either bound optional (a missing value passes)."""
    value = F.col(column)
    condition = F.lit(True)
    if low is not None:
        condition = condition & (value >= F.lit(low))
    if high is not None:
        condition = condition & (value <= F.lit(high))
    return Rule(name, value.isNull() | condition, action)


def matches(column: str, pattern: str, name: str, action: str = "quarantine") -> Rule:
    """The whole value matches the Java regular expression (a missing value passes)."""
    whole = f"^(?:{pattern})$"
    return Rule(name, F.col(column).isNull() | F.col(column).cast("string").rlike(whole), action)


def unique(columns: list[str], name: str, action: str = "quarantine") -> Rule:
    """No other row has the same values in `columns` (rows with a null among them pass)."""
    cols = [F.col(c) for c in columns]
    others = F.count(F.lit(1)).over(Window.partitionBy(*cols))
    any_null = F.greatest(*[c.isNull() for c in cols]) if len(cols) > 1 else cols[0].isNull()
    return Rule(name, any_null | (others == 1), action)


def exists_in(
    spark: SparkSession,
    column: str,
    table: str,
    key: str,
    name: str,
    action: str = "quarantine",
) -> Rule:
    """The value is a key of `table` (a missing value passes). Joins the other table's distinct
    keys, broadcast when small."""
    flag = f"__exists_{name}"
    key_col = f"__key_{name}"
    keys = spark.read.table(table).select(F.col(key).alias(key_col)).distinct()
    keys = keys.withColumn(flag, F.lit(True))

    def _prepare(df: DataFrame) -> DataFrame:
        return df.join(keys, df[column] == keys[key_col], "left").drop(key_col)

    return Rule(name, F.col(column).isNull() | F.col(flag).isNotNull(), action, _prepare, (flag,))


def expression(name: str, expr: str, action: str = "quarantine") -> Rule:
    """A Spark SQL boolean expression, e.g. `credit_score BETWEEN 300 AND 900`."""
    return Rule(name, F.expr(expr), action)


def not_malformed(corrupt_column: str = "_corrupt_record") -> Rule:
    """The reader could parse the record (the file source left no raw text aside)."""
    return Rule("malformed_record", F.col(corrupt_column).isNull())


def from_expectation(spark: SparkSession, e: Expectation) -> Rule:
    """The rule a declared expectation stands for."""
    if e.expr is not None:
        return expression(e.name, e.expr, e.action)
    if e.not_null is not None:
        return not_null(e.not_null, e.name, e.action)
    if e.unique is not None:
        return unique(e.columns(), e.name, e.action)
    if e.in_set is not None:
        return in_set(e.in_set.column, list(e.in_set.values), e.name, e.action)
    if e.range is not None:
        return in_range(e.range.column, e.range.min, e.range.max, e.name, e.action)
    if e.regex is not None:
        return matches(e.regex.column, e.regex.pattern, e.name, e.action)
    if e.castable is not None:
        return castable_text(e.castable.column, e.castable.type, e.name, e.action)
    assert e.exists_in is not None
    spec = e.exists_in
    return exists_in(spark, spec.column, spec.table, spec.key or spec.column, e.name, e.action)


def with_reasons(rules: list[Rule]) -> Column:
    """array<string> of the names of every rule the row fails (empty when it passes all).

    Each rule contributes its name or "" (no rule is named so), and `array_remove` drops the
    empty ones: it compiles to Java with the rest of the row's expressions, where a `filter`
    with a lambda is interpreted row by row and cost about half of all the checks."""
    if not rules:
        return F.array().cast("array<string>")
    names = [
        F.when(F.coalesce(rule.condition, F.lit(False)), F.lit("")).otherwise(F.lit(rule.name))
        for rule in rules
    ]
    return F.array_remove(F.array(*names), "")


def _action(rules: list[Rule]) -> Column:
    """The most severe action among the rules the row failed; null when it failed none."""
    fate: Column = F.lit(None).cast("string")
    for action in SEVERITY:  # later (more severe) actions take precedence
        names = [r.name for r in rules if r.action == action]
        if names:
            hit = F.arrays_overlap(F.col(REASONS), F.array(*[F.lit(n) for n in names]))
            fate = F.when(hit, F.lit(action)).otherwise(fate)
    return fate


def check(rules: list[Rule]) -> Transform:
    """Apply every rule in one pass: add `_reasons` (every rule failed) and `_action`."""

    def _apply(df: DataFrame) -> DataFrame:
        for rule in rules:
            if rule.prepare is not None:
                df = df.transform(rule.prepare)
        helpers = [h for rule in rules for h in rule.helpers]
        checked = df.withColumn(REASONS, with_reasons(rules))
        return checked.withColumn(ACTION, _action(rules)).drop(*helpers)

    return _apply


@dataclass(frozen=True)
class Split:
    kept: DataFrame  # passed every rule, or failed only `warn` rules
    dropped: DataFrame  # failed a `drop` rule and no `quarantine` or `fail` rule
    rejected: DataFrame  # failed a `quarantine` or `fail` rule; keeps `_reasons`
    unlabeled: DataFrame  # failed an `unlabeled` label rule and nothing worse; keeps `_reasons`


def split_checked(checked: DataFrame) -> Split:
    """Sort a frame that went through `check` by each row's action."""
    action = F.col(ACTION)
    kept = checked.where(action.isNull() | (action == "warn")).drop(REASONS, ACTION)
    dropped = checked.where(action == "drop").drop(ACTION)
    rejected = checked.where(action.isin("quarantine", "fail")).drop(ACTION)
    unlabeled = checked.where(action == "unlabeled").drop(ACTION)
    return Split(kept, dropped, rejected, unlabeled)


def split(df: DataFrame, rules: list[Rule]) -> Split:
    """`check` then `split_checked`."""
    return split_checked(df.transform(check(rules)))
