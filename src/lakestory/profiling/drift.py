"""What changed since the previous profile of the same table: row count, columns, means, null
rates and label balance. Pure Python over two profiles (the JSON `profile` writes), so that a
profile compares with any earlier one without reading the old table version.

A change is flagged as drift when it passes a threshold below. The thresholds are deliberately
simple and visible; they point a person at what to look at, they do not decide anything.
"""

from __future__ import annotations

from typing import Any

MEAN_SHIFT = 0.5  # a mean moved by more than half the earlier standard deviation
NULL_RATE_CHANGE = 0.05  # a null rate moved by more than 5 percentage points
LABEL_DISTANCE = 0.05  # total variation distance between the label shares
MISSING = "(missing)"


def label_shares(label: dict[str, Any] | None) -> dict[str, float]:
    """Each label value's share of the rows, missing labels as one more value."""
    if not label:
        return {}
    counts = {**label.get("counts", {}), MISSING: label.get("missing", 0)}
    total = sum(counts.values())
    if not total:
        return {}
    return {k: v / total for k, v in counts.items() if v or k != MISSING}


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The drift of `after` from `before`; `drifted` lists what passed a threshold."""
    old, new = before["columns"], after["columns"]
    shared = [c for c in new if c in old]
    drifted: list[str] = []
    means = []
    for name in shared:
        m0, m1, s0 = old[name].get("mean"), new[name].get("mean"), old[name].get("std")
        if m0 is None or m1 is None:
            continue
        shift = (m1 - m0) / s0 if s0 else None
        flagged = (shift is not None and abs(shift) > MEAN_SHIFT) or (not s0 and m1 != m0)
        means.append(
            {"column": name, "before": m0, "after": m1, "shift_in_std": shift, "drifted": flagged}
        )
        if flagged:
            drifted.append(f"mean of {name}")
    null_rates = []
    for name in shared:
        r0, r1 = old[name]["null_rate"], new[name]["null_rate"]
        flagged = abs(r1 - r0) > NULL_RATE_CHANGE
        null_rates.append(
            {"column": name, "before": r0, "after": r1, "change": r1 - r0, "drifted": flagged}
        )
        if flagged:
            drifted.append(f"null rate of {name}")
    label = None
    p0, p1 = label_shares(before.get("label")), label_shares(after.get("label"))
    if p0 and p1:
        values = sorted(set(p0) | set(p1))
        distance = 0.5 * sum(abs(p1.get(v, 0.0) - p0.get(v, 0.0)) for v in values)
        label = {
            "values": values,
            "before": [p0.get(v, 0.0) for v in values],
            "after": [p1.get(v, 0.0) for v in values],
            "distance": distance,
            "drifted": distance > LABEL_DISTANCE,
        }
        if label["drifted"]:
            drifted.append("label balance")
    return {
        "version": before["version"],
        "profiled_at": before.get("profiled_at"),
        "rows": {"before": before["rows"], "after": after["rows"]},
        "columns_added": [c for c in new if c not in old],
        "columns_removed": [c for c in old if c not in new],
        "means": means,
        "null_rates": null_rates,
        "label": label,
        "drifted": drifted,
        "thresholds": {
            "mean_shift_in_std": MEAN_SHIFT,
            "null_rate_change": NULL_RATE_CHANGE,
            "label_distance": LABEL_DISTANCE,
        },
    }
