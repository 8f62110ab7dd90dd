from __future__ import annotations

import hashlib
import hmac
import random

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.privacy import normalised, with_hmac, with_keyed_tokens

KEY = b"0123456789abcdef0123456789abcdef-test-key"


def _py_hmac(value: str, key: bytes = KEY) -> str:
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def _generated_values(n: int) -> list[str]:
    """`n` distinct texts: empty, blank, control characters, every plane of unicode the
    alphabet reaches (2-, 3- and 4-byte UTF-8), and some far longer than a hash block."""
    rng = random.Random(3)
    alphabet = "abcxyzÄéßø漢字🙂𝄞\t\n\x00 @.-+0123456789"
    values = {"", " ", "\x00", "a", "x" * 100_000, "ü" * 70, "🙂" * 20_000, "漢" * 64}
    while len(values) < n:
        length = rng.choice([rng.randint(1, 80), rng.randint(50, 70), rng.randint(1, 3000)])
        values.add("".join(rng.choice(alphabet) for _ in range(length)))
    return sorted(values)


def test_hmac_is_bit_identical_to_python(spark: SparkSession) -> None:
    values = _generated_values(10_000)
    df = spark.createDataFrame([(v, _py_hmac(v)) for v in values], "v string, expected string")
    tokens = df.transform(with_hmac({"t": F.col("v")}, KEY))
    assert tokens.count() == len(values)
    differing = tokens.where(~F.col("t").eqNullSafe(F.col("expected")))
    assert differing.count() == 0, differing.select("expected").limit(3).collect()


def test_hmac_of_null_is_null(spark: SparkSession) -> None:
    df = spark.createDataFrame([(None,), ("",)], "v string")
    got = [r.t for r in df.transform(with_hmac({"t": F.col("v")}, KEY)).collect()]
    assert got == [None, _py_hmac("")]


@pytest.mark.parametrize(
    "written",
    [
        "+44 20 7946 0958",
        "+44 (0)20 7946 0958",
        "0044 20 7946 0958",
        "020 7946 0958",
        "20-7946-0958",
        " (020) 7946.0958 ",
    ],
)
def test_one_phone_number_however_written_gets_one_token(spark: SparkSession, written: str) -> None:
    df = spark.createDataFrame([(written,)], "phone string")
    got = df.select(normalised(F.col("phone"), "phone", "44").alias("n")).first()
    assert got is not None and got.n == "442079460958"
    tokens = df.transform(with_keyed_tokens({"phone": "phone"}, KEY, "44")).first()
    assert tokens is not None and tokens.phone_token == _py_hmac("442079460958")


def test_phone_numbers_keep_their_own_country_code(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("+1 (415) 555-0123",), ("(415) 555-0123",), ("no digits",), (None,)], "p string"
    )
    got = [r.n for r in df.select(normalised(F.col("p"), "phone", "44").alias("n")).collect()]
    assert got == ["14155550123", "444155550123", "", None]
    with pytest.raises(ValueError, match="country code"):
        normalised(F.col("p"), "phone")


def test_long_keys_are_hashed_first_as_rfc_2104_says(spark: SparkSession) -> None:
    long_key = bytes(range(256)) * 2
    df = spark.createDataFrame([("someone@example.org",)], "v string")
    token = df.transform(with_hmac({"t": F.col("v")}, long_key)).first().t
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
    a = df.transform(with_hmac({"t": F.col("id")}, KEY)).first().t
    b = df.transform(with_hmac({"t": F.col("id")}, KEY[::-1])).first().t
    assert a != b and a != hashlib.sha256(b"C1").hexdigest()


def test_the_key_is_not_in_the_plan(spark: SparkSession) -> None:
    """Neither the key nor its padded forms (one XOR from it) are printed with the plan."""
    df = spark.createDataFrame([("C1", "a@b.io")], "id string, email string")
    tokens = df.transform(with_keyed_tokens({"id": "id", "email": "email"}, KEY))
    assert tokens.first() == (_py_hmac("C1"), _py_hmac("a@b.io"))
    execution = tokens._jdf.queryExecution()
    printed = "\n".join(
        [execution.toString(), execution.explainString(_codegen_mode(spark))]
    ).upper()
    padded = KEY.ljust(64, b"\x00")
    forms = [KEY, bytes(b ^ 0x36 for b in padded), bytes(b ^ 0x5C for b in padded)]
    assert "SHA2" in printed and "LOCALTABLESCAN" in printed  # the plan is there
    for form in forms:
        assert form.hex().upper() not in printed
    assert KEY.decode().upper() not in printed


def _codegen_mode(spark: SparkSession) -> object:
    modes = getattr(spark._jvm.org.apache.spark.sql.execution, "CodegenMode$")
    return modes.__getattr__("MODULE$")
