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


def normalised(value: Column, kind: str) -> Column:
    """Normalise an identifier so that one person gets one token across sources."""
    if kind == "email":
        return F.lower(F.trim(value))
    if kind == "phone":
        return F.regexp_replace(value, r"[^0-9+]", "")
    return F.trim(value)


def with_keyed_tokens(columns: dict[str, str], key: bytes) -> Transform:
    """Replace each column by `<column>_token`, the keyed token of its normalised value.

    Empty strings count as missing and give a null token.
    """

    def _apply(df: DataFrame) -> DataFrame:
        for column, kind in columns.items():
            value = normalised(F.col(column), kind)
            token = F.when(value != "", hmac_sha256(value, key))
            df = df.withColumn(f"{column}_token", token).drop(column)
        return df

    return _apply
