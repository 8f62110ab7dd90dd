"""What the dataset config says about a table being profiled: its label, key, outlier
settings, which columns must never show a value, and where an image table's labels live.

A table `<layer>.<dataset>_<source>` belongs to that dataset's source. The config decides what
the report may show: bronze and quarantine hold raw records, so the source's personal columns
(`personal.tokenize`, `drop`, `generalise`) and the raw-text columns that can carry any field
(`_corrupt_record`, `_rescued`) are reported by counts only. A bronze or quarantine table that
no dataset claims gets every text column masked, since nothing says which of them are personal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from lakestory.columns import CORRUPT, RESCUED
from lakestory.config import Dataset, Source
from lakestory.config.models import Outlier
from lakestory.io import Catalog, TableRef

# raw text that can hold any field of a record, names and e-mail addresses among them
RAW_TEXT_COLUMNS = frozenset({CORRUPT, RESCUED})
# layers whose rows are records as they landed, personal data included
RAW_LAYERS = frozenset({"bronze", "quarantine"})
parse_table = TableRef.parse


@dataclass(frozen=True)
class TableSpec:
    """How to profile one table.

    Attributes:
        table: The table.
        dataset: The dataset it belongs to, if a dataset claims it.
        source: The source name within that dataset.
        label: The label column, under this table's name for it.
        key: The business key (or, for image tables, `sha256`): duplicates are counted by it.
        outliers: Configured outlier settings by this table's column names.
        masked: Columns whose values never appear in the report (counts only).
        declared: A raw table's declared column types: its text is counted by whether it
            casts to them.
        mask_text: Mask every text column (a raw table no dataset claims).
        label_table: For an image table, the table that holds the labels of its files.
        label_key: The file-name column of `label_table`.
        label_column: The label column of `label_table`.
    """

    table: TableRef
    dataset: Dataset | None = None
    source: str | None = None
    label: str | None = None
    key: str | None = None
    outliers: dict[str, Outlier] = field(default_factory=dict)
    masked: frozenset[str] = frozenset()
    declared: dict[str, str] = field(default_factory=dict)
    mask_text: bool = False
    label_table: TableRef | None = None
    label_key: str | None = None
    label_column: str | None = None


def _labelled_source(dataset: Dataset) -> tuple[str, Source] | None:
    """The dataset's first structured source with a label: for an image dataset, the manifest
    that names each file (its key) and its label."""
    for name, source in dataset.structured().items():
        if source.label is not None:
            return name, source
    return None


def resolve(table: TableRef, datasets: Iterable[Dataset]) -> TableSpec:
    """The spec of `table` from the first dataset with a source named by the table."""
    raw = table.layer in RAW_LAYERS
    for dataset in datasets:
        for name, any_source in dataset.sources.items():
            if table.name != Catalog(dataset).bronze(name).name:
                continue
            if not isinstance(any_source, Source):  # binary files: bronze only, no config
                labelled = _labelled_source(dataset)
                if labelled is None:
                    return TableSpec(table, dataset, name, key="sha256")
                label_name, label_source = labelled
                assert label_source.label is not None
                return TableSpec(
                    table,
                    dataset,
                    name,
                    key="sha256",
                    label_table=Catalog(dataset).silver(label_name),
                    label_key=label_source.silver_name(label_source.key),
                    label_column=label_source.silver_name(label_source.label.column),
                )
            rename = (lambda c: c) if raw else any_source.silver_name
            label = any_source.label.column if any_source.label else None
            masked = any_source.personal.columns() | RAW_TEXT_COLUMNS if raw else set()
            return TableSpec(
                table,
                dataset,
                name,
                label=rename(label) if label else None,
                key=rename(any_source.key),
                outliers={rename(c): o for c, o in any_source.outliers.items()},
                masked=frozenset(masked),
                declared=dict(any_source.schema_) if raw else {},
            )
    return TableSpec(table, masked=RAW_TEXT_COLUMNS if raw else frozenset(), mask_text=raw)
