"""Keyed tokens: HMAC-SHA256 composed from Spark built-ins, so no Python UDF runs per row.

HMAC(K, m) = H((K' ^ opad) || H((K' ^ ipad) || m)) with K' the key zero-padded to the block
size (RFC 2104). Spark has `sha2`, `unhex`, `concat` and binary literals; the two padded keys
are computed once here, on the driver.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

Transform = Callable[[DataFrame], DataFrame]

BLOCK_SIZE = 64  # SHA-256 block size in bytes


def _padded_keys(key: bytes) -> tuple[bytes, bytes]:
    if len(key) > BLOCK_SIZE:
        key = hashlib.sha256(key).digest()
    key = key.ljust(BLOCK_SIZE, b"\x00")
    inner = bytes(b ^ 0x36 for b in key)
    outer = bytes(b ^ 0x5C for b in key)
    return inner, outer


def hmac_sha256(value: Column, key: bytes) -> Column:
    """Hex HMAC-SHA256 of the UTF-8 bytes of `value` under `key`; null stays null."""
    inner_key, outer_key = _padded_keys(key)
    inner = F.unhex(F.sha2(F.concat(F.lit(inner_key), value.cast("binary")), 256))
    return F.sha2(F.concat(F.lit(outer_key), inner), 256)


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
        for column, kind in columns.items():
            value = normalised(F.col(column), kind, country_code)
            token = F.when(value != "", hmac_sha256(value, key))
            df = df.withColumn(f"{column}_token", token).drop(column)
        return df

    return _apply
