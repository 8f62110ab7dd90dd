"""Row rules, the valid/rejected split, and de-duplication."""

from lakestory.quality.dedup import Duplicates, count_duplicates, keep_latest_per_key
from lakestory.quality.rules import (
    REASONS,
    Checks,
    Rule,
    castable,
    expression,
    in_set,
    not_malformed,
    not_null,
    split,
)

__all__ = [
    "REASONS",
    "Checks",
    "Rule",
    "castable",
    "Duplicates",
    "count_duplicates",
    "expression",
    "in_set",
    "keep_latest_per_key",
    "not_malformed",
    "not_null",
    "split",
]
