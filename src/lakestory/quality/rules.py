"""Row rules, their actions, and the one pass that sorts rows into kept, dropped and rejected."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from lakestory.columns import CORRUPT, Transform
from lakestory.config.models import Expectation

REASONS = "_reasons"
# a row's fate is decided by the most severe action among the rules it fails; `unlabeled`
# (only label rules have it) sends a row to the source's unlabeled table, unless a rule that
# drops, quarantines or fails it says otherwise
SEVERITY = ("warn", "unlabeled", "drop", "quarantine", "fail")
UNLABELED_ACTION = SEVERITY[1]


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
    """The raw text of `column` (in `raw`) parsed as `spark_type` (into `column`), or was blank
    (nothing but spaces, tabs, line breaks and other control characters, which a cast ignores
    around a value). The parsed value is tested first: for most rows it holds, and the text is
    not looked at."""
    text = F.col(raw)
    return Rule(
        f"castable:{column}:{spark_type}",
        F.col(column).isNotNull() | text.isNull() | text.rlike(r"^[\x00-\x20]*$"),
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


def not_malformed(corrupt_column: str = CORRUPT) -> Rule:
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


FAILED = "_failed"  # the bit masks of the rules a row failed: see `Checks`
_WORD = 63  # rules per mask column: the bits of a non-negative bigint


@dataclass(frozen=True)
class Checks:
    """Rules evaluated once per row into bit masks (`_failed0`, `_failed1`, ...: bit i of word
    j set when the row failed rule 63*j + i), from which fates, counts and reasons are read.

    A row's fate and the counts per rule are bit tests on a bigint; the array of reasons,
    which costs an allocation per row, is built only for the rows that keep it (quarantined
    and unlabeled ones), after they have been sorted out."""

    rules: tuple[Rule, ...]

    @property
    def columns(self) -> list[str]:
        return [f"{FAILED}{j}" for j in range(max(1, -(-len(self.rules) // _WORD)))]

    def apply(self, df: DataFrame) -> DataFrame:
        """`df` with the mask columns (a rule's helper columns joined in and dropped again)."""
        for rule in self.rules:
            if rule.prepare is not None:
                df = df.transform(rule.prepare)
        helpers = [h for rule in self.rules for h in rule.helpers]
        words: list[Column] = [F.lit(0).cast("bigint")] * len(self.columns)
        for i, rule in enumerate(self.rules):
            bit = F.when(F.coalesce(rule.condition, F.lit(False)), F.lit(0)).otherwise(
                F.lit(1 << (i % _WORD))
            )
            words[i // _WORD] = words[i // _WORD] + bit
        return df.withColumns(dict(zip(self.columns, words, strict=True))).drop(*helpers)

    def failed(self, actions: Iterable[str] | None = None) -> Column:
        """True for a row that failed any rule with one of `actions` (any rule: None)."""
        wanted = None if actions is None else set(actions)
        picked = [i for i, r in enumerate(self.rules) if wanted is None or r.action in wanted]
        masks: dict[int, int] = {}
        for i in picked:
            masks[i // _WORD] = masks.get(i // _WORD, 0) | 1 << (i % _WORD)
        hit: Column = F.lit(False)
        for j, mask in masks.items():
            hit = hit | (F.col(self.columns[j]).bitwiseAND(F.lit(mask)) != 0)
        return hit

    def failed_rule(self, i: int) -> Column:
        """True for a row that failed `rules[i]`."""
        return F.col(self.columns[i // _WORD]).bitwiseAND(F.lit(1 << (i % _WORD))) != 0

    def action(self) -> Column:
        """The most severe action among the rules the row failed; null when it failed none."""
        fate: Column = F.lit(None).cast("string")
        for action in SEVERITY:  # later (more severe) actions take precedence
            if any(r.action == action for r in self.rules):
                fate = F.when(self.failed([action]), F.lit(action)).otherwise(fate)
        return fate

    def kept(self) -> Column:
        """Passed every rule, or failed only `warn` rules."""
        return ~self.failed(SEVERITY[1:])

    def rejected(self) -> Column:
        """Failed a `quarantine` or `fail` rule."""
        return self.failed(["quarantine", "fail"])

    def dropped(self) -> Column:
        """Failed a `drop` rule and no `quarantine` or `fail` rule."""
        return self.failed(["drop"]) & ~self.rejected()

    def unlabeled(self) -> Column:
        """Failed an `unlabeled` label rule and nothing worse."""
        return self.failed([UNLABELED_ACTION]) & ~self.failed(["drop", "quarantine", "fail"])

    def reasons(self) -> Column:
        """array<string> of the names of every rule the row failed (empty when it passes all).
        Each rule contributes its name or "" (no rule is named so), and `array_remove` drops
        the empty ones, compiled to Java with the rest of the row's expressions."""
        if not self.rules:
            return F.array().cast("array<string>")
        names = [
            F.when(self.failed_rule(i), F.lit(r.name)).otherwise(F.lit(""))
            for i, r in enumerate(self.rules)
        ]
        return F.array_remove(F.array(*names), "")


@dataclass(frozen=True)
class Split:
    kept: DataFrame  # passed every rule, or failed only `warn` rules
    dropped: DataFrame  # failed a `drop` rule and no `quarantine` or `fail` rule; keeps `_reasons`
    rejected: DataFrame  # failed a `quarantine` or `fail` rule; keeps `_reasons`
    unlabeled: DataFrame  # failed an `unlabeled` label rule and nothing worse; keeps `_reasons`


def split(df: DataFrame, rules: list[Rule]) -> Split:
    """Sort the rows of `df` by their fate under `rules` as refine does: the rules evaluated
    once into masks (`Checks.apply`), each fate one of the checks' tests, and the reasons of
    the rows that keep them from `Checks.reasons`."""
    checks = Checks(tuple(rules))
    checked = checks.apply(df)

    def having(fate: Column, reasons: bool = True) -> DataFrame:
        rows = checked.where(fate)
        if reasons:
            rows = rows.withColumn(REASONS, checks.reasons())
        return rows.drop(*checks.columns)

    return Split(
        kept=having(checks.kept(), reasons=False),
        dropped=having(checks.dropped()),
        rejected=having(checks.rejected()),
        unlabeled=having(checks.unlabeled()),
    )
