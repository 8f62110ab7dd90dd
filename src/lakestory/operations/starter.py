"""`lakestory init NAME --from FILE`: a starter dataset config written from a sample of a CSV,
JSON-lines or Parquet file, and the file copied into the landing folder the config names.

The first rows of the file (`SAMPLE_ROWS`) decide, without Spark:

- the schema: each column `int`, `bigint`, `double`, `date`, `timestamp` when every value in
  the sample parses as one (a number with a leading zero stays `string`: a code, not a
  quantity), else `string`; `true`/`false` columns stay text, so that they are categories;
- the key: a column named like an id (`id`, `..._id`, `...Id`, `key`) whose sampled values are
  all given and distinct; else a personal column that is (an e-mail, a name), tokenised, so
  that silver keeps its artificial id, never the value; else the first such column;
- the personal columns, by name (and e-mail by value): names, e-mails, phones and addresses
  are dropped, a date of birth generalised to its year; a personal key is tokenised instead;
- the label (`--label COLUMN`): its values found map to classes as `allowed` (0, 1, ...),
  `positive`/`negative` (two values; the positive is the one that reads as yes, else the
  rarer, on a tie the later in sorted order) or `classes` (several, sorted); without
  `--label`, a guess is left commented out, with the features and the model that need it;
- the features: every other numeric column, and text columns of at most
  `MAX_CATEGORIES` values as one-hot categories; dates and free text are left out, named in a
  comment; a split of 70/15/15 stratified by label, and a small model.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from lakestory.config import ConfigError, Settings, Source
from lakestory.io.catalog import landing_root

SAMPLE_ROWS = 1000
MAX_CATEGORIES = 20  # text columns with more values than this are not made features
MAX_CLASSES = 50
FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json"}
FORMATS |= {".parquet": "parquet", ".pq": "parquet", ".txt": "csv", ".tsv": "csv"}

_NAMES = {"name", "fullname", "firstname", "lastname", "surname", "givenname", "familyname"}
_NAMES |= {"middlename", "username", "forename"}
_YES = ("yes", "y", "true", "t", "1", "positive", "pos")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    values: tuple[str | None, ...]  # as text, in the sample's order

    @property
    def given(self) -> list[str]:
        return [v for v in self.values if v is not None and v.strip() != ""]

    @property
    def unique_and_complete(self) -> bool:
        given = self.given
        return len(given) == len(self.values) > 0 and len(set(given)) == len(given)

    @property
    def personal(self) -> str | None:
        """`email`, `name`, `phone`, `address` or `birth` when the column looks personal."""
        n = re.sub(r"[^a-z0-9]", "", self.name.lower())
        if "mail" in n or (self.given and _share(self.given, _EMAIL) > 0.8):
            return "email"
        if n in _NAMES:
            return "name"
        if any(w in n for w in ("phone", "mobile", "telephone")) or n in ("tel", "fax"):
            return "phone"
        if any(w in n for w in ("address", "street", "postcode", "zipcode")) or n == "zip":
            return "address"
        if "birth" in n or n in ("dob", "birthday"):
            return "birth"
        return None


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_INT = re.compile(r"^[+-]?(0|[1-9][0-9]*)$")
_FLOAT = re.compile(r"^[+-]?((0|[1-9][0-9]*)(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")


def _share(values: list[str], pattern: re.Pattern[str]) -> float:
    return sum(bool(pattern.match(v.strip())) for v in values) / len(values)


def infer_type(values: list[str]) -> str:
    """The narrowest declared type every given value in `values` parses as."""
    given = [v.strip() for v in values if v is not None and v.strip() != ""]
    if not given:
        return "string"
    if all(_INT.match(v) for v in given):
        return "int" if all(abs(int(v)) < 2**31 for v in given) else "bigint"
    if all(_FLOAT.match(v) for v in given):
        return "double"
    if all(_DATE.match(v) and _parses(date.fromisoformat, v) for v in given):
        return "date"
    if all(_TIMESTAMP.match(v) for v in given):
        return "timestamp"
    return "string"


def _parses(parse: Any, value: str) -> bool:
    try:
        parse(value)
    except ValueError:
        return False
    return True


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value)


def sample(path: Path) -> tuple[str, dict[str, str], list[Column]]:
    """The file's format, the reader options lakestory needs for it, and its columns with
    the first `SAMPLE_ROWS` values of each."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"{path}: cannot tell the format from the name; give a .csv, .json/.jsonl or "
            ".parquet file"
        )
    options: dict[str, str] = {}
    if fmt == "csv":
        head = path.read_text(encoding="utf-8", errors="replace")[: 1 << 16]
        try:
            dialect = csv.Sniffer().sniff(head, delimiters=",;\t|")
            sep = dialect.delimiter
        except csv.Error:
            sep = ","
        options = {"header": "true"} | ({"sep": sep} if sep != "," else {})
        with path.open(encoding="utf-8", errors="replace", newline="") as f:
            reader = csv.DictReader(f, delimiter=sep)
            rows = [r for _, r in zip(range(SAMPLE_ROWS), reader, strict=False)]
            names = list(reader.fieldnames or [])
    elif fmt == "json":
        rows, names = [], []
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    record = json.loads(line)
                    rows.append({k: _text(v) for k, v in record.items()})
                    names += [k for k in record if k not in names]
                if len(rows) >= SAMPLE_ROWS:
                    break
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path).slice(0, SAMPLE_ROWS)
        names = table.column_names
        rows = [{k: _text(v) for k, v in r.items()} for r in table.to_pylist()]
    if not rows or not names:
        raise ConfigError(f"{path}: no rows to learn a schema from")
    columns = []
    for name in names:
        values = tuple(_text(r.get(name)) for r in rows)
        columns.append(Column(name, infer_type([v for v in values if v is not None]), values))
    return fmt, options, columns


