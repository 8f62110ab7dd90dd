"""Keyed tokens: Spark built-ins (lakestory.privacy.hmac_sha256) against a Python UDF.

Both sides hash the same generated e-mails in the same session; each is timed over a full
pass that forces every token to be computed (their maximum). Prints one JSON
line: {"rows": N, "builtin_s": ..., "udf_s": ..., "speedup_vs_udf": ...}.

    python bench/tokens.py --rows 2000000
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import time

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from lakestory import session
from lakestory.config import load_settings
from lakestory.privacy import hmac_sha256

KEY = os.urandom(32)


def _timed(df: DataFrame, token: Column) -> float:
    start = time.perf_counter()
    df.select(F.max(token).alias("m")).collect()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args()

    settings = load_settings()
    spark = session.build(settings)
    emails = (
        spark.range(args.rows)
        .select(F.concat(F.lit("customer."), F.col("id"), F.lit("@example.org")).alias("email"))
        .cache()
    )
    emails.count()

    @F.udf("string")
    def python_hmac(value: str | None) -> str | None:
        if value is None:
            return None
        return hmac.new(KEY, value.encode("utf-8"), hashlib.sha256).hexdigest()

    # Same results first: the comparison is only fair between equal outputs.
    sample = emails.limit(1000)
    mismatches = sample.where(hmac_sha256(F.col("email"), KEY) != python_hmac("email")).count()
    assert mismatches == 0, f"{mismatches} tokens differ between built-ins and the UDF"

    _timed(emails.limit(10_000), hmac_sha256(F.col("email"), KEY))  # warm-up
    builtin = _timed(emails, hmac_sha256(F.col("email"), KEY))
    udf = _timed(emails, python_hmac("email"))
    print(
        json.dumps(
            {
                "rows": args.rows,
                "builtin_s": round(builtin, 2),
                "udf_s": round(udf, 2),
                "speedup_vs_udf": round(udf / builtin, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
