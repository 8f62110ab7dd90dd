"""Pseudonymisation of a source's rows: quasi-identifiers generalised, direct identifiers
dropped, identifiers replaced by artificial ids minted in the vault."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from lakestory.columns import Transform
from lakestory.config import Source
from lakestory.io import Catalog, Shell
from lakestory.privacy.generalise import generalised
from lakestory.privacy.tokens import with_keyed_tokens
from lakestory.privacy.vault import TOKEN, mint_ids, with_artificial_ids


def with_pseudonyms(source: Source, key: bytes, vault: DataFrame) -> Transform:
    """Generalise quasi-identifiers, drop direct identifiers, and replace each identifier by
    its artificial id: its keyed token looked up in the dataset's `vault`, where `mint` has
    put it (the token itself never reaches silver). An identifier whose id is already there
    (the business key's, looked up by `ranked`) is only dropped."""

    personal = source.personal
    as_of = F.col(personal.age_as_of)

    def _apply(df: DataFrame) -> DataFrame:
        for column, kind in personal.generalise.items():
            coarse = generalised(F.col(column), kind, as_of, personal.age_band_width)
            df = df.withColumn(source.silver_name(column), coarse)
        df = df.drop(*personal.generalise, *personal.drop)
        done = [c for c in personal.tokenize if source.silver_name(c) in df.columns]
        pending: dict[str, str] = {c: k for c, k in personal.tokenize.items() if c not in done}
        tokens = with_keyed_tokens(pending, key, personal.country_code)
        ids = {f"{c}_token": source.silver_name(c) for c in pending}
        return df.drop(*done).transform(tokens).transform(with_artificial_ids(vault, ids))

    return _apply


def mint(shell: Shell, catalog: Catalog, source: Source, typed: DataFrame, key: bytes) -> int:
    """Give each identifier of `typed` (rows with the source's declared types) that the
    dataset's vault lacks an artificial id; returns how many were minted."""
    personal = source.personal
    if not personal.tokenize:
        return 0
    tokens = typed.select(*personal.tokenize).transform(
        with_keyed_tokens(dict(personal.tokenize), key, personal.country_code)
    )
    every = F.explode(F.array(*[F.col(f"{c}_token") for c in personal.tokenize]))
    return mint_ids(shell, catalog, tokens.select(every.alias(TOKEN)), key)
