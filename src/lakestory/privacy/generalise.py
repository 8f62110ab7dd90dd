"""Quasi-identifiers made coarse: a date of birth to a year or an age band, a postcode to its
district. Each is a Spark expression; a value that cannot be generalised becomes null rather
than staying as precise as it was."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

# a UK postcode: its outward code (the district, "SW1A") before its inward code ("1AA")
_UK_POSTCODE = r"^([A-Z]{1,2}[0-9][A-Z0-9]?) ?[0-9][A-Z]{2}$"
# a US ZIP or ZIP+4 code: the first three digits name the sectional centre (HIPAA's ZIP3)
_US_ZIP = r"^([0-9]{3})[0-9]{2}(-?[0-9]{4})?$"


def district(postcode: Column) -> Column:
    """The postcode's district: a UK postcode's outward code ("sw1a 1aa" -> "SW1A"), a US ZIP
    code's first three digits ("94110-1234" -> "941"); null for anything else."""
    text = F.upper(F.trim(postcode))
    return (
        F.when(text.rlike(_UK_POSTCODE), F.regexp_extract(text, _UK_POSTCODE, 1))
        .when(text.rlike(_US_ZIP), F.regexp_extract(text, _US_ZIP, 1))
        .otherwise(F.lit(None).cast("string"))
    )


def age_band(birth: Column, as_of: Column, width: int) -> Column:
    """The age in whole years on the date of `as_of`, rounded down to a multiple of `width`
    (with width 10, ages 30 to 39 give 30); null when either date is missing or the birth
    comes after `as_of`."""
    age = F.floor(F.months_between(F.to_date(as_of), F.to_date(birth)) / 12)
    return F.when(age >= 0, (F.floor(age / width) * width).cast("int"))


def generalised(value: Column, kind: str, as_of: Column | None = None, width: int = 10) -> Column:
    """`value` generalised as `kind` says: "year" (of a date), "age_band" (needs `as_of`) or
    "district" (of a postcode)."""
    if kind == "year":
        return F.year(value)
    if kind == "age_band":
        if as_of is None:
            raise ValueError("an age band needs the date it is taken at (as_of)")
        return age_band(value, as_of, width)
    if kind == "district":
        return district(value)
    raise ValueError(f"unknown generalisation {kind!r}")
