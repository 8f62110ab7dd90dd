"""Bronze ingestion on real files, the shared Spark session and Delta tables under the test root.

Each test declares its own small dataset (its own name, so its own tables and landing folder).
"""

from __future__ import annotations

import codecs
import io
import json
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile
from PIL import Image
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakestory.columns import LINEAGE as METADATA_COLUMNS
from lakestory.config import Dataset, Settings, load_dataset
from lakestory.demo.digits import generate_digits
from lakestory.io import INGESTION_FILES, INGESTION_RUNS, SCHEMA_DRIFT, Catalog, table_version
from lakestory.operations.ingest import STATS_COLUMNS, ingest_source

from ..conftest import CONF

pytestmark = pytest.mark.slow

PEOPLE = {"id": "string", "name": "string", "age": "int"}


def make_dataset(name: str, **sources: dict[str, Any]) -> Dataset:
    for source_name, source in sources.items():
        source.setdefault("path", f"{name}/{source_name}")
    return Dataset.model_validate({"name": name, "seed": 1, "sources": sources})


def csv_source(**extra: Any) -> dict[str, Any]:
    return {
        "format": "csv",
        "schema": dict(PEOPLE),
        "key": "id",
        "options": {"header": "true"},
        **extra,
    }


def landing(settings: Settings, ds: Dataset, source: str) -> Path:
    path = settings.root / "landing" / ds.sources[source].path
    path.mkdir(parents=True, exist_ok=True)
    return path


def bronze(spark: SparkSession, ds: Dataset, source: str) -> DataFrame:
    return spark.read.table(f"bronze.{ds.name}_{source}")


def file_log(spark: SparkSession, ds: Dataset) -> DataFrame:
    return spark.read.table(INGESTION_FILES.qualified).where(F.col("dataset") == ds.name)


def drift_log(spark: SparkSession, ds: Dataset) -> list[tuple[str, str, str]]:
    rows = spark.read.table(SCHEMA_DRIFT.qualified).where(F.col("dataset") == ds.name).collect()
    return sorted((r.column, r.change, r.action) for r in rows)


def by_name(df: DataFrame, key: str = "name") -> dict[str, Any]:
    return {r[key]: r for r in df.collect()}


def test_rerun_commits_nothing_and_a_new_drop_is_picked_up_once(
    spark: SparkSession, settings: Settings
) -> None:
    ds = make_dataset("inc", people=csv_source())
    folder = landing(settings, ds, "people")
    (folder / "a.csv").write_text("id,name,age\n1,ann,31\n2,bob,42\n")

    first = ingest_source(spark, settings, ds, "people")
    assert first.rows == 2 and first.version_after == 0 and first.run is not None

    again = ingest_source(spark, settings, ds, "people")
    assert again.run is None and again.version_after == 0
    runs = spark.read.table(INGESTION_RUNS.qualified).where(F.col("dataset") == "inc")
    assert runs.count() == 1

    (folder / "b.csv").write_text("id,name,age\n3,cy,23\n")
    third = ingest_source(spark, settings, ds, "people")
    assert third.rows == 1
    rows = bronze(spark, ds, "people")
    assert sorted(r.id for r in rows.collect()) == ["1", "2", "3"]
    assert file_log(spark, ds).groupBy("file").count().where("count > 1").count() == 0
    run = third.run
    assert run is not None
    assert (run.files_seen, run.files_new, run.rows, run.corrupt_rows) == (2, 1, 1, 0)
    assert run.bytes == (folder / "b.csv").stat().st_size


def test_metadata_on_every_row_and_row_hash_identifies_content(
    spark: SparkSession, settings: Settings
) -> None:
    ds = make_dataset("meta", people=csv_source())
    folder = landing(settings, ds, "people")
    (folder / "a.csv").write_text("id,name,age\n1,ann,31\n1,ann,31\n2,bob,42\n")
    ingest_source(spark, settings, ds, "people")
    rows = bronze(spark, ds, "people")
    assert rows.columns[-len(METADATA_COLUMNS) :] == METADATA_COLUMNS
    for column in METADATA_COLUMNS:
        assert rows.where(F.col(column).isNull()).count() == 0, column
    hashes = [r._row_hash for r in rows.orderBy("id").collect()]
    assert hashes[0] == hashes[1] != hashes[2]
    assert {r._batch_id for r in rows.collect()} == {0}
    assert rows.first()._source_file.endswith("/a.csv")


def test_the_transaction_log_keeps_statistics_of_metadata_only(
    spark: SparkSession, settings: Settings
) -> None:
    ds = make_dataset("stats", people=csv_source())
    (landing(settings, ds, "people") / "a.csv").write_text("id,name,age\n1,Zelda Quist,31\n")
    result = ingest_source(spark, settings, ds, "people")
    log = result.table.path(settings) / "_delta_log"
    adds = [
        json.loads(json.loads(line)["add"]["stats"])
        for commit in sorted(log.glob("*.json"))
        for line in commit.read_text().splitlines()
        if '"add"' in line
    ]
    assert adds and all(set(a["minValues"]) == set(STATS_COLUMNS) for a in adds)
    assert not any(b"Zelda Quist" in f.read_bytes() for f in log.iterdir() if f.is_file())


