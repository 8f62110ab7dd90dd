"""`lakestory init`: types, key, personal columns and label mapping guessed from a sample,
written as a config that lakestory loads, and the mistakes a user can make refused clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakestory.config import ConfigError, load_dataset, load_settings
from lakestory.operations.starter import infer_type, init_dataset, label_mapping, sample
from tests.conftest import CONF


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1", " 22", "", "-3"], "int"),
        (["1", "3000000000"], "bigint"),
        (["1.5", "2", ".5", "1e3"], "double"),
        (["007", "12"], "string"),  # a leading zero: a code, not a number
        (["2024-02-29", "2023-01-01"], "date"),
        (["2023-02-30"], "string"),  # no such day
        (["2024-01-01T10:00:00", "2024-01-01 11:30"], "timestamp"),
        (["true", "false"], "string"),  # kept as text: a category
        (["", " "], "string"),
    ],
)
def test_types_are_the_narrowest_every_value_parses_as(values: list[str], expected: str) -> None:
    assert infer_type(values) == expected


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    shutil.copytree(CONF / "base", conf / "base")
    return conf


def _init(tmp_path: Path, conf_dir: Path, name: str, file: Path, label: str | None = None):
    settings = load_settings(conf_dir, environ={"LAKESTORY_ROOT": str(tmp_path / "wh")})
    return init_dataset(settings, conf_dir, name, file, label)


def test_a_csv_with_an_id_and_personal_columns(tmp_path: Path, conf_dir: Path) -> None:
    file = tmp_path / "Members 2024.csv"
    file.write_text(
        "member_id;Name;Email;phone;date_of_birth;plan;visits;churn\n"
        "m1;Ann Lee;ann@x.org;0711;1980-01-02;gold;3;no\n"
        "m2;Bo Ek;bo@x.org;0712;1991-05-06;basic;0;yes\n"
        "m3;Cy Do;cy@x.org;0713;1975-11-30;basic;7;no\n"
    )
    started = _init(tmp_path, conf_dir, "members", file, "churn")

    ds = load_dataset("members", conf_dir)  # what init writes, lakestory reads
    source = ds.sources["members_2024"]
    assert source.options == {"header": "true", "sep": ";"}
    assert source.key == "member_id" and source.personal.tokenize == {}
    assert source.personal.drop == ["Name", "Email", "phone"]
    assert source.personal.generalise == {"date_of_birth": "year"}
    assert source.schema_["visits"] == "int" and source.schema_["date_of_birth"] == "date"
    assert source.label is not None and source.label.class_names() == ["no", "yes"]
    assert ds.features is not None
    assert ds.features.names == ["date_of_birth_year", "plan", "visits"]
    assert ds.features.transform("plan").encode == "onehot"
    assert started.landed == tmp_path / "wh/landing/members/members_2024/Members 2024.csv"
    assert started.landed.read_bytes() == file.read_bytes()
    assert "key member_id, label churn, classes no, yes, 3 features" in started.summary


def test_json_lines_without_an_id_are_keyed_by_a_tokenised_personal_column(
    tmp_path: Path, conf_dir: Path
) -> None:
    file = tmp_path / "people.jsonl"
    records = [
        {"email": f"p{i}@x.org", "score": i * 1.5, "team": "ab"[i % 2], "ok": i % 2 == 0}
        for i in range(6)
    ]
    file.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    _init(tmp_path, conf_dir, "people", file, "team")

    ds = load_dataset("people", conf_dir)
    source = ds.sources["people"]
    assert source.format == "json" and source.key == "email"
    assert source.personal.tokenize == {"email": "email"}
    assert ds.features is not None and ds.features.key == "email_pseudonym"
    assert source.schema_["ok"] == "string" and ds.features.names == ["score", "ok"]
    # two text values, neither reading as yes: the rarer (here the later, on a tie) is class 1
    assert source.label is not None and source.label.class_names() == ["a", "b"]


def test_parquet_with_a_numbered_label_and_without_one(tmp_path: Path, conf_dir: Path) -> None:
    file = tmp_path / "digits.parquet"
    table = pa.table({"id": [1, 2, 3, 4], "x": [0.5, 1.5, 2.5, 3.5], "digit": [0, 1, 2, 1]})
    pq.write_table(table, file)
    _init(tmp_path, conf_dir, "numbers", file, "digit")
    label = load_dataset("numbers", conf_dir).sources["digits"].label
    assert label is not None and label.allowed == [0, 1, 2]

    started = _init(tmp_path, conf_dir, "unlabelled", file)
    text = started.config.read_text()
    assert "    # label:" in text and "#   column: digit" in text  # a guess, commented out
    assert "\n# features:" in text and "\n# model:" in text
    ds = load_dataset("unlabelled", conf_dir)
    assert ds.features is None and ds.model is None and ds.sources["digits"].label is None


def test_a_mistake_is_refused_with_what_to_do(tmp_path: Path, conf_dir: Path) -> None:
    file = tmp_path / "a.csv"
    file.write_text("id,x,y\n1,2,yes\n2,3,yes\n")
    with pytest.raises(ConfigError, match=r"--label z: the file has no column 'z' \(it has id"):
        _init(tmp_path, conf_dir, "a", file, "z")
    with pytest.raises(ConfigError, match="1 value\\(s\\) of it \\(yes\\); a model needs two"):
        _init(tmp_path, conf_dir, "a", file, "y")
    with pytest.raises(ConfigError, match="a lower-case identifier"):
        _init(tmp_path, conf_dir, "My Data", file)
    _init(tmp_path, conf_dir, "a", file)
    with pytest.raises(ConfigError, match="exists already \\(--force writes over it\\)"):
        _init(tmp_path, conf_dir, "a", file)
    (tmp_path / "b.xlsx").write_text("")
    with pytest.raises(ConfigError, match="cannot tell the format"):
        sample(tmp_path / "b.xlsx")


def test_a_label_mapping_puts_yes_first_among_two_values() -> None:
    from lakestory.operations.starter import Column

    survived = Column("survived", "string", ("no", "Yes", "no", None))
    mapping = label_mapping(survived)
    assert mapping.lines == ('positive: "Yes"', 'negative: "no"')
    assert mapping.classes == ("no", "Yes")
