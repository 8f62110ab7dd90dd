"""Plots of a profile as PNG data URIs, so that the HTML report is one self-contained file.

matplotlib's object API (a `Figure` of its own, no pyplot) keeps plotting free of global state
and of any display backend; the sample grid is composed with Pillow.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from matplotlib import dates as mdates
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageOps

from lakestory.profiling.images import Sample

BAR = "#4c72b0"
DPI = 96


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return data_uri(buffer.getvalue())


def histogram(hist: dict[str, list[Any]], temporal: bool = False) -> str:
    """Bucket counts over their edges (dates on the axis for a date/time column)."""
    fig = Figure(figsize=(4.2, 2.0))
    ax = fig.add_subplot()
    edges: Sequence[float] = hist["edges"]
    if temporal:
        edges = [float(mdates.date2num(datetime.fromisoformat(e))) for e in hist["edges"]]
        ax.xaxis_date()
        fig.autofmt_xdate()
    ax.stairs(hist["counts"], edges, fill=True, color=BAR)
    ax.set_ylabel("rows")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def bars(labels: Sequence[str], values: Sequence[float], xlabel: str = "rows") -> str:
    """Horizontal bars, the first label on top, each with its value."""
    height = max(1.2, 0.25 * len(labels) + 0.6)
    fig = Figure(figsize=(4.2, height))
    ax = fig.add_subplot()
    shown = [label if len(label) <= 28 else label[:27] + "…" for label in labels]
    drawn = ax.barh(range(len(values)), values, color=BAR)
    ax.bar_label(drawn, fontsize=7, padding=2)
    ax.set_yticks(range(len(values)), shown, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def paired_bars(labels: Sequence[str], before: Sequence[float], after: Sequence[float]) -> str:
    """Two shares per label: the previous profile's and this one's."""
    fig = Figure(figsize=(4.6, 2.2))
    ax = fig.add_subplot()
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], before, width=0.4, color="#bbbbbb", label="previous")
    ax.bar([i + 0.2 for i in x], after, width=0.4, color=BAR, label="this version")
    ax.set_xticks(list(x), list(labels), fontsize=8)
    ax.set_ylabel("share of rows")
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def heatmap(columns: Sequence[str], matrix: Sequence[Sequence[float | None]]) -> str:
    """Pearson correlations, -1 (blue) to 1 (red), each cell annotated."""
    n = len(columns)
    size = max(3.0, 0.55 * n + 1.5)
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.add_subplot()
    values = [[float("nan") if v is None else v for v in row] for row in matrix]
    image = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(n), list(columns), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), list(columns), fontsize=8)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v is not None and n <= 12:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, shrink=0.8)
    return _png(fig)


def sample_grid(samples: Sequence[Sample], cell: int = 64) -> str:
    """One row of images per label, the label written on its left; small images are scaled
    up without smoothing, so that their pixels stay visible."""
    rows: dict[str, list[Sample]] = {}
    for s in samples:
        rows.setdefault(s.label, []).append(s)
    columns = max(len(v) for v in rows.values())
    margin, gap = 96, 4
    grid = Image.new(
        "RGB",
        (margin + columns * (cell + gap), len(rows) * (cell + gap) + gap),
        "white",
    )
    draw = ImageDraw.Draw(grid)
    for r, (label, items) in enumerate(rows.items()):
        top = gap + r * (cell + gap)
        draw.text((6, top + cell // 2 - 6), label[:14], fill="black")
        for c, s in enumerate(items):
            with Image.open(io.BytesIO(s.content)) as opened:
                image = ImageOps.autocontrast(opened.convert("L"))
            image = ImageOps.contain(image, (cell, cell), Image.Resampling.NEAREST)
            grid.paste(image.convert("RGB"), (margin + c * (cell + gap), top))
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG")
    return data_uri(buffer.getvalue())
