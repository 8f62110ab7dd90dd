"""Silver's rows from the rows that passed every rule: outliers flagged or clipped, the
latest version of each business key, pseudonymised, in silver's column order; and silver's
schema under a config, from the plan alone."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, MapType, StructField, StructType

from lakestory.columns import FILE_MODIFICATION_TIME, INGESTED_AT, ROW_HASH, SOURCE_FILE
from lakestory.config import Source
from lakestory.privacy import normalised, with_hmac
from lakestory.privacy.pseudonyms import with_pseudonyms
from lakestory.privacy.vault import SCHEMA as VAULT_SCHEMA
from lakestory.privacy.vault import with_artificial_ids
from lakestory.quality.accounting import OUTSIDE
from lakestory.quality.casting import with_declared_types
from lakestory.quality.dedup import RANK, rank_versions
from lakestory.quality.outliers import OUTLIERS, Fence, flag_and_clip

# kept in silver: where each row came from, and what orders two versions of a record
SILVER_METADATA = [SOURCE_FILE, FILE_MODIFICATION_TIME, INGESTED_AT]


def silver_frame(
    kept: DataFrame, source: Source, key: bytes, found: list[Fence], vault: DataFrame
) -> DataFrame:
    """The rows silver gets from the rows that passed every rule: outliers flagged or clipped,
    the latest version of each business key, pseudonymised, in silver's column order."""
    return silver_rows(ranked(kept, source, found, key), source, key, vault)


KEY_TOKEN = "__key_token"


def ranked(kept: DataFrame, source: Source, found: list[Fence], key: bytes) -> DataFrame:
    """Kept rows with outliers flagged or clipped, and ranked among the versions of their key
    (`rank_versions`): exact copies collapse with the other versions of their key, and the
    row hash last makes the choice among equals the same in every run.

    A tokenised business key is ranked by its keyed token (`KEY_TOKEN`), so that two ways of
    writing one key (" C1", "C1") are one key, as in silver; `silver_rows` then looks up the
    token's artificial id for the latest version alone."""
    outside = {f"{OUTSIDE}{i}": f.outside() for i, f in enumerate(found)}
    kept = kept.withColumns({**outside, **dict(flag_and_clip(found, dict(source.schema_)))})
    by = source.key
    kind = source.personal.tokenize.get(source.key)
    if kind is not None:
        value = normalised(F.col(source.key), kind, source.personal.country_code)
        kept = kept.transform(with_hmac({KEY_TOKEN: F.when(value != "", value)}, key))
        by = KEY_TOKEN
    return kept.transform(rank_versions(by, [*version_order(source), ROW_HASH]))


def silver_rows(
    ranked: DataFrame, source: Source, key: bytes, vault: DataFrame, keep: tuple[str, ...] = ()
) -> DataFrame:
    """The latest version of each key of `ranked` (`ranked`'s frame), pseudonymised, in
    silver's column order.

    A tokenised key's id is looked up in `vault` after the ranking, by the token the rows are
    ranked by: the join then reuses the window's exchange and sort of the rows (only the
    vault's side is shuffled), and reads the vault for one row per key."""
    latest = ranked.where(F.col(RANK) == 1)
    if KEY_TOKEN in ranked.columns:
        latest = latest.transform(
            with_artificial_ids(vault, {KEY_TOKEN: source.silver_name(source.key)})
        )
    extra = [OUTLIERS] if OUTLIERS in ranked.columns else []
    return latest.transform(with_pseudonyms(source, key, vault)).select(
        *source.silver_columns(), *extra, *SILVER_METADATA, *keep
    )


def version_order(source: Source) -> list[str]:
    """What makes one version of a record later than another: the configured column, then the
    landing file's modification time and name."""
    return [c for c in [source.order_by] if c] + [FILE_MODIFICATION_TIME, SOURCE_FILE]


def silver_schema(spark: SparkSession, bronze: DataFrame, source: Source) -> StructType:
    """The schema silver gets under the current config, from the plan alone (no data read)."""
    typed = bronze.limit(0).transform(with_declared_types(source))
    placeholders = [
        Fence(c, o.method, o.k, o.action, None, None) for c, o in source.outliers.items()
    ]
    vault = spark.createDataFrame([], VAULT_SCHEMA)
    return silver_frame(typed, source, b"schema-only", placeholders, vault).schema


def same_shape(a: StructType, b: StructType) -> bool:
    """Same column names and types, nullability aside: a table's schema has every field,
    array element and map value nullable (Spark writes files so), a plan's may not."""
    return [(f.name, _nullable(f.dataType)) for f in a.fields] == [
        (f.name, _nullable(f.dataType)) for f in b.fields
    ]


def _nullable(dtype: DataType) -> DataType:
    if isinstance(dtype, StructType):
        return StructType([StructField(f.name, _nullable(f.dataType)) for f in dtype.fields])
    if isinstance(dtype, ArrayType):
        return ArrayType(_nullable(dtype.elementType))
    if isinstance(dtype, MapType):
        return MapType(_nullable(dtype.keyType), _nullable(dtype.valueType))
    return dtype
