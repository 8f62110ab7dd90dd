"""The profile as one self-contained HTML page: styles inline, plots as data URIs, no script,
nothing fetched. Every value from the data is escaped; masked columns show counts only."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

from lakestory.profiling import plots
from lakestory.profiling.drift import label_shares
from lakestory.profiling.images import Sample

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; margin: 24px auto; max-width: 1180px;
       padding: 0 16px; background: #fafafa; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { border-bottom: 2px solid #4c72b0;
     padding-bottom: 4px; margin-top: 36px; } h3 { margin: 0 0 6px; font-size: 16px; }
.meta { color: #555; } .muted { color: #888; } .flag { color: #b00020; font-weight: 600; }
table { border-collapse: collapse; margin: 8px 0; background: white; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; font-size: 13px; }
th { background: #eef1f7; } td.l, th.l { text-align: left; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: white; border: 1px solid #ddd; border-radius: 6px; padding: 10px;
        width: 540px; box-sizing: border-box; }
.card img { max-width: 100%; } .tiles { display: flex; gap: 16px; flex-wrap: wrap; }
.tile { background: white; border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; }
.tile b { display: block; font-size: 20px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _count(value: Any) -> str:
    return "—" if value is None else f"{value:,}"


def _num(value: Any, digits: int = 4) -> str:
    """A value from the data: integers as they are (a year stays 1987), floats to `digits`
    significant digits."""
    if value is None:
        return "—"
    if isinstance(value, bool | int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return _e(value)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1) -> str:
    """A table whose first `left` columns are text (left-aligned); cells are HTML already."""
    head = "".join(
        f"<th class='l'>{_e(h)}</th>" if i < left else f"<th>{_e(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='l'>{c}</td>" if i < left else f"<td>{c}</td>" for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(uri: str, alt: str) -> str:
    return f"<img src='{uri}' alt='{_e(alt)}'>"


def _tiles(items: Sequence[tuple[str, Any]]) -> str:
    return (
        "<div class='tiles'>"
        + "".join(f"<div class='tile'>{_e(k)}<b>{_count(v)}</b></div>" for k, v in items)
        + "</div>"
    )


def _drift(previous: dict[str, Any] | None) -> str:
    if previous is None:
        return "<p class='muted'>The first profile of this table: nothing to compare with.</p>"
    out = [
        f"<p>Compared with version {_e(previous['version'])} "
        f"(profiled {_e(previous.get('profiled_at') or '?')}). Rows "
        f"{_count(previous['rows']['before'])} → {_count(previous['rows']['after'])}.</p>"
    ]
    if previous["drifted"]:
        flagged = ", ".join(_e(d) for d in previous["drifted"])
        out.append(f"<p class='flag'>Drift: {flagged}.</p>")
    else:
        out.append("<p>No mean, null rate or label balance moved past its threshold.</p>")
    for key, what in (("columns_added", "added"), ("columns_removed", "removed")):
        if previous[key]:
            out.append(f"<p>Columns {what}: {_e(', '.join(previous[key]))}</p>")
    flag = "<span class='flag'>drift</span>"
    if previous["means"]:
        out.append("<h3>Means</h3>")
        out.append(
            _table(
                ["column", "before", "after", "shift (earlier std)", ""],
                [
                    [
                        _e(m["column"]),
                        _num(m["before"]),
                        _num(m["after"]),
                        _num(m["shift_in_std"], 3),
                        flag if m["drifted"] else "",
                    ]
                    for m in previous["means"]
                ],
            )
        )
    with_nulls = [n for n in previous["null_rates"] if n["before"] or n["after"]]
    out.append("<h3>Null rates</h3>")
    if with_nulls:
        out.append(
            _table(
                ["column", "before", "after", "change", ""],
                [
                    [
                        _e(n["column"]),
                        _pct(n["before"]),
                        _pct(n["after"]),
                        _pct(n["change"]),
                        flag if n["drifted"] else "",
                    ]
                    for n in with_nulls
                ],
            )
        )
    others = len(previous["null_rates"]) - len(with_nulls)
    if others:
        out.append(f"<p class='muted'>{others} more columns had no nulls, before or after.</p>")
    label = previous.get("label")
    if label:
        verdict = flag if label["drifted"] else ""
        out.append(
            f"<h3>Label balance</h3><p>Total variation distance "
            f"{label['distance']:.3f} {verdict}</p>"
        )
        out.append(
            _img(plots.paired_bars(label["values"], label["before"], label["after"]), "labels")
        )
    return "".join(out)


def _label(label: dict[str, Any] | None) -> str:
    if not label:
        return "<p class='muted'>No label column is configured for this table.</p>"
    shares = label_shares(label)
    counts = {**label["counts"], **({"(missing)": label["missing"]} if label["missing"] else {})}
    names = list(counts)
    where = f" (from {_e(label['table'])})" if label.get("table") else ""
    return (
        f"<p>Label column <b>{_e(label['column'])}</b>{where}.</p>"
        + _img(plots.bars(names, [counts[n] for n in names]), "label balance")
        + _table(
            ["value", "rows", "share"],
            [[_e(n), _count(counts[n]), _pct(shares.get(n))] for n in names],
        )
    )


def _outliers(found: dict[str, dict[str, Any]]) -> str:
    if not found:
        return "<p class='muted'>No numeric columns.</p>"
    rows = [
        [
            _e(name),
            _e(o["method"]),
            _num(o["threshold"]),
            _num(o["low"]),
            _num(o["high"]),
            _count(o.get("rows")),
        ]
        for name, o in found.items()
    ]
    return _table(
        ["column", "method", "threshold", "low fence", "high fence", "rows outside"], rows, 2
    )


def _columns_table(profile: dict[str, Any]) -> str:
    rows = []
    declared = any("uncastable" in c for c in profile["columns"].values())
    for name, c in profile["columns"].items():
        masked = " <span class='muted'>(masked)</span>" if c["masked"] else ""
        rows.append(
            [
                f"<a href='#col-{_e(name)}'>{_e(name)}</a>{masked}",
                _e(c["type"]),
                _count(c["nulls"]),
                _pct(c["null_rate"]),
                _count(c.get("distinct")),
                *([_count(c.get("uncastable"))] if declared else []),
                _num(c.get("min")),
                _num(c.get("max")),
                _num(c.get("mean")),
                _num(c.get("std")),
            ]
        )
    headers = ["column", "type", "nulls", "null rate", "distinct≈"]
    headers += ["not castable to its declared type"] if declared else []
    headers += ["min", "max", "mean", "std"]
    return _table(headers, rows, 2)


def _column_card(name: str, c: dict[str, Any], hist: Any, top: Any) -> str:
    parts = [f"<div class='card' id='col-{_e(name)}'><h3>{_e(name)} "]
    parts.append(f"<span class='muted'>{_e(c['type'])}</span></h3>")
    facts = [("nulls", f"{_count(c['nulls'])} ({_pct(c['null_rate'])})")]
    if "distinct" in c:
        facts.append(("distinct (approx.)", _count(c["distinct"])))
    if "uncastable" in c:
        facts.append((f"not castable to {c['declared_type']}", _count(c["uncastable"])))
    for key in ("min", "max", "mean", "std"):
        if c.get(key) is not None:
            facts.append((key, _num(c[key])))
    if "length" in c and c["length"]["min"] is not None:
        length = c["length"]
        facts.append(
            (
                "length",
                f"{_num(length['min'])} – {_num(length['max'])}, mean {_num(length['mean'], 3)}",
            )
        )
    parts.append(_table(["", ""], [[_e(k), v] for k, v in facts]))
    if c.get("quantiles"):
        q = c["quantiles"]
        parts.append(_table(list(q), [[_num(v) for v in q.values()]], 0))
    if c["masked"]:
        parts.append(
            "<p class='muted'>Personal or raw-record data: values are not shown, "
            "only how often the most frequent ones occur.</p>"
        )
    if hist:
        parts.append(_img(plots.histogram(hist, temporal=c["kind"] == "temporal"), name))
    if top and c["masked"]:
        parts.append(
            _table(
                ["most frequent values (masked)", "rows"], [["…", _count(t["count"])] for t in top]
            )
        )
    elif top:
        labels = [str(t["value"]) for t in top]
        parts.append(_img(plots.bars(labels, [t["count"] for t in top]), f"top values of {name}"))
    elif c.get("distinct") and c["type"] not in ("double", "float", "binary", "boolean"):
        parts.append("<p class='muted'>(Nearly) every value is distinct: no top values.</p>")
    parts.append("</div>")
    return "".join(parts)


def _images(images: dict[str, Any], samples: Sequence[Sample]) -> str:
    out = [
        _tiles(
            [
                ("decoded images", images["decoded"]),
                ("undecodable files", images["undecodable"]),
                *(
                    [("identical images, different labels", images["label_conflicts"]["contents"])]
                    if "label_conflicts" in images
                    else []
                ),
            ]
        ),
        "<h3>Sizes (width × height)</h3>",
    ]
    sizes = images["sizes"]
    if sizes:
        names = [f"{s['width']}×{s['height']}" for s in sizes]
        out.append(_img(plots.bars(names, [s["rows"] for s in sizes], "images"), "sizes"))
    if samples:
        out.append("<h3>Samples per label</h3>")
        out.append(_img(plots.sample_grid(samples), "sample images per label"))
    return "".join(out)


def render(profile: dict[str, Any], samples: Sequence[Sample] = ()) -> str:
    """The HTML page of a profile (and the sampled images of an image table)."""
    title = f"Profile of {profile['table']} — version {profile['version']}"
    owner = (
        f"dataset {_e(profile['dataset'])}, source {_e(profile['source'])}"
        if profile.get("dataset")
        else "no dataset config claims this table"
    )
    dup = profile["duplicates"]
    tiles = [("rows", profile["rows"]), ("columns", len(profile["columns"]))]
    tiles.append(("exact duplicate rows", dup["exact"]))
    if "key" in dup:
        tiles.append((f"duplicate {dup['key_column']}", dup["key"]))
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p class='meta'>{owner}; profiled {_e(profile['profiled_at'])}; "
        f"{_count(profile['rows'])} rows.</p>",
        _tiles(tiles),
        "<h2>Compared with the previous profile</h2>",
        _drift(profile.get("previous")),
        "<h2>Label balance</h2>",
        _label(profile.get("label")),
        "<h2>Outliers</h2>",
        _outliers(profile["outliers"]),
        "<h2>Columns</h2>",
        _columns_table(profile),
    ]
    if "images" in profile:
        body += ["<h2>Images</h2>", _images(profile["images"], samples)]
    corr = profile["correlations"]
    if len(corr["columns"]) >= 2:
        body += [
            "<h2>Correlations of numeric columns</h2>",
            _img(plots.heatmap(corr["columns"], corr["matrix"]), "correlations"),
        ]
    body.append("<h2>Each column</h2><div class='cards'>")
    for name, c in profile["columns"].items():
        body.append(
            _column_card(name, c, profile["histograms"].get(name), profile["top_values"].get(name))
        )
    body.append("</div>")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
