from __future__ import annotations

import hashlib
import hmac
import random

from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.privacy import hmac_sha256, with_keyed_tokens

KEY = b"0123456789abcdef0123456789abcdef-test-key"


def _py_hmac(value: str, key: bytes = KEY) -> str:
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def test_hmac_is_bit_identical_to_python(spark: SparkSession) -> None:
    rng = random.Random(3)
    alphabet = "abcxyzÄéßø漢字🙂 @.-+0123456789"
    values = ["", " ", "a", "x" * 5000, "ü" * 70]
    values += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 80))) for _ in range(300)]
    df = spark.createDataFrame([(v,) for v in values], "v string")
    got = {r.v: r.t for r in df.select("v", hmac_sha256(F.col("v"), KEY).alias("t")).collect()}
    assert got == {v: _py_hmac(v) for v in values}


def test_long_keys_are_hashed_first_as_rfc_2104_says(spark: SparkSession) -> None:
    long_key = bytes(range(256)) * 2
    df = spark.createDataFrame([("someone@example.org",)], "v string")
    token = df.select(hmac_sha256(F.col("v"), long_key)).first()[0]
    assert token == _py_hmac("someone@example.org", long_key)


def test_tokens_replace_identifiers_and_normalise_emails(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("C1", " Ana@Example.ORG "), ("C2", None), ("", "b@x.io")], "id string, email string"
    )
    actual = df.transform(with_keyed_tokens({"id": "id", "email": "email"}, KEY))
    expected = spark.createDataFrame(
        [
            (_py_hmac("C1"), _py_hmac("ana@example.org")),
            (_py_hmac("C2"), None),
            (None, _py_hmac("b@x.io")),
        ],
        "id_token string, email_token string",
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_another_key_gives_other_tokens(spark: SparkSession) -> None:
    df = spark.createDataFrame([("C1",)], "id string")
    a = df.select(hmac_sha256(F.col("id"), KEY)).first()[0]
    b = df.select(hmac_sha256(F.col("id"), KEY[::-1])).first()[0]
    assert a != b and a != hashlib.sha256(b"C1").hexdigest()