def test_csv_options_columns_by_name_rescue_drift_and_corrupt_records(
    spark: SparkSession, settings: Settings
) -> None:
    options = {"header": "true", "sep": ";", "quote": "'", "escape": "\\", "multiLine": "true"}
    ds = make_dataset("csvopt", people=csv_source(options=options))
    folder = landing(settings, ds, "people")
    (folder / "a.csv").write_text("id;name;age\n1;'ann\nsmith';31\n2;'o\\'hara';42\n")
    # columns in another order, a new column, no `age`, and a record with too many fields
    (folder / "b.csv").write_text("name;id;team\ncy;3;red\ndee;4;blue;extra\n")

    ingest_source(spark, settings, ds, "people")
    rows = by_name(bronze(spark, ds, "people"), "id")
    assert rows["1"].name == "ann\nsmith" and rows["1"].age == "31"
    assert rows["2"].name == "o'hara"
    assert rows["3"].name == "cy" and rows["3"].age is None
    assert json.loads(rows["3"]._rescued) == {"team": "red"}
    assert rows["1"]._rescued is None
    assert rows["4"]._corrupt_record == "dee;4;blue;extra"
    assert drift_log(spark, ds) == [
        ("age", "missing_column", "null"),
        ("team", "new_column", "rescued"),
    ]


def test_a_changed_type_is_reported_and_kept_as_text(
    spark: SparkSession, settings: Settings
) -> None:
    ds = make_dataset("typed", people=csv_source())
    folder = landing(settings, ds, "people")
    (folder / "a.csv").write_text("id,name,age\n1,ann,thirty\n2,bob,forty\n3,cy,3\n")
    ingest_source(spark, settings, ds, "people")
    assert sorted(r.age for r in bronze(spark, ds, "people").collect()) == ["3", "forty", "thirty"]
    assert drift_log(spark, ds) == [("age", "type_changed", "kept_as_text")]


def test_encodings_bom_and_invalid_bytes_lose_nothing(
    spark: SparkSession, settings: Settings
) -> None:
    ds = make_dataset("enc", people=csv_source())
    folder = landing(settings, ds, "people")
    text = "id,name,age\n{id},Müller café,30\n"
    (folder / "utf8.csv").write_bytes(text.format(id=1).encode("utf-8"))
    (folder / "bom.csv").write_bytes(codecs.BOM_UTF8 + text.format(id=2).encode("utf-8"))
    (folder / "utf16.csv").write_bytes(text.format(id=3).encode("utf-16"))
    cp1252 = text.format(id=4).encode("cp1252")
    (folder / "cp1252.csv").write_bytes(cp1252)
    (folder / "empty.csv").write_bytes(b"")

    result = ingest_source(spark, settings, ds, "people")
    rows = by_name(bronze(spark, ds, "people"), "id")
    assert sorted(rows) == ["1", "2", "3", "4"]
    for clean in ("1", "2", "3"):
        assert rows[clean].name == "Müller café" and rows[clean]._decode_error is None
    latin = rows["4"]
    assert "not valid UTF-8" in latin._decode_error
    assert latin.name.encode("iso-8859-1") == "Müller café".encode("cp1252")  # bytes kept
    files = {Path(r.file).name: r for r in file_log(spark, ds).collect()}
    assert files["empty.csv"].status == "empty" and files["empty.csv"].rows == 0
    assert files["utf16.csv"].encoding == "UTF-16"
    assert files["cp1252.csv"].encoding == "ISO-8859-1" and files["cp1252.csv"].decode_errors == 1
    assert result.run is not None and result.run.empty_files == 1


def test_json_lines_multiline_json_and_parquet(spark: SparkSession, settings: Settings) -> None:
    ds = make_dataset(
        "formats",
        lines={"format": "json", "schema": dict(PEOPLE), "key": "id"},
        docs={
            "format": "json",
            "schema": dict(PEOPLE),
            "key": "id",
            "options": {"multiLine": "true"},
        },
        tables={"format": "parquet", "schema": dict(PEOPLE), "key": "id"},
    )
    (landing(settings, ds, "lines") / "a.jsonl").write_text(
        '{"id": "1", "name": "ann", "age": 31, "tags": {"vip": true}}\n'
        '{"id": "2", "name": "bob", "age": 4.50}\n'
        "{not json\n"
    )
    (landing(settings, ds, "docs") / "a.json").write_text(
        '[{"id": "1", "name": "ann",\n "age": 31},\n {"id": "2", "name": "bob"}]'
    )
    frame = pd.DataFrame({"id": ["1", "2"], "name": ["ann", "bob"], "age": ["31", "x"]})
    frame.to_parquet(landing(settings, ds, "tables") / "a.parquet")

    for source in ds.sources:
        ingest_source(spark, settings, ds, source)

    lines = bronze(spark, ds, "lines")
    good = by_name(lines.where("_corrupt_record IS NULL"), "id")
    assert good["1"].age == "31" and good["2"].age == "4.5"  # JSON numbers as text
    assert json.loads(good["1"]._rescued) == {"tags": '{"vip":true}'}
    assert [r._corrupt_record for r in lines.where("_corrupt_record IS NOT NULL").collect()] == [
        "{not json"
    ]
    docs = by_name(bronze(spark, ds, "docs"), "id")
    assert docs["1"].age == "31" and docs["2"].age is None
    tables = by_name(bronze(spark, ds, "tables"), "id")
    assert tables["2"].age == "x"
    drift = drift_log(spark, ds)
    assert ("age", "type_changed", "kept_as_text") in drift
    assert ("tags", "new_column", "rescued") in drift


