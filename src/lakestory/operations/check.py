"""`lakestory check NAME`: a dataset's config against a sample of its landing files, in
seconds, before any stage runs.

Each structured source's first files (by modification time) are read as ingest reads them
(`ingestion.read_structured`: the declared schema, the reader options, the encoding, drift),
then typed and checked by the rules refine uses (`quality.source_rules.rules_for`, outlier
fences fitted on the sample), so that the forecast is refine's own: the rows that would reach
silver, the quarantine and the unlabeled table, by reason. Nothing is written.

A problem is what would stop a run or leave it nothing to learn from, named by its config key
and file: no landing files; a declared column no file has; a column none of whose values
casts to its type; a label none of whose values maps to a class; a source all of whose rows
would be quarantined; a feature column with no value, or one class only, among the rows silver
would keep. Partial failures (some rows quarantined, as real data has) are forecast, not
problems. `exists_in` expectations are evaluated when their table exists already.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.config import Dataset, Settings, Source
from lakestory.config.models import Features
from lakestory.ingestion.structured import read_structured
from lakestory.io import Catalog
from lakestory.io.files import list_files
from lakestory.quality.casting import RAW_PREFIX, with_declared_types
from lakestory.quality.labels import class_index
from lakestory.quality.outliers import counted_fences, quarantine_rules
from lakestory.quality.rules import Checks, Rule
from lakestory.quality.source_rules import rules_for

SAMPLE_ROWS = 10_000
SAMPLE_FILES = 5


@dataclass(frozen=True)
class Problem:
    key: str  # the config key, as the YAML spells it: `sources.passengers.label`
    message: str


@dataclass
class SourceForecast:
    name: str
    files: int  # landed
    sampled_files: int
    rows: int = 0
    silver: int = 0
    quarantined: int = 0
    dropped: int = 0
    unlabeled: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # rule -> sampled rows failing it
    notes: list[str] = field(default_factory=list)


@dataclass
class Forecast:
    dataset: str
    config: Path
    sample_rows: int
    sources: list[SourceForecast] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        lines = [
            f"check {self.dataset} ({self.config}) on up to {SAMPLE_FILES} files and "
            f"{self.sample_rows:,} rows of each source:"
        ]
        for s in self.sources:
            lines.append(
                f"  {s.name:<13} {s.sampled_files} of {s.files} files, {s.rows:,} rows: "
                f"{s.silver:,} to silver, {s.quarantined:,} to quarantine, {s.dropped:,} "
                f"dropped, {s.unlabeled:,} unlabeled"
            )
            if s.reasons:
                reasons = sorted(s.reasons.items(), key=lambda kv: (-kv[1], kv[0]))
                lines.append("    failing: " + ", ".join(f"{name} {n:,}" for name, n in reasons))
            lines += [f"    {note}" for note in s.notes]
        lines += [f"  {line}" for line in self.features]
        if self.ok:
            lines.append("ok: nothing in the sample stops a run")
        else:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  {self.config}: {p.key}: {p.message}" for p in self.problems]
        return "\n".join(lines)


def check_dataset(
    spark: SparkSession,
    settings: Settings,
    dataset: Dataset,
    config: Path,
    rows: int = SAMPLE_ROWS,
) -> Forecast:
    """The forecast of a run of `dataset` on a sample of its landing files (see the module)."""
    forecast = Forecast(dataset.name, config, rows)
    catalog = Catalog(dataset, settings)
    kept: dict[str, DataFrame] = {}
    for name, source in dataset.structured().items():
        sample = _check_source(spark, catalog, name, source, rows, forecast)
        if sample is not None:
            kept[name] = sample
    for name, binary in dataset.sources.items():
        if name not in dataset.structured():
            files = len(list_files(spark, catalog.landing(binary), binary.glob))
            forecast.sources.append(SourceForecast(name, files, 0, notes=["binary: files only"]))
            if not files:
                forecast.problems.append(_no_files(name, catalog.landing(binary)))
    if isinstance(dataset.features, Features) and dataset.features.source in kept:
        _check_features(dataset, kept[dataset.features.source], forecast)
    return forecast


def _no_files(name: str, folder: str) -> Problem:
    return Problem(
        f"sources.{name}.path",
        f"no files under {folder.removeprefix('file:')} (the landing folder this path names "
        "under the warehouse root: copy the source's files there)",
    )


def _check_source(
    spark: SparkSession,
    catalog: Catalog,
    name: str,
    source: Source,
    rows: int,
    forecast: Forecast,
) -> DataFrame | None:
    """Forecast one source; the typed rows its sample would keep in silver (None if none)."""
    landed = sorted(
        list_files(spark, catalog.landing(source), source.glob),
        key=lambda f: (f.modification_ms, f.path),
    )
    result = SourceForecast(name, len(landed), min(len(landed), SAMPLE_FILES))
    forecast.sources.append(result)
    if not landed:
        forecast.problems.append(_no_files(name, catalog.landing(source)))
        return None
    batch = read_structured(
        spark, source, [f.path for f in landed[:SAMPLE_FILES]], list(source.schema_)
    )
    for drift in batch.drift:
        where = f"sources.{name}.schema.{drift.column}"
        if drift.change == "missing_column":
            forecast.problems.append(
                Problem(where, f"no sampled file has this column ({drift.detail})")
            )
        else:
            result.notes.append(f"{drift.column}: {drift.change}, {drift.detail} ({drift.action})")
    if batch.frame is None:
        forecast.problems.append(Problem(f"sources.{name}", "the sampled files hold no rows"))
        return None
    typed = batch.frame.limit(rows).transform(with_declared_types(source)).localCheckpoint()
    _, fences = counted_fences(typed, dict(source.outliers))
    rules = [*rules_for(_evaluable(spark, source, result), catalog), *quarantine_rules(fences)]
    checks = Checks(tuple(rules))
    checked = checks.apply(typed).localCheckpoint()
    first = checked.agg(*_counts(checks, rules)).first()
    assert first is not None
    result.rows, result.silver = first["rows"], first["kept"]
    result.quarantined, result.dropped = first["rejected"], first["dropped"]
    result.unlabeled = first["unlabeled"]
    result.reasons = {r.name: first[f"rule{i}"] for i, r in enumerate(rules) if first[f"rule{i}"]}
    _problems_of(name, source, checked, checks, rules, forecast)
    return checked.where(checks.kept())


def _evaluable(spark: SparkSession, source: Source, result: SourceForecast) -> Source:
    """`source` without the `exists_in` expectations whose table does not exist yet."""
    kept = []
    for e in source.expectations:
        if e.exists_in is not None and not spark.catalog.tableExists(e.exists_in.table):
            result.notes.append(f"{e.name}: not evaluated, {e.exists_in.table} is not there yet")
            continue
        kept.append(e)
    return source.model_copy(update={"expectations": kept})


def _counts(checks: Checks, rules: list[Rule]) -> list[Column]:
    return [
        F.count(F.lit(1)).alias("rows"),
        F.count_if(checks.kept()).alias("kept"),
        F.count_if(checks.rejected()).alias("rejected"),
        F.count_if(checks.dropped()).alias("dropped"),
        F.count_if(checks.unlabeled()).alias("unlabeled"),
        *[F.count_if(checks.failed_rule(i)).alias(f"rule{i}") for i in range(len(rules))],
    ]


def _problems_of(
    name: str,
    source: Source,
    checked: DataFrame,
    checks: Checks,
    rules: list[Rule],
    forecast: Forecast,
) -> None:
    failing = {r.name: i for i, r in enumerate(rules)}
    personal = source.personal.columns()  # their values are never shown
    casts = [
        (column, spark_type, failing[f"castable:{column}:{spark_type}"])
        for column, spark_type in source.schema_.items()
        if f"castable:{column}:{spark_type}" in failing
    ]
    shares = []  # one aggregate: each typed column's given values, and those that fail
    for column, _, rule in casts:
        raw = F.col(f"{RAW_PREFIX}{column}")
        given = raw.isNotNull() & (F.trim(raw) != "")
        shares.append(F.count_if(given))
        shares.append(F.count_if(given & checks.failed_rule(rule)))
    counted = checked.agg(*shares).first() if shares else None
    for i, (column, spark_type, rule) in enumerate(casts):
        assert counted is not None
        n, failed = counted[2 * i], counted[2 * i + 1]
        if not failed:
            continue
        raw = F.col(f"{RAW_PREFIX}{column}")
        if failed < n:
            _source(forecast, name).notes.append(
                f"{column}: {failed:,} of {n:,} values ({failed / n:.2%}) do not cast to "
                f"{spark_type}"
            )
            continue
        bad = checked.where(checks.failed_rule(rule))
        forecast.problems.append(
            Problem(
                f"sources.{name}.schema.{column}",
                f"none of the {n:,} sampled values casts to {spark_type} (for example "
                f"{_examples(bad, raw, column in personal)}): declare the type the values "
                "have",
            )
        )
    label = source.label
    if label is not None and "label_invalid" in failing:
        raw = F.col(f"{RAW_PREFIX}{label.column}")
        invalid = checked.where(checks.failed_rule(failing["label_invalid"]))
        labelled = checked.where(~checks.failed_rule(failing["label_missing"]))
        n, failed = labelled.count(), invalid.count()
        if failed:
            message = (
                f"{failed:,} of {n:,} sampled labels match no class (values "
                f"{_examples(invalid, raw, label.column in personal)}); the classes are "
                + ", ".join(label.class_names())
            )
            if failed == n:
                forecast.problems.append(Problem(f"sources.{name}.label", message))
            else:
                _source(forecast, name).notes.append(f"label: {message}")
    rows = _source(forecast, name)
    if rows.rows and rows.silver == 0:
        top = sorted(rows.reasons.items(), key=lambda kv: -kv[1])[:3]
        forecast.problems.append(
            Problem(
                f"sources.{name}",
                f"every one of the {rows.rows:,} sampled rows would leave silver empty ("
                + ", ".join(f"{r}: {n:,}" for r, n in top)
                + ")",
            )
        )


def _source(forecast: Forecast, name: str) -> SourceForecast:
    return next(s for s in forecast.sources if s.name == name)


def _examples(rows: DataFrame, raw: Column, personal: bool, n: int = 3) -> str:
    """The most frequent values among `rows`, quoted; none of a personal column."""
    if personal:
        return "not shown: a personal column"
    values = rows.groupBy(raw.alias("v")).count().orderBy(F.desc("count"), "v").limit(n)
    return ", ".join(repr(r.v) for r in values.collect())


def _check_features(dataset: Dataset, kept: DataFrame, forecast: Forecast) -> None:
    """Each feature column of the main source has a value among the rows silver would keep,
    and the label holds two classes at least."""
    feats = dataset.feature_spec
    assert isinstance(feats, Features)
    main = dataset.structured()[feats.source]
    columns = [c for c in feats.columns if c in main.schema_]
    number = class_index(main, F.col(feats.label))
    first = kept.agg(
        F.count(F.lit(1)).alias("rows"),
        *[F.count(c).alias(f"n_{c}") for c in columns],
        F.collect_set(number).alias("classes"),
    ).first()
    assert first is not None
    if not first["rows"]:  # the source's own problem says why
        forecast.features.append("features      not checked: no sampled row reaches silver")
        return
    empty = [c for c in columns if not first[f"n_{c}"]]
    for c in empty:
        forecast.problems.append(
            Problem(
                "features.columns",
                f"{c!r} has no value among the {first['rows']:,} sampled rows silver would keep",
            )
        )
    classes = sorted(first["classes"])
    names = dataset.class_names
    found = ", ".join(names[c] for c in classes if c < len(names))
    if len(classes) < 2:
        forecast.problems.append(
            Problem(
                "features.label",
                f"the sampled rows silver would keep hold {len(classes)} class(es) "
                f"({found or 'none'}); a model needs two at least",
            )
        )
    forecast.features.append(
        f"features      {len(columns) - len(empty)} of {len(columns)} columns with values in "
        f"the sample; classes found: {found or 'none'}"
    )
