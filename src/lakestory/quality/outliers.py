"""Outliers per numeric column: fences from Spark aggregates (`percentile_approx`), then flag,
quarantine or clip. The fences are computed on every row of a batch whose value parses as the
column's type, before any rule: a pass that reads the outlier columns alone, so that the rules,
fences included, are then applied in one pass. Median, MAD and quartiles barely move for the
few rows that fail other rules."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakestory.config.models import Outlier
from lakestory.quality.rules import Rule

OUTLIERS = "_outliers"
MAD_SCALE = 0.6745  # MAD / 0.6745 estimates the standard deviation of a normal sample


@dataclass(frozen=True)
class Fence:
    column: str
    method: str
    threshold: float
    action: str
    low: float | None  # None when the column has no values
    high: float | None

    def outside(self) -> Column:
        """True for a value outside the fences; null values and empty columns are inside."""
        if self.low is None or self.high is None:
            return F.lit(False)
        value = F.col(self.column)
        return value.isNotNull() & ((value < F.lit(self.low)) | (value > F.lit(self.high)))


def fences(df: DataFrame, spec: dict[str, Outlier]) -> list[Fence]:
    """The fences of each configured column: one aggregate for the quartiles and medians, one
    more for the median absolute deviations."""
    return counted_fences(df, spec)[1]


def counted_fences(df: DataFrame, spec: dict[str, Outlier]) -> tuple[int, list[Fence]]:
    """The rows of `df` and `fences(df, spec)`, the count taken by the quartiles' aggregate
    (or alone, when no column is configured)."""
    if not spec:
        return df.count(), []
    quartiles = df.agg(
        F.count(F.lit(1)).alias("__rows"),
        *[F.percentile_approx(F.col(c).cast("double"), [0.25, 0.5, 0.75]).alias(c) for c in spec],
    ).first()
    assert quartiles is not None
    q = {c: quartiles[c] for c in spec}  # None for a column with no values
    mad_columns = [c for c, o in spec.items() if o.method == "mad" and q[c] is not None]
    mads = {}
    if mad_columns:
        row = df.agg(
            *[
                F.percentile_approx(F.abs(F.col(c).cast("double") - F.lit(q[c][1])), 0.5).alias(c)
                for c in mad_columns
            ]
        ).first()
        assert row is not None
        mads = {c: row[c] for c in mad_columns}
    out = []
    for column, o in spec.items():
        low = high = None
        if q[column] is not None:
            q1, median, q3 = q[column]
            if o.method == "mad":
                if mads[column]:  # a MAD of 0 (most values equal) gives no usable fences
                    spread = o.k * mads[column] / MAD_SCALE
                    low, high = median - spread, median + spread
            else:
                low, high = q1 - o.k * (q3 - q1), q3 + o.k * (q3 - q1)
        out.append(Fence(column, o.method, o.k, o.action, low, high))
    return int(quartiles["__rows"]), out


def quarantine_rules(found: list[Fence]) -> list[Rule]:
    return [Rule(f"outlier:{f.column}", ~f.outside()) for f in found if f.action == "quarantine"]


def flag_and_clip(found: list[Fence], types: dict[str, str]) -> list[tuple[str, Column]]:
    """Columns to set on the kept rows: `_outliers` (the flagged columns a row is outside the
    fences of) if any column is flagged, and each clipped column held within its fences (for
    an integer column, the integers within them), keeping its type."""
    out: list[tuple[str, Column]] = []
    flagged = [f for f in found if f.action == "flag"]
    if flagged:
        names = F.array(*[F.when(f.outside(), F.lit(f.column)) for f in flagged])
        # `array_compact` compiles with the rest of the row; a `filter` lambda is interpreted
        out.append((OUTLIERS, F.array_compact(names)))
    for f in found:
        if f.action != "clip" or f.low is None or f.high is None:
            continue
        dtype = types[f.column]
        low, high = f.low, f.high
        if dtype in ("int", "bigint"):
            low, high = float(math.ceil(low)), float(math.floor(high))
        value = F.col(f.column)
        clipped = F.when(value.isNotNull(), F.least(F.greatest(value, F.lit(low)), F.lit(high)))
        out.append((f.column, clipped.cast(dtype)))
    return out
