"""Quasi-identifiers made coarse: postcodes to districts, dates of birth to age bands."""

from __future__ import annotations

import datetime as dt

import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.privacy.generalise import age_band, district, generalised


def test_postcodes_become_districts(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [
            ("SW1A 1AA", "SW1A"),
            (" sw1a1aa ", "SW1A"),
            ("M1 1AE", "M1"),
            ("B33 8TH", "B33"),
            ("EC1A 1BB", "EC1A"),
            ("94110", "941"),
            ("94110-1234", "941"),
            ("021", None),  # too short for either
            ("not a postcode", None),
            ("", None),
            (None, None),
        ],
        "postcode string, expected string",
    )
    actual = df.select(district(F.col("postcode")).alias("d"), "expected")
    assert_df_equality(
        actual.select(F.col("d").alias("expected")), df.select("expected"), ignore_nullable=True
    )


def test_ages_fall_in_bands_as_of_a_date(spark: SparkSession) -> None:
    as_of = dt.date(2024, 6, 15)
    cases = [
        (dt.date(1990, 6, 15), 30),  # 34 on the day
        (dt.date(1990, 6, 16), 30),  # 33, a day short of 34
        (dt.date(1984, 6, 15), 40),  # 40 on the day
        (dt.date(1984, 6, 16), 30),  # 39 the day before the birthday
        (dt.date(2024, 6, 15), 0),
        (dt.date(2024, 6, 16), None),  # born after the date: no age
        (None, None),
    ]
    df = spark.createDataFrame(
        [(b, as_of, e) for b, e in cases], "birth date, as_of date, expected int"
    )
    actual = df.select(age_band(F.col("birth"), F.col("as_of"), 10).alias("expected"))
    assert_df_equality(actual, df.select("expected"), ignore_nullable=True)


def test_a_band_width_of_five(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [(dt.date(1990, 1, 1), dt.datetime(2024, 6, 15, 12, 0))], "birth date, at timestamp"
    )
    row = df.select(generalised(F.col("birth"), "age_band", F.col("at"), 5).alias("b")).first()
    assert row is not None and row.b == 30  # 34


def test_an_age_band_needs_its_date(spark: SparkSession) -> None:
    with pytest.raises(ValueError, match="as_of"):
        generalised(F.col("birth"), "age_band")
