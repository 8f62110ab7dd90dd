"""Encoding and header sniffing of landed files (pure Python, no Spark)."""

from __future__ import annotations

import codecs

import pytest

from lakestory.ingestion.structured import (
    Decoding,
    sample_csv,
    sample_json,
    sniff_csv_header,
    sniff_decoding,
)
from lakestory.io.files import SNIFF_BYTES


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"id,name\n1,ann\n", "UTF-8"),
        (codecs.BOM_UTF8 + b"id\n", "UTF-8"),
        ("id\n".encode("utf-16"), "UTF-16"),
        ("id\n".encode("utf-16-be").join([codecs.BOM_UTF16_BE, b""]), "UTF-16"),
        ("id\n".encode("utf-32"), "UTF-32"),
    ],
)
def test_a_bom_or_valid_bytes_decide_the_charset(raw: bytes, expected: str) -> None:
    assert sniff_decoding(raw, "UTF-8") == Decoding(expected)


def test_invalid_bytes_fall_back_to_a_lossless_charset_with_the_reason() -> None:
    decoding = sniff_decoding("id,name\n1,Müller\n".encode("cp1252"), "UTF-8")
    assert decoding.encoding == "ISO-8859-1"
    assert decoding.error is not None and "offset 11" in decoding.error


def test_a_multibyte_character_cut_at_the_sniff_boundary_is_not_an_error() -> None:
    raw = "id,name\n1,é".encode()
    assert sniff_decoding(raw[:-1], "UTF-8") == Decoding("UTF-8")


def test_a_declared_charset_is_used_when_the_bytes_fit_it() -> None:
    assert sniff_decoding("ü".encode("cp1252"), "windows-1252") == Decoding("windows-1252")


def test_csv_header_respects_separator_quotes_escapes_and_a_bom() -> None:
    raw = codecs.BOM_UTF8 + b"'id';'full;name'; age \n1;'x';2\n"
    assert sniff_csv_header(raw, "UTF-8", {"sep": ";", "quote": "'"}) == [
        "id",
        "full;name",
        "age",
    ]
    utf16 = 'id,"a ""b"""\n'.encode("utf-16")
    assert sniff_csv_header(utf16, "UTF-16", {"escape": '"'}) == ["id", 'a "b"']


def test_csv_sample_keeps_complete_records_by_name_with_nulls() -> None:
    options = {"header": "true", "quote": '"', "escape": '"'}
    raw = b'age,id\n30,1\n,2\n"4""0",3\nbroken\n'
    assert sample_csv(raw, "UTF-8", options, ["age", "id"]) == [
        {"age": "30", "id": "1"},
        {"age": None, "id": "2"},  # Spark reads an empty field as null
        {"age": '4"0', "id": "3"},
    ]  # the record with one field is corrupt and not sampled


def test_a_sample_cut_by_the_sniff_drops_its_last_record() -> None:
    line = b"1,ann\n"
    head = (line * (SNIFF_BYTES // len(line) + 1))[:SNIFF_BYTES]  # ends mid-record
    records = sample_csv(head, "UTF-8", {}, ["id", "name"])
    assert len(records) == SNIFF_BYTES // len(line)
    assert records[-1] == {"id": "1", "name": "ann"}


def test_json_samples_keep_values_as_spark_writes_them() -> None:
    lines = b'{"id": 1, "ok": true, "tags": {"a": [1]}, "age": 4.50, "n": null}\n{bad\n'
    assert sample_json(lines, "UTF-8", multiline=False) == [
        {"id": "1", "ok": "true", "tags": '{"a":[1]}', "age": "4.5", "n": None}
    ]
    doc = b'[{"id": "1"},\n {"id": "2"}]'
    assert sample_json(doc, "UTF-8", multiline=True) == [{"id": "1"}, {"id": "2"}]
    assert sample_json(doc[:-1], "UTF-8", multiline=True) == []  # not a whole document
