"""The subjects file of `lakestory forget`: what it may name, and errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakestory.config import ConfigError, Dataset
from lakestory.operations.erasure import read_subjects


def test_subjects_are_named_by_identifier_columns(tmp_path: Path, customers: Dataset) -> None:
    path = tmp_path / "subjects.csv"
    path.write_text("customer_id\nC0000001\n\n C0000003\n")
    subjects = read_subjects(path, customers)
    assert subjects.count == 2
    assert subjects.identifiers == {"customer_id": ["C0000001", " C0000003"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("email\nann@example.org\n", "does not tokenise; name one or more of: customer_id"),
        ("customer_id\n\n", "no subject"),
        ("customer_id\nC1,C2\n", "line 2 has more cells"),
    ],
)
def test_a_bad_subjects_file_says_what_and_where(
    tmp_path: Path, customers: Dataset, text: str, message: str
) -> None:
    path = tmp_path / "subjects.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        read_subjects(path, customers)
    assert str(path) in str(caught.value)
    assert "ann@example.org" not in str(caught.value) and "C2" not in str(caught.value)


def test_a_missing_subjects_file(tmp_path: Path, customers: Dataset) -> None:
    with pytest.raises(ConfigError, match="cannot read the subjects file"):
        read_subjects(tmp_path / "nope.csv", customers)