def test_schema_evolution_adds_new_columns_where_allowed(
    spark: SparkSession, settings: Settings
) -> None:
    ds = make_dataset("evolve", people=csv_source(schema_evolution="add_new_columns"))
    folder = landing(settings, ds, "people")
    (folder / "a.csv").write_text("id,name,age\n1,ann,31\n")
    ingest_source(spark, settings, ds, "people")
    (folder / "b.csv").write_text("id,name,age,team\n2,bob,42,red\n")
    ingest_source(spark, settings, ds, "people")
    rows = bronze(spark, ds, "people")
    assert "team" in rows.columns and "_rescued" in rows.columns
    assert {r.id: r.team for r in rows.collect()} == {"1": None, "2": "red"}
    assert drift_log(spark, ds) == [("team", "new_column", "added")]


def _png(mode: str, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color=7 if mode == "L" else (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


def _wav(seconds: float, rate: int, channels: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * channels * int(seconds * rate))
    return buf.getvalue()


def test_binary_files_with_derived_metadata_and_corrupt_files_kept(
    spark: SparkSession, settings: Settings
) -> None:
    ds = make_dataset(
        "media",
        files={"format": "binary", "kind": "auto", "max_inline_bytes": 10_000},
    )
    folder = landing(settings, ds, "files")
    png = _png("L", (8, 6))
    (folder / "digit.png").write_bytes(png)
    (folder / "cut.png").write_bytes(png[: len(png) // 2])
    (folder / "tone.wav").write_bytes(_wav(0.5, 8000, 2))
    flac = io.BytesIO()
    soundfile.write(flac, np.zeros(16000), 16000, format="FLAC")
    (folder / "sub").mkdir()
    (folder / "sub" / "tone.flac").write_bytes(flac.getvalue())
    (folder / "note.txt").write_bytes("Grüße\n".encode("utf-16"))
    (folder / "big.png").write_bytes(_png("RGB", (200, 200)) + bytes(20_000))

    ingest_source(spark, settings, ds, "files")
    rows = {Path(r._source_file).name: r for r in bronze(spark, ds, "files").collect()}
    assert sorted(rows) == ["big.png", "cut.png", "digit.png", "note.txt", "tone.flac", "tone.wav"]
    d = rows["digit.png"]
    assert (d.mime_type, d.image_width, d.image_height, d.image_mode) == ("image/png", 8, 6, "L")
    assert d.content == png and d.content_stored == "inline" and d.error is None
    assert rows["cut.png"].error is not None and rows["cut.png"].content == png[: len(png) // 2]
    w = rows["tone.wav"]
    assert (w.audio_sample_rate, w.audio_channels, w.audio_duration_s) == (8000, 2, 0.5)
    f = rows["tone.flac"]
    assert (f.mime_type, f.audio_sample_rate, f.audio_duration_s) == ("audio/flac", 16000, 1.0)
    t = rows["note.txt"]
    assert t.text_length == 6 and t.text_encoding.startswith("UTF-16")
    big = rows["big.png"]
    assert big.content is None and big.content_stored == "pointer" and big.image_width == 200
    assert big._row_hash == big.sha256 and len(big.sha256) == 64
    files = file_log(spark, ds)
    assert files.where("status = 'ok'").count() == 6
    assert files.agg(F.sum("corrupt_rows")).first()[0] == 1


def test_digits_images_and_manifest_land_in_bronze(spark: SparkSession, settings: Settings) -> None:
    ds = load_dataset("digits", CONF)
    landed = generate_digits(settings.root / "landing", drops=2, seed=3, limit=120)
    for source in ds.sources:
        ingest_source(spark, settings, ds, source)
    images = bronze(spark, ds, "images")
    assert images.count() == landed.images_written
    assert images.where("error IS NOT NULL").count() == landed.dirt["truncated"]
    duplicates = images.groupBy("sha256").count().where("count > 1")
    assert duplicates.count() == landed.dirt["duplicate_images"]
    labels = bronze(spark, ds, "labels")
    assert labels.count() == landed.manifest_rows
    assert table_version(spark, Catalog(ds).bronze("labels")) == 0
