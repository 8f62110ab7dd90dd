"""Keyed tokens: HMAC-SHA256 composed from Spark built-ins, so no Python UDF runs per row.

HMAC(K, m) = H((K' ^ opad) || H((K' ^ ipad) || m)) with K' the key zero-padded to the block
size (RFC 2104). Spark has `sha2`, `unhex` and `concat`; the two padded keys are computed once
here, on the driver.

The padded keys reach the rows as data, never as literals of the plan: a literal is printed
by `explain`, in Spark's event log and UI, and in an error that shows the plan, and the key
is one XOR away from either padded form. They come from a one-row frame read as two scalar
subqueries (`with_hmac`), whose plan names its columns but not its values. Each subquery runs
once a query, on the driver; its value then reaches the generated code as a reference, as a
literal's would, and costs the rows nothing, where a broadcast join of the frame added a
tenth to a pass computing tokens (bench/tokens.py).
"""

from __future__ import annotations

import hashlib

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakestory.columns import Transform
from lakestory.io.local import local_frame

BLOCK_SIZE = 64  # SHA-256 block size in bytes


def _padded_keys(key: bytes) -> tuple[bytes, bytes]:
    if len(key) > BLOCK_SIZE:
        key = hashlib.sha256(key).digest()
    key = key.ljust(BLOCK_SIZE, b"\x00")
    inner = bytes(b ^ 0x36 for b in key)
    outer = bytes(b ^ 0x5C for b in key)
    return inner, outer


def _hmac(value: Column, inner_key: Column, outer_key: Column) -> Column:
    inner = F.unhex(F.sha2(F.concat(inner_key, value.cast("binary")), 256))
    return F.sha2(F.concat(outer_key, inner), 256)


def with_hmac(columns: dict[str, Column], key: bytes) -> Transform:
    """Add each of `columns` (name: value) as the hex HMAC-SHA256 of the UTF-8 bytes of its
    value under `key`; null stays null. The key never enters the plan as a literal."""
    padded = _padded_keys(key)

    def _apply(df: DataFrame) -> DataFrame:
        pads = local_frame(df.sparkSession, [padded], "inner binary, outer binary")
        inner, outer = pads.select("inner").scalar(), pads.select("outer").scalar()
        return df.withColumns({name: _hmac(v, inner, outer) for name, v in columns.items()})

    return _apply


def normalised(value: Column, kind: str, country_code: str | None = None) -> Column:
    """Normalise an identifier so that one person gets one token across sources.

    - email: trimmed and lower-cased;
    - phone: the digits with the country code in front. A number written with "+" or "00"
      carries its own code ("+44 20 7946 0958", "0044 20 7946 0958"); any other is taken for
      a national number, whose leading trunk "0" gives way to `country_code` ("020 7946 0958"
      and "20 7946 0958" become 442079460958, as the two above do, and "+44 (0)20 7946 0958":
      a "(0)" is never dialled). Separators (spaces, dashes, dots, brackets) are ignored;
    - id: trimmed.
    A value that leaves nothing (a phone without digits) normalises to "", which gives no
    token.
    """
    if kind == "email":
        return F.lower(F.trim(value))
    if kind == "phone":
        if country_code is None:
            raise ValueError("a phone number needs a country code to be normalised")
        text = F.trim(value)
        # "(0)": the trunk prefix some write within an international number, never dialled
        digits = F.regexp_replace(F.regexp_replace(text, r"\(0\)", ""), r"[^0-9]", "")
        national = F.regexp_replace(digits, r"^0", "")
        return (
            F.when(digits == "", F.lit(""))
            .when(text.startswith("+"), digits)
            .when(digits.startswith("00"), F.substring(digits, 3, 1 << 30))
            .otherwise(F.concat(F.lit(country_code), national))
        )
    return F.trim(value)


def with_keyed_tokens(
    columns: dict[str, str], key: bytes, country_code: str | None = None
) -> Transform:
    """Replace each column by `<column>_token`, the keyed token of its normalised value
    (`normalised`; phone numbers need `country_code`).

    Nulls stay null; empty strings count as missing and give a null token too.
    """

    def _apply(df: DataFrame) -> DataFrame:
        if not columns:
            return df
        values = {c: normalised(F.col(c), kind, country_code) for c, kind in columns.items()}
        # "" gives no token: hashed as null
        hashed = {f"{c}_token": F.when(v != "", v) for c, v in values.items()}
        return df.transform(with_hmac(hashed, key)).drop(*columns)

    return _apply
