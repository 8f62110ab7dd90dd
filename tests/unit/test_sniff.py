"""Encoding and header sniffing of landed files (pure Python, no Spark)."""

from __future__ import annotations

import codecs

import pytest

from lakestory.ingestion.structured import Decoding, sniff_csv_header, sniff_decoding


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