def _identifier(text: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "data"
    return name if name[0].isalpha() else f"source_{name}"


def _key(columns: list[Column]) -> tuple[Column, bool]:
    """The key column, and whether it is personal (then tokenised)."""
    unique = [c for c in columns if c.unique_and_complete]
    named = [
        c
        for c in unique
        if re.search(r"(^|[_\s-])(id|key)$|[a-z]Id$|^id[_\s-]", c.name) or c.name.lower() == "id"
    ]
    if named:
        return named[0], named[0].personal is not None
    personal = [c for c in unique if c.personal in ("email", "name", "phone")]
    if personal:
        return personal[0], True
    if unique:
        return unique[0], unique[0].personal is not None
    raise ConfigError(
        "no column of the sample is given and distinct on every row, so none can be the key: "
        "add an id column to the file"
    )


@dataclass(frozen=True)
class LabelMapping:
    column: Column
    type: str  # the label's declared type
    lines: tuple[str, ...]  # the YAML lines under `label:`, after `column:`
    classes: tuple[str, ...]


def label_mapping(column: Column) -> LabelMapping:
    """The mapping of a label's values found in the sample to class numbers."""
    counts = Counter(v.strip() for v in column.given)
    if len(counts) < 2:
        raise ConfigError(
            f"--label {column.name}: the sample has {len(counts)} value(s) of it "
            f"({', '.join(counts) or 'none'}); a model needs two classes at least"
        )
    if len(counts) > MAX_CLASSES:
        raise ConfigError(
            f"--label {column.name}: {len(counts)} different values in the sample, too many for "
            f"classes (at most {MAX_CLASSES}); is it the label?"
        )
    values = sorted(counts)
    if column.type == "int" and sorted(int(v) for v in values) == list(range(len(values))):
        numbers = sorted(int(v) for v in values)
        return LabelMapping(
            column, "int", (f"allowed: {json.dumps(numbers)}",), tuple(map(str, numbers))
        )
    if len(values) == 2:
        yes = [v for v in values if v.lower() in _YES]
        # the rarer value, on a tie the later in sorted order
        positive = yes[0] if yes else min(values, key=lambda v: (counts[v], -values.index(v)))
        negative = next(v for v in values if v != positive)
        lines = (f"positive: {json.dumps(positive)}", f"negative: {json.dumps(negative)}")
        return LabelMapping(column, "string", lines, (negative, positive))
    listed = ", ".join(json.dumps(v) for v in values)
    return LabelMapping(column, "string", (f"classes: [{listed}]",), tuple(values))


def _label_guess(columns: list[Column], key: Column) -> Column | None:
    """A column that reads like a label: by name, else the last of few values."""
    names = ("label", "target", "class", "y", "outcome", "survived", "churn", "churned")
    for c in columns:
        if c is not key and c.name.lower() in names:
            return c
    few = [c for c in columns if c is not key and 2 <= len(set(c.given)) <= 10 and not c.personal]
    return few[-1] if few else None


def starter_config(
    name: str, source: str, fmt: str, options: dict[str, str], columns: list[Column],
    label: str | None,
) -> tuple[str, str]:  # fmt: skip
    """The YAML of a starter config, and a line saying what it chose."""
    by_name = {col.name: col for col in columns}
    if label is not None and label not in by_name:
        raise ConfigError(
            f"--label {label}: the file has no column {label!r} (it has {', '.join(by_name)})"
        )
    key, key_personal = _key(columns)
    mapping = label_mapping(by_name[label]) if label else None
    types = {col.name: col.type for col in columns}
    if mapping is not None:
        types[mapping.column.name] = mapping.type
    drop, tokenize, generalise = [], {}, {}
    for col in columns:
        kind = col.personal
        if col is key and key_personal:
            tokenize[col.name] = "email" if kind == "email" else "id"
        elif kind == "birth" and col.type == "date":
            generalise[col.name] = "year"
        elif kind is not None and (mapping is None or col is not mapping.column):
            drop.append(col.name)
    # the silver names of the key and the generalised columns, as the config gives them
    named = Source.model_validate(
        {
            "format": fmt,
            "path": f"{name}/{source}",
            "schema": types,
            "key": key.name,
            "personal": {"tokenize": tokenize, "drop": drop, "generalise": generalise},
        }
    )
    key_name = named.silver_name(key.name)

    c = _commented
    out = [
        f"# A starter config that `lakestory init {name}` wrote from a sample of the file:",
        f"# read it, edit what it guessed, then `lakestory check {name}`, `lakestory run {name}`.",
        f"name: {name}",
        "seed: 42",
        "",
        "sources:",
        f"  {source}:",
        f"    format: {fmt}",
        c(f"    path: {name}/{source}", "under <warehouse.root>/landing/"),
    ]
    if options:
        out.append("    options:")
        out += [f"      {k}: {json.dumps(v)}" for k, v in options.items()]
    out.append(c("    schema:", "inferred from the sample; the types: string, int,"))
    out.append(c("", "bigint, double, float, boolean, date, timestamp"))
    out += [f"      {_yaml_key(col)}: {t}" for col, t in types.items()]
    if key.name in tokenize:
        out.append(c(f"    key: {_yaml_key(key.name)}", "no id column: this personal column,"))
        out.append(c("", "tokenised (silver keeps an artificial id)"))
    else:
        out.append(c(f"    key: {_yaml_key(key.name)}", "not personal: kept as it is (list it"))
        out.append(c("", "under personal.tokenize to replace it)"))
    required = [key.name] + ([mapping.column.name] if mapping else [])
    out.append(f"    required: [{', '.join(_yaml_key(r) for r in required)}]")
    if mapping is not None:
        out.append(c("    label:", "the values found in the sample, as classes"))
        out.append(f"      column: {_yaml_key(mapping.column.name)}")
        out += [f"      {line}" for line in mapping.lines]
    else:
        guess = _label_guess(columns, key)
        out.append(c("    # label:", "what the model learns: uncomment, or run"))
        out.append(c(f"    #   column: {guess.name if guess else 'COLUMN'}", "init with --label"))
        out.append(c('    #   positive: "yes"', "or classes: [a, b, c], or allowed: [0, 1]"))
    if drop or tokenize or generalise:
        out.append(c("    personal:", "personal by their names or values: they"))
        out.append(c("", "never reach silver as they are"))
        if tokenize:
            out.append("      tokenize:")
            out += [f"        {_yaml_key(col)}: {k}" for col, k in tokenize.items()]
        if drop:
            out.append(f"      drop: [{', '.join(_yaml_key(col) for col in drop)}]")
        if generalise:
            out.append("      generalise:")
            out += [f"        {_yaml_key(col)}: {g}" for col, g in generalise.items()]

    features, categorical, left_out = [], [], []
    for col in columns:
        if col is key or col.name in drop or col.name in tokenize:
            continue
        if mapping is not None and col is mapping.column:
            continue
        if col.name in generalise:
            features.append(named.silver_name(col.name))
        elif col.type in ("int", "bigint", "double"):
            features.append(col.name)
        elif col.type == "string" and len(set(col.given)) <= MAX_CATEGORIES:
            features.append(col.name)
            categorical.append(col.name)
        else:
            left_out.append(f"{col.name} ({col.type if col.type != 'string' else 'free text'})")
    prefix = "" if mapping is not None else "# "
    section = [
        "",
        c("features:", "one row per key of the source"),
        f"  source: {source}",
        f"  key: {_yaml_key(key_name)}",
        f"  label: {_yaml_key(mapping.column.name if mapping else 'COLUMN')}",
        "  columns:",
        *[f"    - {_yaml_key(f)}" for f in features],
    ]
    if left_out:
        section.append(f"  # left out: {', '.join(left_out)}")
    section += [
        "  split:",
        "    train: 0.7",
        "    validation: 0.15",
        "    test: 0.15",
        c("    stratify: true", "each class gets these fractions exactly"),
    ]
    if categorical:
        section.append(c("  transforms:", "numbers: mean-imputed, standardised"))
        section += [f"    {_yaml_key(col)}: {{encode: onehot}}" for col in categorical]
    section += [
        "",
        c("model:", "a small network to start from"),
        f"  registered_name: {name}_model",
        "  hidden: [32, 16]",
        "  dropout: 0.1",
        "  epochs: 30",
        "  batch_size: 64",
        "  learning_rate: 0.005",
        "  weight_decay: 0.0001",
        "  num_processes: 1",
    ]
    out += [f"{prefix}{line}" if line else line for line in section]
    classes = f", classes {', '.join(mapping.classes)}" if mapping else ", no label yet"
    said = (
        f"key {key.name}{' (tokenised)' if key.name in tokenize else ''}"
        f"{', label ' + mapping.column.name if mapping else ''}{classes}, "
        f"{len(features)} features"
        + (
            f", personal: {', '.join([*tokenize, *drop, *generalise])}"
            if drop or tokenize or generalise
            else ""
        )
    )
    return "\n".join(out) + "\n", said


def _commented(text: str, comment: str) -> str:
    """`text` with `comment` after it, the comments of a file lined up."""
    return f"{text:<38} # {comment}"


def _yaml_key(name: str) -> str:
    """`name` as a YAML scalar: as it is when plain, quoted otherwise."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else json.dumps(name)


@dataclass(frozen=True)
class Started:
    config: Path
    landed: Path
    summary: str


def init_dataset(
    settings: Settings,
    conf_dir: Path,
    name: str,
    file: Path,
    label: str | None = None,
    force: bool = False,
) -> Started:
    """Write conf_dir/datasets/<name>.yaml from a sample of `file` and copy `file` into the
    landing folder that config names."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConfigError(f"{name!r}: a dataset name is a lower-case identifier, e.g. titanic")
    if not file.is_file():
        raise ConfigError(f"{file}: no such file")
    config = conf_dir / "datasets" / f"{name}.yaml"
    if config.exists() and not force:
        raise ConfigError(f"{config}: exists already (--force writes over it)")
    fmt, options, columns = sample(file)
    source = _identifier(file.stem)
    text, said = starter_config(name, source, fmt, options, columns, label)
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(text, encoding="utf-8")
    landing = landing_root(settings) / name / source
    landing.mkdir(parents=True, exist_ok=True)
    shutil.copy2(file, landing / file.name)
    return Started(config, landing / file.name, said)
