"""Where a refine batch's rows went: the counts per fate, per rule and per fence, observed
while the writes go by, and the batch's row of `ops.quality_metrics`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pyspark.sql import Column, Row
from pyspark.sql import functions as F

from lakestory.quality.dedup import Duplicates
from lakestory.quality.outliers import Fence
from lakestory.quality.rules import Checks, Rule

OUTSIDE = "__outside"  # `__outside<i>`: the row is outside fence i (before clipping)


@dataclass(frozen=True)
class RefineCounts:
    """Where a refine run's rows went; `silver` counts rows inserted or updated by the MERGE."""

    rows_in: int
    silver: int
    exact_duplicates: int
    key_duplicates: int
    quarantined: int
    dropped: int = 0
    unchanged: int = 0  # latest versions silver already had, as they are or newer
    unlabeled: int = 0  # rows sent to the unlabeled table (missing or invalid label)
    rule_failures: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    # wall seconds of each of refine's passes over its batches (`Refinement._refine`), for
    # the log and bench/refine.py; not a count, so two runs' counts compare equal without it
    seconds: dict[str, float] = field(default_factory=dict, compare=False)

    @classmethod
    def total(cls, parts: list[RefineCounts]) -> RefineCounts:
        """The counts of a run made of several batches (all zero for a run with none)."""
        failures: dict[str, int] = {}
        for p in parts:
            for name, n in p.rule_failures.items():
                failures[name] = failures.get(name, 0) + n
        fields = ("rows_in", "silver", "exact_duplicates", "key_duplicates", "quarantined")
        more = ("dropped", "unchanged", "unlabeled", "batches")
        sums = {f: sum(getattr(p, f) for p in parts) for f in (*fields, *more)}
        seconds: dict[str, float] = {}
        for p in parts:
            for name, s in p.seconds.items():
                seconds[name] = seconds.get(name, 0.0) + s
        return cls(**sums, rule_failures=failures, seconds=seconds)

    def timed(self, seconds: dict[str, float]) -> RefineCounts:
        """The same counts with the passes' wall seconds `seconds`."""
        return replace(self, seconds=seconds)

    @property
    def duplicates(self) -> int:
        return self.exact_duplicates + self.key_duplicates

    @property
    def reconciles(self) -> bool:
        return self.rows_in == (
            self.silver
            + self.duplicates
            + self.unchanged
            + self.quarantined
            + self.dropped
            + self.unlabeled
        )


@dataclass(frozen=True)
class Tally:
    rows: int
    dropped: int
    rejected: int
    unlabeled: int
    failures: dict[str, int]
    outside: dict[str, int]  # rows outside each column's fences


def tally_counts(checks: Checks, found: list[Fence]) -> list[Column]:
    """Rows per fate, rows failing each rule, and the rows outside each fence among those that
    do not go to silver: bit tests on the masks of checked rows, computed while the rows go
    by (see `Shell.observed`). Rows that fail no rule add nothing to them, so they are computed
    over the rows that fail any (and `silver.ranked` counts the kept rows outside a fence)."""
    return [
        F.count_if(checks.dropped()).alias("dropped"),
        F.count_if(checks.rejected()).alias("rejected"),
        F.count_if(checks.unlabeled()).alias("unlabeled"),
        *[F.count_if(checks.failed_rule(i)).alias(f"rule{i}") for i in range(len(checks.rules))],
        *[
            F.count_if(~checks.kept() & f.outside()).alias(f"outside{i}")
            for i, f in enumerate(found)
        ],
    ]


def outside_counts(found: list[Fence]) -> list[Column]:
    """The kept rows outside each fence, over `silver.ranked` rows (before any clipping)."""
    return [F.count_if(F.col(f"{OUTSIDE}{i}")).alias(f"outside{i}") for i in range(len(found))]


def tally_of(
    row: Row | dict[str, Any],
    rules: list[Rule],
    found: list[Fence],
    rows: int,
    kept: Row | dict[str, Any] | None = None,
) -> Tally:
    """The tally of a batch of `rows` rows from `tally_counts` (in `row`) and, when given,
    `outside_counts` over its kept rows (in `kept`)."""

    def n(name: str, counts: Row | dict[str, Any] | None = row) -> int:
        return 0 if counts is None else int(counts[name] or 0)

    return Tally(
        rows,
        n("dropped"),
        n("rejected"),
        n("unlabeled"),
        {r.name: n(f"rule{i}") for i, r in enumerate(rules)},
        {f.column: n(f"outside{i}") + n(f"outside{i}", kept) for i, f in enumerate(found)},
    )


METRICS_SCHEMA = (
    "run_id string, dataset string, source string, stream_id string, batch_id long, "
    "rows_in long, silver long, "
    "duplicates long, quarantined long, dropped long, "
    "exact_duplicates long, key_duplicates long, unchanged long, unlabeled long, "
    "rules array<struct<name: string, action: string, failed: long, passed: long>>, "
    "outliers array<struct<column: string, method: string, threshold: double, action: string, "
    "low: double, high: double, rows: long>>"
)


def metrics_row(
    counts: RefineCounts,
    tally: Tally,
    rules: list[Rule],
    found: list[Fence],
    where: tuple[str, str, str],
    txn: tuple[str, int],
) -> tuple[Any, ...]:
    """A batch's row of `ops.quality_metrics` (`METRICS_SCHEMA`, `measured_at` aside), for
    `where`: (run id, dataset, source)."""
    per_rule = [
        (r.name, r.action, tally.failures[r.name], tally.rows - tally.failures[r.name])
        for r in rules
    ]
    per_column = [
        (f.column, f.method, f.threshold, f.action, f.low, f.high, tally.outside[f.column])
        for f in found
    ]
    return (
        *where,
        *txn,
        counts.rows_in,
        counts.silver,
        counts.duplicates,
        counts.quarantined,
        counts.dropped,
        counts.exact_duplicates,
        counts.key_duplicates,
        counts.unchanged,
        counts.unlabeled,
        per_rule,
        per_column,
    )


def counts_of_rows(rows: list[Row]) -> RefineCounts:
    """The counts of the batches whose rows of `ops.quality_metrics` (`metrics_row`) these
    are, one per batch."""

    def batch(row: Row) -> RefineCounts:
        def n(name: str) -> int:
            return int(row[name] or 0)

        return RefineCounts(
            rows_in=n("rows_in"),
            silver=n("silver"),
            exact_duplicates=n("exact_duplicates"),
            key_duplicates=n("key_duplicates"),
            quarantined=n("quarantined"),
            dropped=n("dropped"),
            unchanged=n("unchanged"),
            unlabeled=n("unlabeled"),
            rule_failures={r["name"]: int(r["failed"]) for r in row["rules"] or []},
            batches=1,
        )

    return RefineCounts.total([batch(row) for row in rows])


def counts_of(tally: Tally, upserted: int, dups: Duplicates) -> RefineCounts:
    """A batch's counts from its tally and silver's upsert: `dups.keys` latest versions went
    to the MERGE, `upserted` of them changed silver, the others it held already."""
    return RefineCounts(
        rows_in=tally.rows,
        silver=upserted,
        exact_duplicates=dups.exact,
        key_duplicates=dups.key,
        quarantined=tally.rejected,
        dropped=tally.dropped,
        unchanged=dups.keys - upserted,
        unlabeled=tally.unlabeled,
        rule_failures=tally.failures,
        batches=1,
    )
