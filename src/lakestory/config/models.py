"""Typed, frozen configuration objects. Every model forbids unknown keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from lakestory.columns import FILE_MODIFICATION_TIME, INGESTED_AT

SparkType = Literal["string", "int", "bigint", "double", "float", "boolean", "date", "timestamp"]
TokenKind = Literal["id", "email", "phone"]
Generalisation = Literal["year", "age_band", "district"]
# the suffix of the silver column that carries a tokenised identifier's artificial id
PSEUDONYM = "pseudonym"
# bronze's metadata columns an age may be taken at (`Personal.age_as_of`), beside the schema's
AGE_AS_OF_METADATA = (INGESTED_AT, FILE_MODIFICATION_TIME)


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WarehouseSettings(Frozen):
    root: Path = Path("lakehouse")


class SparkSettings(Frozen):
    master: str = "local[*]"
    app_name: str = "lakestory"
    delta_package: str = "io.delta:delta-spark_4.2_2.13:4.4.0"
    conf: dict[str, str] = Field(default_factory=dict)


class MlflowSettings(Frozen):
    tracking_uri: str = ""
    experiment_prefix: str = "lakestory"


class PrivacySettings(Frozen):
    key_env: str = "LAKESTORY_TOKEN_KEY"
    key_file: Path = Path("conf/local/token.key")


TablePattern = Annotated[str, Field(pattern=r"^[A-Za-z0-9_*?\[\]!-]+(\.[A-Za-z0-9_*?\[\]!-]+)?$")]


class Role(Frozen):
    """The tables a role may query in `lakestory sql --role`: `<layer>.<table>` names matched
    against glob patterns (`gold.*`, `*`); a table must match some `allow` and no `deny`."""

    allow: list[TablePattern] = Field(min_length=1)
    deny: list[TablePattern] = Field(default_factory=list)


class Settings(Frozen):
    """Settings shared by every dataset (conf/base/lakestory.yaml and its overlays)."""

    warehouse: WarehouseSettings = WarehouseSettings()
    spark: SparkSettings = SparkSettings()
    mlflow: MlflowSettings = MlflowSettings()
    privacy: PrivacySettings = PrivacySettings()
    roles: dict[str, Role] = Field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.warehouse.root.resolve()

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{self.root / 'mlflow.db'}"


LabelRoute = Literal["quarantine", "unlabeled"]


class LabelConflicts(Frozen):
    """Identical content under different labels, found through a binary source of the same
    dataset: `file` names this source's column holding the file's name, matched against the
    last part of the binary source's file paths; files with the same sha256 must carry one
    label."""

    source: str
    file: str
    action: Literal["warn", "quarantine"] = "quarantine"


# a label's value as YAML gives it: `bool` first, so that `[false, true]` stays booleans
# rather than becoming the integers 0 and 1
LabelValue = bool | int | str
# the schema types a label may have: a class is matched on the value's text
LABEL_TYPES = ("string", "int", "bigint", "boolean")


def label_text(value: LabelValue) -> str:
    """A label value as Spark casts it to text (`true`, `1`, `yes`): what matching compares."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Label(Frozen):
    """The label column, its values, the classes they map to, and where rows without a usable
    label go. Give one of:

    - `allowed`: the values a label may take, each its own class number (`[0, 1]`, the digits
      0 to 9; booleans count as 0 and 1);
    - `positive` (and optionally `negative`): a binary label. `positive` is class 1; `negative`
      is class 0, or, when left out, every other value is;
    - `classes`: a label of several classes, listed in the order of their numbers
      (`[setosa, versicolor, virginica]` are classes 0, 1 and 2).

    Values are matched exactly (`ignore_case: true` ignores case and surrounding space). A label
    is missing when it is null, empty, or one of the `missing` tokens (compared trimmed and
    case-insensitively, e.g. `unknown`); it is invalid when it matches no class. `on_missing`
    and `on_invalid` route such rows to quarantine, or to the `unlabeled` table,
    `silver.<dataset>_<source>_unlabeled`, pseudonymised like silver and kept for later
    labelling: a labelled version of the record arriving later takes its row out of it.
    """

    column: str
    allowed: list[LabelValue] | None = Field(default=None, min_length=1)
    positive: LabelValue | list[LabelValue] | None = None
    negative: LabelValue | list[LabelValue] | None = None
    classes: list[LabelValue] | None = Field(default=None, min_length=2)
    ignore_case: bool = False
    missing: list[str] = Field(default_factory=list)
    on_missing: LabelRoute = "quarantine"
    on_invalid: LabelRoute = "quarantine"
    conflicts: LabelConflicts | None = None

    @model_validator(mode="after")
    def _one_mapping(self) -> Label:
        given = [k for k in ("allowed", "positive", "classes") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give one of `allowed` (the values, each its class number), `positive` (a "
                "binary label: the positive value, with `negative` optional) or `classes` "
                f"(several classes, in order){'; not ' + ' and '.join(given) if given else ''}"
            )
        if self.negative is not None and self.positive is None:
            raise ValueError("`negative` goes with `positive`")
        seen: dict[str, str] = {}
        for index, values in enumerate(self.class_values()):
            for value in values:
                text = self.normalise(label_text(value))
                if text in seen:
                    raise ValueError(
                        f"the value {value!r} is given twice (classes {seen[text]} and "
                        f"{self.class_names()[index]})"
                        + (
                            "; `ignore_case` compares values trimmed and in lower case"
                            if self.ignore_case
                            else ""
                        )
                    )
                seen[text] = self.class_names()[index]
        return self

    def normalise(self, text: str) -> str:
        return text.strip().lower() if self.ignore_case else text

    def class_values(self) -> list[list[LabelValue]]:
        """For each class, in the order of their numbers, the values that map to it; with
        `positive` alone, class 0 is every value but those of class 1 (an empty list here)."""
        if self.classes is not None:
            return [[v] for v in self.classes]
        if self.positive is not None:
            return [_listed(self.negative), _listed(self.positive)]
        assert self.allowed is not None
        return [[v] for v in self.allowed]

    def class_names(self) -> list[str]:
        """Each class's name, in the order of their numbers: its value (the first, if several),
        `not <positive>` for a class 0 of every other value."""
        names = []
        for values in self.class_values():
            if values:
                names.append(label_text(values[0]))
            else:
                names.append(f"not {label_text(_listed(self.positive)[0])}")
        return names

    @property
    def others_negative(self) -> bool:
        """Whether every value that is not positive is class 0 (`positive` without
        `negative`)."""
        return self.positive is not None and self.negative is None

    def numbered(self) -> bool:
        """Whether the values are the class numbers themselves (`allowed: [0, 1, ...]`, or
        `[false, true]`), as image features and models without a mapping need."""
        if self.allowed is None:
            return False
        numbers = [int(v) if isinstance(v, bool) else v for v in self.allowed]
        return numbers == list(range(len(numbers)))

    def check_type(self, declared: str) -> None:
        """That every value of the mapping can be a value of a column of type `declared`."""
        if declared not in LABEL_TYPES:
            raise ValueError(
                f"a label column must be of type {', '.join(LABEL_TYPES)}, not {declared} "
                "(declare it string and list its values under `classes` or `positive`)"
            )
        values = [v for vs in self.class_values() for v in vs]
        if declared == "boolean":
            wrong = [
                v
                for v in values
                if not isinstance(v, bool)
                and label_text(v).strip().lower() not in ("true", "false")
            ]
            hint = "use true and false"
        elif declared in ("int", "bigint"):
            wrong = [v for v in values if isinstance(v, bool) or not _integer(v)]
            hint = "use whole numbers, or declare the column string"
        else:
            wrong = []
            hint = ""
        if wrong:
            raise ValueError(
                f"{', '.join(repr(v) for v in wrong)} cannot be a value of the {declared} "
                f"column {self.column!r}: {hint}"
            )


def _listed(value: LabelValue | list[LabelValue] | None) -> list[LabelValue]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _integer(value: LabelValue) -> bool:
    if isinstance(value, int):
        return True
    try:
        int(str(value).strip())
    except ValueError:
        return False
    return True


Action = Literal["warn", "drop", "quarantine", "fail"]


class InSet(Frozen):
    column: str
    values: list[int | float | str] = Field(min_length=1)


class Range(Frozen):
    """`min <= column <= max`; either bound may be left out."""

    column: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _a_bound(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        return self


class Regex(Frozen):
    """The whole value matches `pattern` (Java regular expression syntax)."""

    column: str
    pattern: str


class Castable(Frozen):
    column: str
    type: SparkType


class ExistsIn(Frozen):
    """The value is a key of another table, e.g. `silver.customers_accounts`."""

    column: str
    table: str = Field(pattern=r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")
    key: str | None = None  # the other table's column; the same name by default


RULE_KINDS = ("expr", "not_null", "unique", "in_set", "range", "regex", "castable", "exists_in")


class Expectation(Frozen):
    """A named row rule and what to do with a row that fails it.

    Exactly one kind: `expr` (a Spark SQL boolean expression that holds for a good row), or a
    built-in rule: `not_null`, `unique` (a column, or columns together), `in_set`, `range`,
    `regex`, `castable`, `exists_in`. A null value passes every built-in rule but `not_null`.

    `action`: `warn` counts the row and keeps it; `drop` counts it and leaves it out of silver;
    `quarantine` routes it to the quarantine table with every rule it failed; `fail` stops the
    run before anything is written to silver.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    action: Action = "quarantine"
    expr: str | None = None
    not_null: str | None = None
    unique: str | list[str] | None = None
    in_set: InSet | None = None
    range: Range | None = None
    regex: Regex | None = None
    castable: Castable | None = None
    exists_in: ExistsIn | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Expectation:
        given = [k for k in RULE_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of {', '.join(RULE_KINDS)} (got {', '.join(given) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in RULE_KINDS if getattr(self, k) is not None)

    def columns(self) -> list[str]:
        """The source columns a built-in rule names (an `expr` is checked by Spark instead)."""
        if self.not_null is not None:
            return [self.not_null]
        if self.unique is not None:
            return [self.unique] if isinstance(self.unique, str) else list(self.unique)
        for spec in (self.in_set, self.range, self.regex, self.castable, self.exists_in):
            if spec is not None:
                return [spec.column]
        return []


class Outlier(Frozen):
    """How to find and treat outliers of one numeric column.

    `mad`: robust z-score, |x - median| / (MAD / 0.6745) > threshold (default 3.5).
    `iqr`: outside [Q1 - threshold * IQR, Q3 + threshold * IQR] (default 1.5).
    `action`: `flag` names the column in silver's `_outliers`; `quarantine` routes the row to
    quarantine (reason `outlier:<column>`); `clip` replaces the value with the fence it crossed.
    """

    method: Literal["mad", "iqr"] = "mad"
    threshold: float | None = Field(default=None, gt=0)
    action: Literal["flag", "quarantine", "clip"] = "flag"

    @property
    def k(self) -> float:
        if self.threshold is not None:
            return self.threshold
        return 3.5 if self.method == "mad" else 1.5


NUMERIC_TYPES = {"int", "bigint", "double", "float"}


class Personal(Frozen):
    """Personal columns: tokenised (an identifier, normalised per kind first), dropped, or
    generalised. `country_code` (digits, e.g. "44") completes a phone number written without
    one, so that one number gets one token however it is written; a source that tokenises a
    phone column must give it."""

    tokenize: dict[str, TokenKind] = Field(default_factory=dict)
    drop: list[str] = Field(default_factory=list)
    generalise: dict[str, Generalisation] = Field(default_factory=dict)
    country_code: str | None = Field(default=None, pattern=r"^[1-9][0-9]{0,2}$")
    # `age_band`: the age in whole years on the date of `age_as_of` (a date or timestamp column
    # of the schema, or of bronze's metadata), rounded down to a multiple of `age_band_width`
    age_band_width: int = Field(default=10, ge=1, le=100)
    age_as_of: str = INGESTED_AT

    @model_validator(mode="after")
    def _phones_have_a_country(self) -> Personal:
        phones = sorted(c for c, kind in self.tokenize.items() if kind == "phone")
        if phones and self.country_code is None:
            raise ValueError(
                f"country_code: needed to normalise the phone column(s) {', '.join(phones)} "
                '(the digits dialled from abroad, e.g. "44")'
            )
        return self

    def columns(self) -> set[str]:
        return set(self.tokenize) | set(self.drop) | set(self.generalise)


class Source(Frozen):
    """A structured source: CSV, JSON or Parquet files, read against a declared schema.

    `schema_evolution` decides what happens to a column the schema does not declare: `rescue`
    keeps it in bronze's `_rescued` JSON column, `add_new_columns` adds it to bronze as text.
    """

    format: Literal["csv", "json", "parquet"]
    path: str
    options: dict[str, str] = Field(default_factory=dict)
    glob: str | None = None
    max_files_per_trigger: int | None = Field(default=None, gt=0)
    schema_evolution: Literal["rescue", "add_new_columns"] = "rescue"
    schema_: dict[str, SparkType] = Field(alias="schema", min_length=1)
    key: str
    order_by: str | None = None
    required: list[str] = Field(default_factory=list)
    label: Label | None = None
    expectations: list[Expectation] = Field(default_factory=list)
    outliers: dict[str, Outlier] = Field(default_factory=dict)
    personal: Personal = Personal()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _columns_are_declared(self) -> Source:
        named = {self.key, *self.required, *self.personal.columns()}
        if self.order_by:
            named.add(self.order_by)
        as_of = self.personal.age_as_of
        if "age_band" in self.personal.generalise.values() and as_of not in AGE_AS_OF_METADATA:
            named.add(as_of)
        if self.label:
            named.add(self.label.column)
            if self.label.column in self.schema_:
                try:
                    self.label.check_type(self.schema_[self.label.column])
                except ValueError as exc:
                    raise ValueError(f"label: {exc}") from None
            if self.label.conflicts:
                named.add(self.label.conflicts.file)
                personal = self.personal.columns()
                if self.label.conflicts.file in personal or self.key in personal:
                    raise ValueError(
                        "label.conflicts: the key and `file` must not be personal columns"
                    )
        unknown = sorted(named - set(self.schema_))
        if unknown:
            raise ValueError(f"columns not in schema: {', '.join(unknown)}")
        for column in self.outliers:
            if self.schema_.get(column) not in NUMERIC_TYPES:
                raise ValueError(f"outliers: {column!r} is not a numeric column of the schema")
        names = [e.name for e in self.expectations]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"expectation names used twice: {', '.join(twice)}")
        for e in self.expectations:
            missing = [c for c in e.columns() if c not in self.schema_]
            if missing:
                raise ValueError(
                    f"expectation {e.name!r}: columns not in schema: {', '.join(missing)}"
                )
        return self

    def silver_columns(self) -> list[str]:
        """Column names after pseudonymisation, in schema order."""
        out: list[str] = []
        for column in self.schema_:
            if column in self.personal.drop:
                continue
            if column in self.personal.tokenize:
                out.append(f"{column}_{PSEUDONYM}")
            elif column in self.personal.generalise:
                out.append(f"{column}_{self.personal.generalise[column]}")
            else:
                out.append(column)
        return out

    def silver_name(self, column: str) -> str:
        """The silver name of a bronze column: a tokenised column is replaced by its artificial
        id, `<column>_pseudonym`; a generalised one gets its generalisation's suffix."""
        if column in self.personal.tokenize:
            return f"{column}_{PSEUDONYM}"
        if column in self.personal.generalise:
            return f"{column}_{self.personal.generalise[column]}"
        return column


class BinarySource(Frozen):
    """Binary files (images, audio, text documents) read whole by Spark's `binaryFile` source.

    Bronze gets one row per file with metadata derived from the content. The content itself is
    kept in bronze when `content` is `inline` and the file is at most `max_inline_bytes`;
    otherwise bronze keeps a pointer (`_source_file`) and the sha256 to check it against.
    """

    format: Literal["binary"]
    path: str
    kind: Literal["auto", "image", "audio", "text"] = "auto"
    glob: str | None = None
    max_files_per_trigger: int | None = Field(default=None, gt=0)
    content: Literal["inline", "pointer"] = "inline"
    max_inline_bytes: int = Field(default=16 * 1024 * 1024, ge=0)


AnySource = Annotated[Source | BinarySource, Field(discriminator="format")]


class Aggregate(Frozen):
    """A per-key aggregate of another source, e.g. `count(*)`; `fill` replaces "no rows"."""

    name: str
    source: str
    expr: str
    fill: float | str | None = None


class Split(Frozen):
    """How rows are assigned to train, validation and test.

    `by: key` (the default) hashes the group key with the dataset's seed, so one key never
    spans two splits; `stratify` then ranks the keys of each label by that hash, so that every
    label gets the fractions exactly. `by: time` puts each key by the latest `time_column` of
    its rows: the earliest keys train, the latest test.
    """

    train: float = Field(gt=0, lt=1)
    validation: float = Field(ge=0, lt=1)
    test: float = Field(gt=0, lt=1)
    by: Literal["key", "time"] = "key"
    stratify: bool = False
    time_column: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Split:
        if abs(self.train + self.validation + self.test - 1.0) > 1e-9:
            raise ValueError("train + validation + test must be 1")
        if (self.by == "time") != (self.time_column is not None):
            raise ValueError("time_column is needed with by: time, and only then")
        if self.by == "time" and self.stratify:
            raise ValueError("stratify applies to by: key only")
        return self


Imputation = Literal["mean", "median", "most_frequent", "constant"]


class Transform(Frozen):
    """How one feature column is prepared for the model, fitted on the train split.

    A column with `encode` is categorical: its train values, sorted, are its categories
    (`onehot`: one 0/1 input each; `ordinal`: the category's index); a value the train split
    never had counts as missing. Any other column is numeric and is scaled: `standard` (mean,
    population std), `minmax` (to [0, 1] on train), `robust` (median, interquartile range) or
    `none`. Missing values are imputed first, with the train split's `mean`, `median`,
    `most_frequent` value, or `constant` (`fill_value`); by default the mean of a numeric
    column and the most frequent category of a categorical one.
    """

    impute: Imputation | None = None
    fill_value: float | str | None = None
    scale: Literal["standard", "minmax", "robust", "none"] = "standard"
    encode: Literal["onehot", "ordinal"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Transform:
        if (self.impute == "constant") != (self.fill_value is not None):
            raise ValueError("fill_value is needed with impute: constant, and only then")
        if self.encode is not None and self.impute in ("mean", "median"):
            raise ValueError(f"a categorical column cannot be imputed with its {self.impute}")
        if self.encode is None and isinstance(self.fill_value, str):
            raise ValueError("a numeric column's fill_value must be a number")
        return self

    @property
    def imputation(self) -> Imputation:
        if self.impute is not None:
            return self.impute
        return "mean" if self.encode is None else "most_frequent"


class Pca(Frozen):
    """Principal components of the prepared train vectors: the fewest that explain
    `variance` of it, or exactly `k`."""

    variance: float | None = Field(default=None, gt=0, le=1)
    k: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_target(self) -> Pca:
        if (self.variance is None) == (self.k is None):
            raise ValueError("give either variance or k")
        return self


class Features(Frozen):
    """Tabular features: one row per `key` of the main `source`, its `columns` and per-key
    `aggregates` of other sources, prepared by fitted `transforms` (and `pca`)."""

    kind: Literal["tabular"] = "tabular"
    source: str
    key: str
    label: str
    columns: list[str] = Field(min_length=1)
    aggregates: list[Aggregate] = Field(default_factory=list)
    split: Split
    transforms: dict[str, Transform] = Field(default_factory=dict)
    pca: Pca | None = None

    @model_validator(mode="after")
    def _known_columns(self) -> Features:
        if unknown := sorted(set(self.transforms) - set(self.names)):
            raise ValueError(f"transforms name columns that are not features: {unknown}")
        return self

    @property
    def names(self) -> list[str]:
        """Feature names in the order of the model's input vector."""
        return [*self.columns, *(a.name for a in self.aggregates)]

    def transform(self, name: str) -> Transform:
        return self.transforms.get(name, Transform())


class ImageFeatures(Frozen):
    """Image features: the decoded pixels of a binary source's images (`images`, read from
    bronze: binary sources have no silver) with the label a structured source (`labels`, from
    silver) gives each file, matched by file name (`file`, the labels' column naming it).

    One row per distinct content: copies of an image are one example, in one split (the key is
    the sha256), and content that carries two labels is left out. Images are `height` x
    `width`, decoded to grey levels; others are left out. The label's `allowed` values must be
    the classes 0, 1, ... in order.
    """

    kind: Literal["image"]
    images: str
    labels: str
    file: str
    label: str
    height: int = Field(gt=0, le=1024)
    width: int = Field(gt=0, le=1024)
    split: Split

    @property
    def key(self) -> str:
        return "sha256"

    @property
    def names(self) -> list[str]:
        """The input vector: the pixels, row by row."""
        return [f"pixel_{r}_{c}" for r in range(self.height) for c in range(self.width)]


def _features_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "tabular"))
    return str(getattr(value, "kind", "tabular"))


AnyFeatures = Annotated[
    Annotated[Features, Tag("tabular")] | Annotated[ImageFeatures, Tag("image")],
    Discriminator(_features_kind),
]


class Augmentation(Frozen):
    """Random small rotations (uniform in ±`max_degrees`) and shifts (uniform in ±`max_shift`
    pixels along each axis) of the train split's images, drawn afresh for every batch from the
    seed; validation, test and serving see the images as they are."""

    max_degrees: float = Field(default=10.0, ge=0, le=45)
    max_shift: float = Field(default=1.0, ge=0)


class EarlyStopping(Frozen):
    """Stop when the validation `metric` has not improved by `min_delta` for `patience`
    epochs; the model kept is the one of the best epoch."""

    metric: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: int = Field(default=5, gt=0)
    min_delta: float = Field(default=0.0, ge=0)


class Quantization(Frozen):
    """The gate of the convert stage. An int8 model (dynamic, or static calibrated on up to
    `calibration_rows` validation rows) may become the champion only if its test accuracy is at
    most `max_accuracy_drop` below the fp32 ONNX model's (a share: 0.01 is one point) and, with
    `require_batch_invariance`, if it gives a row the same probability whichever rows share its
    batch (dynamic quantization takes its activation scales from each batch, so it does not)."""

    max_accuracy_drop: float = Field(default=0.01, ge=0, le=1)
    calibration_rows: int = Field(default=1024, gt=0)
    require_batch_invariance: bool = True


class Model(Frozen):
    """The network and how it is trained. `batch_size` is the global batch: each of the
    `num_processes` processes takes its share of it, the slices of its `feed_shards` shards of
    the train split (see `lakestory.training.feed`)."""

    registered_name: str
    hidden: list[int] = Field(min_length=1)
    dropout: float = Field(ge=0, lt=1)
    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    num_processes: int = Field(gt=0)
    # the train split's shards in the data feed: a multiple of every process count trained
    # with, so that the global batches, and the model, do not depend on the process count
    feed_shards: int = Field(default=8, gt=0)
    # torch_distributor: DDP in processes started by Spark's TorchDistributor (children of the
    # driver on a local master, a barrier stage on a cluster); horovod: horovod.spark.run,
    # which needs Horovod built into the environment (`make horovod`)
    backend: Literal["torch_distributor", "horovod"] = "torch_distributor"
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    momentum: float = Field(default=0.9, ge=0, lt=1)  # SGD's
    schedule: Literal["constant", "cosine", "step"] = "constant"
    step_size: int = Field(default=10, gt=0)  # the step schedule's: epochs between steps
    gamma: float = Field(default=0.1, gt=0, le=1)  # ... and the factor of each
    early_stopping: EarlyStopping | None = None
    quantization: Quantization = Quantization()
    # image features only: the CNN's two convolutions' channels (`hidden` are its dense
    # layers), and the train split's augmentation
    channels: list[int] = Field(default=[16, 32], min_length=2, max_length=2)
    augmentation: Augmentation | None = None

    @model_validator(mode="after")
    def _shards_divide(self) -> Model:
        if self.feed_shards % self.num_processes:
            raise ValueError(
                f"feed_shards ({self.feed_shards}) must be a multiple of num_processes "
                f"({self.num_processes}): each process trains on as many of the shards"
            )
        if self.batch_size < self.feed_shards:
            raise ValueError(
                f"batch_size ({self.batch_size}) is the global batch: every one of the "
                f"{self.feed_shards} feed_shards gives it rows, so it must be at least that"
            )
        return self


# what `tune.space` may search: the model's settings that change how it is trained
TUNABLE = (
    "hidden",
    "dropout",
    "epochs",
    "batch_size",
    "learning_rate",
    "weight_decay",
    "optimizer",
    "momentum",
    "schedule",
    "step_size",
    "gamma",
)


class SearchSpace(Frozen):
    """One setting's search space: `choices` (any values, hidden layer lists included), or
    `low` to `high` (floats or, for an integer setting, integers), sampled on a log scale with
    `log`, on a grid with `step`."""

    choices: list[Any] | None = Field(default=None, min_length=1)
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_kind(self) -> SearchSpace:
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give either choices or both low and high")
        if self.choices is not None and (self.log or self.step is not None):
            raise ValueError("log and step apply to a low-high range, not to choices")
        if self.low is not None and self.high is not None:
            if self.low >= self.high:
                raise ValueError(f"low ({self.low}) must be below high ({self.high})")
            if self.log and (self.low <= 0 or self.step is not None):
                raise ValueError("a log range needs low > 0 and no step")
        return self

    def bounds(self) -> list[Any]:
        """The values that must each make a valid model: the choices, or both ends."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]


class Tune(Frozen):
    """`lakestory tune`: `trials` runs of Optuna's TPE sampler (seeded by the dataset's seed)
    over `space`, each trained as configured but for the sampled settings, scored by the
    validation `metric`; the best is trained again and registered."""

    trials: int = Field(default=20, gt=0)
    metric: Literal["val_loss", "val_accuracy"] = "val_loss"
    space: dict[str, SearchSpace] = Field(min_length=1)

    @field_validator("space")
    @classmethod
    def _tunable(cls, space: dict[str, SearchSpace]) -> dict[str, SearchSpace]:
        unknown = sorted(set(space) - set(TUNABLE))
        if unknown:
            raise ValueError(f"cannot tune {unknown}: tunable settings are {list(TUNABLE)}")
        return space


class Dataset(Frozen):
    """One dataset: conf/datasets/<name>.yaml and its overlays."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    seed: int
    sources: dict[str, AnySource] = Field(min_length=1)
    features: AnyFeatures | None = None
    model: Model | None = None
    tune: Tune | None = None
    # which config file set each key (filled in by the loader), for errors found later
    _origin: dict[tuple[str, ...], Path] = PrivateAttr(default_factory=dict)

    def origin(self, *keys: str) -> str:
        """The file that set `keys` (the closest enclosing key that a file set)."""
        for n in range(len(keys), 0, -1):
            if keys[:n] in self._origin:
                return str(self._origin[keys[:n]])
        return next((str(f) for f in self._origin.values()), f"dataset {self.name!r}")

    def structured(self) -> dict[str, Source]:
        """The sources with rows and a declared schema (refine works on these)."""
        return {k: v for k, v in self.sources.items() if isinstance(v, Source)}

    @property
    def feature_spec(self) -> Features:
        """The tabular features (see `image_spec` for images)."""
        if self.features is None:
            raise ValueError(f"dataset {self.name!r} declares no features")
        if not isinstance(self.features, Features):
            raise ValueError(f"dataset {self.name!r} has image features, not tabular ones")
        return self.features

    @property
    def image_spec(self) -> ImageFeatures | None:
        """The image features, if the dataset's features are images."""
        return self.features if isinstance(self.features, ImageFeatures) else None

    @property
    def features_key(self) -> str:
        if self.features is None:
            raise ValueError(f"dataset {self.name!r} declares no features")
        return self.features.key

    @property
    def model_spec(self) -> Model:
        if self.model is None:
            raise ValueError(f"dataset {self.name!r} declares no model")
        return self.model

    @property
    def tune_spec(self) -> Tune:
        if self.tune is None:
            raise ValueError(f"dataset {self.name!r} declares no tune section (see the README)")
        return self.tune

    @model_validator(mode="after")
    def _tune_space_fits_the_model(self) -> Dataset:
        """Every choice and both ends of every range must make a valid model (a batch size
        that the processes divide, a dropout below 1, an optimizer that exists)."""
        if self.tune is None:
            return self
        if self.model is None:
            raise ValueError("tune needs a model section to start from")
        base = self.model.model_dump()
        for name, space in self.tune.space.items():
            integer = Model.model_fields[name].annotation in (int, "int")
            for value in space.bounds():
                if integer and isinstance(value, float) and not value.is_integer():
                    raise ValueError(f"tune.space.{name}: {name} takes integers, not {value}")
                try:
                    Model.model_validate({**base, name: value})
                except ValidationError as exc:
                    problem = exc.errors()[0]["msg"]
                    raise ValueError(
                        f"tune.space.{name}: {value!r} is not valid: {problem}"
                    ) from None
        return self

    @field_validator("sources")
    @classmethod
    def _source_names(cls, sources: dict[str, Source]) -> dict[str, Source]:
        for name in sources:
            if not name.isidentifier() or not name.islower():
                raise ValueError(f"source name {name!r} must be a lower-case identifier")
        return sources

    @model_validator(mode="after")
    def _conflicts_refer_to_binary_sources(self) -> Dataset:
        for name, source in self.structured().items():
            conflicts = source.label.conflicts if source.label else None
            if conflicts and not isinstance(self.sources.get(conflicts.source), BinarySource):
                raise ValueError(
                    f"sources.{name}.label.conflicts.source: {conflicts.source!r} is not a "
                    "binary source of this dataset"
                )
        return self

    @model_validator(mode="after")
    def _images_refer_to_sources(self) -> Dataset:
        feats = self.image_spec
        if feats is None:
            if self.model is not None and self.model.augmentation is not None:
                raise ValueError("model.augmentation applies to image features only")
            return self
        if not isinstance(self.sources.get(feats.images), BinarySource):
            raise ValueError(f"features.images {feats.images!r} is not a binary source")
        labels = self.structured().get(feats.labels)
        if labels is None:
            raise ValueError(f"features.labels {feats.labels!r} is not a structured source")
        if labels.label is None or labels.label.column != feats.label:
            raise ValueError(
                f"features.label {feats.label!r} is not the label declared by "
                f"sources.{feats.labels}.label"
            )
        if feats.file not in labels.silver_columns():
            raise ValueError(f"features.file {feats.file!r} is not a column of {feats.labels}")
        return self

    @model_validator(mode="after")
    def _label_maps_to_classes(self) -> Dataset:
        """A model learns class numbers: a label given by `allowed` must list them, 0 to K-1
        in order; other values are mapped with `positive` or `classes`."""
        feats = self.features
        if feats is None:
            return self
        name = feats.labels if isinstance(feats, ImageFeatures) else feats.source
        source = self.structured().get(name)  # not a source: said by the checks below
        label = source.label if source is not None else None
        if label is not None and label.allowed is not None and not label.numbered():
            raise ValueError(
                f"sources.{name}.label.allowed: {label.allowed} must be the classes 0, 1, ... "
                "in order for the model to learn them; to keep the values as they are, map "
                f"them with `positive: {label_text(label.allowed[-1])}` (a binary label) or "
                "`classes: [...]` (several, in the order of their numbers) instead of `allowed`"
            )
        return self

    @property
    def label_source(self) -> Source:
        """The structured source whose declared label the features learn."""
        feats = self.features
        if feats is None:
            raise ValueError(f"dataset {self.name!r} declares no features")
        name = feats.labels if isinstance(feats, ImageFeatures) else feats.source
        return self.structured()[name]

    @property
    def class_names(self) -> list[str]:
        """The names of the classes the model tells apart, in the order of their numbers."""
        label = self.label_source.label
        assert label is not None
        return label.class_names()

    @property
    def classes(self) -> int:
        """The model's probability columns: 1 for a binary tabular model (P(class 1)), else
        one per class (an image model has one per class, two included)."""
        if self.features is None:
            return 1
        k = len(self.class_names)
        return k if self.image_spec is not None or k > 2 else 1

    @model_validator(mode="after")
    def _features_refer_to_sources(self) -> Dataset:
        feats = self.features
        if not isinstance(feats, Features):
            return self
        structured = self.structured()
        if feats.source not in structured:
            raise ValueError(f"features.source {feats.source!r} is not a structured source")
        main = structured[feats.source]
        if main.label is None or main.label.column != feats.label:
            raise ValueError(
                f"features.label {feats.label!r} is not the label declared by "
                f"sources.{feats.source}.label (declare it there, with its classes)"
            )
        available = set(main.silver_columns())
        missing = [c for c in [feats.key, feats.label, *feats.columns] if c not in available]
        if missing:
            raise ValueError(
                f"features refer to columns that the silver table of source {feats.source!r} "
                f"will not have: {', '.join(missing)}"
            )
        for agg in feats.aggregates:
            if agg.source not in structured:
                raise ValueError(f"features.aggregates {agg.name!r}: unknown source")
            if feats.key not in structured[agg.source].silver_columns():
                raise ValueError(
                    f"features.aggregates {agg.name!r}: source {agg.source!r} has no "
                    f"column {feats.key!r} to join on"
                )
        return self
