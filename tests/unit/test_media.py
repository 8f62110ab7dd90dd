"""Metadata of landed images, audio and text, from real files generated in the test."""

from __future__ import annotations

import codecs
import hashlib
import io
import random
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image
from pyspark.sql import SparkSession
from pyspark.sql.types import BinaryType, DoubleType, IntegerType, LongType, StringType

from lakestory.ingestion.media import (
    MEDIA_FIELDS,
    describe,
    describe_batches,
    described_schema,
    media_schema,
)

FIELD_NAMES = [name for name, _ in MEDIA_FIELDS]
IMAGE_FIELDS = ("image_width", "image_height", "image_mode")
AUDIO_FIELDS = ("audio_duration_s", "audio_sample_rate", "audio_channels")
TEXT_FIELDS = ("text_length", "text_encoding")


def png_bytes(mode: str, size: tuple[int, int], seed: int = 0) -> bytes:
    """A PNG of random pixels, so that zlib cannot shrink it to a few bytes."""
    channels = {"L": 1, "RGB": 3}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), np.uint8)
    image = Image.fromarray(pixels.squeeze(axis=2) if channels == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(buffer, format="JPEG")
    return buffer.getvalue()


def wav_bytes(channels: int, sample_rate: int, frames: int) -> bytes:
    """16-bit PCM written by the stdlib, independent of the soundfile reader under test."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(np.arange(frames * channels, dtype="<i2").tobytes())
    return buffer.getvalue()


def flac_bytes(channels: int, sample_rate: int, frames: int) -> bytes:
    samples = np.random.default_rng(1).uniform(-0.5, 0.5, (frames, channels))
    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def kind_fields(record: dict[str, object], names: tuple[str, ...]) -> tuple[object, ...]:
    return tuple(record[name] for name in names)


def test_keys_are_exactly_media_fields() -> None:
    assert list(describe(png_bytes("L", (8, 8)), "a.png", "image")) == FIELD_NAMES


def test_media_schema_follows_media_fields() -> None:
    schema = media_schema()
    assert [(f.name, f.dataType) for f in schema.fields][:4] == [
        ("sha256", StringType()),
        ("size", LongType()),
        ("mime_type", StringType()),
        ("media_kind", StringType()),
    ]
    assert schema["image_width"].dataType == IntegerType()
    assert schema["audio_duration_s"].dataType == DoubleType()
    assert schema.fieldNames() == FIELD_NAMES


def test_described_schema_wraps_media_fields() -> None:
    schema = described_schema()
    assert schema.fieldNames() == ["path", *FIELD_NAMES, "content", "content_stored"]
    assert schema["content"].dataType == BinaryType()


def test_png_grayscale() -> None:
    content = png_bytes("L", (8, 8))
    record = describe(content, "scans/a.png", "image")
    assert record["sha256"] == hashlib.sha256(content).hexdigest()
    assert record["size"] == len(content)
    assert record["mime_type"] == "image/png"
    assert record["media_kind"] == "image"
    assert kind_fields(record, IMAGE_FIELDS) == (8, 8, "L")
    assert kind_fields(record, AUDIO_FIELDS + TEXT_FIELDS) == (None,) * 5
    assert record["error"] is None


def test_jpeg_rgb() -> None:
    record = describe(jpeg_bytes((16, 12)), "photo.jpg", "image")
    assert record["mime_type"] == "image/jpeg"
    assert kind_fields(record, IMAGE_FIELDS) == (16, 12, "RGB")
    assert record["error"] is None


def test_truncated_png_is_flagged_and_keeps_identity() -> None:
    content = png_bytes("L", (64, 64))[:2000]
    record = describe(content, "cut.png", "image")
    assert str(record["error"]).startswith("image: truncated or corrupt (")
    assert record["sha256"] == hashlib.sha256(content).hexdigest()
    assert record["size"] == 2000
    assert record["mime_type"] == "image/png"
    assert kind_fields(record, IMAGE_FIELDS) == (None, None, None)


def test_png_with_bad_checksum_is_flagged() -> None:
    # The IDAT chunk's CRC sits just before the 12-byte IEND chunk; pixels still decode.
    content = bytearray(png_bytes("L", (8, 8)))
    content[-13] ^= 0xFF
    record = describe(bytes(content), "crc.png", "image")
    assert str(record["error"]).startswith("image: truncated or corrupt (")


def test_random_bytes_as_image_are_unrecognised() -> None:
    record = describe(random.Random(0).randbytes(500), "noise.png", "image")
    assert record["error"] == "image: unrecognised format"
    assert record["mime_type"] == "application/octet-stream"


@pytest.mark.parametrize(
    ("channels", "sample_rate", "frames", "duration"),
    [(1, 8000, 12000, 1.5), (2, 16000, 4000, 0.25)],
)
def test_wav(channels: int, sample_rate: int, frames: int, duration: float) -> None:
    record = describe(wav_bytes(channels, sample_rate, frames), "a.wav", "audio")
    assert record["mime_type"] == "audio/wav"
    assert record["audio_sample_rate"] == sample_rate
    assert record["audio_channels"] == channels
    assert record["audio_duration_s"] == pytest.approx(duration, abs=1e-6)
    assert record["error"] is None


def test_flac() -> None:
    record = describe(flac_bytes(2, 44100, 22050), "a.flac", "audio")
    assert record["mime_type"] == "audio/flac"
    assert kind_fields(record, AUDIO_FIELDS) == (pytest.approx(0.5, abs=1e-6), 44100, 2)
    assert record["error"] is None


@pytest.mark.parametrize("keep", [0.5, 0.999, 0.0])
def test_wav_cut_short_is_flagged(keep: float) -> None:
    content = wav_bytes(1, 8000, 8000)
    header = 44
    cut = content[: header + int((len(content) - header) * keep)]
    record = describe(cut, "cut.wav", "audio")
    assert str(record["error"]).startswith("audio: truncated (data chunk declares 16000 bytes")
    assert kind_fields(record, AUDIO_FIELDS) == (None, None, None)


def test_wav_cut_inside_its_data_chunk_header_is_flagged() -> None:
    record = describe(wav_bytes(1, 8000, 8000)[:42], "cut.wav", "audio")
    assert record["error"] == "audio: truncated (no complete data chunk)"


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_flac_cut_short_is_flagged(keep: float) -> None:
    content = flac_bytes(1, 8000, 8000)
    record = describe(content[: int(len(content) * keep)], "cut.flac", "audio")
    assert str(record["error"]).startswith("audio: truncated")
    assert kind_fields(record, AUDIO_FIELDS) == (None, None, None)


def test_random_bytes_as_audio_are_unreadable() -> None:
    record = describe(random.Random(0).randbytes(500), "noise.wav", "audio")
    assert str(record["error"]).startswith("audio: unreadable (")
    assert "0x" not in str(record["error"])  # no object addresses in stored data


@pytest.mark.parametrize(
    ("content", "length", "encoding"),
    [
        ("naïve café ✓".encode(), 12, "UTF-8"),
        (codecs.BOM_UTF8 + "naïve café".encode(), 10, "UTF-8 (BOM)"),
        (codecs.BOM_UTF16_LE + "naïve café".encode("utf-16-le"), 10, "UTF-16LE (BOM)"),
        (codecs.BOM_UTF16_BE + "naïve café".encode("utf-16-be"), 10, "UTF-16BE (BOM)"),
        (codecs.BOM_UTF32_LE + "naïve café".encode("utf-32-le"), 10, "UTF-32LE (BOM)"),
    ],
)
def test_text_with_known_encoding(content: bytes, length: int, encoding: str) -> None:
    record = describe(content, "notes.txt", "text")
    assert kind_fields(record, TEXT_FIELDS) == (length, encoding)
    assert record["mime_type"] == "text/plain"
    assert record["error"] is None


def test_cp1252_text_is_guessed_not_replaced() -> None:
    content = "Müller café".encode("cp1252")
    record = describe(content, "names.txt", "text")
    assert record["error"] is None
    assert record["text_length"] == 11
    encoding = str(record["text_encoding"])
    assert not encoding.lower().replace("_", "-").startswith("utf")
    assert len(content.decode(encoding)) == 11


def test_utf16_bom_with_odd_byte_count_is_undecodable() -> None:
    record = describe(codecs.BOM_UTF16_LE + b"a\x00b", "odd.txt", "text")
    assert record["error"] == "text: undecodable as UTF-16LE (BOM)"
    assert kind_fields(record, TEXT_FIELDS) == (None, None)


def test_random_bytes_as_text_are_undecodable() -> None:
    record = describe(random.Random(0).randbytes(500), "noise.txt", "text")
    assert record["error"] == "text: undecodable"


def test_text_mime_type_comes_from_the_extension() -> None:
    assert describe(b"a,b\n1,2\n", "data.csv", "text")["mime_type"] == "text/csv"
    assert describe(b"a,b\n", "data", "text")["mime_type"] == "text/plain"


def test_empty_file() -> None:
    record = describe(b"", "empty.txt", "auto")
    assert record["error"] == "empty file"
    assert record["size"] == 0
    assert record["sha256"] == hashlib.sha256(b"").hexdigest()
    assert kind_fields(record, TEXT_FIELDS) == (None, None)


def test_missing_content() -> None:
    record = describe(None, "gone.png", "auto")
    assert record["error"] == "no content"
    assert (record["sha256"], record["size"], record["media_kind"]) == (None, None, "image")


@pytest.mark.parametrize(
    ("content", "path", "media_kind", "mime_type"),
    [
        (png_bytes("L", (8, 8)), "landing/no_extension", "image", "image/png"),
        (jpeg_bytes((4, 4)), "misnamed.txt", "image", "image/jpeg"),
        (wav_bytes(1, 8000, 80), "clip.bin", "audio", "audio/wav"),
        (b"plain words", "readme.md", "text", "text/plain"),
        (b"%PDF-1.7\n", "doc.pdf", "other", "application/pdf"),
        (random.Random(0).randbytes(500), "blob.bin", "other", "application/octet-stream"),
    ],
)
def test_auto_decides_by_magic_then_extension(
    content: bytes, path: str, media_kind: str, mime_type: str
) -> None:
    record = describe(content, path, "auto")
    assert (record["media_kind"], record["mime_type"], record["error"]) == (
        media_kind,
        mime_type,
        None,
    )


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        describe(b"x", "a.txt", "video")


def test_describe_batches_inlines_only_small_content() -> None:
    small, large = b"tiny text", b"x" * 100
    batch = pd.DataFrame(
        {
            "path": ["s.txt", "l.txt", "n.txt"],
            "modificationTime": pd.to_datetime(["2024-01-01"] * 3),
            "length": [len(small), len(large), 0],
            "content": [small, large, None],
        }
    )
    (out,) = describe_batches(iter([batch]), "auto", keep_content=True, max_inline_bytes=50)
    assert list(out.columns) == described_schema().fieldNames()
    assert list(out["content"]) == [small, None, None]
    assert list(out["content_stored"]) == ["inline", "pointer", "pointer"]
    assert list(out["size"]) == [len(small), len(large), None]
    assert list(out["error"]) == [None, None, "no content"]

    (dropped,) = describe_batches(iter([batch]), "auto", keep_content=False, max_inline_bytes=50)
    assert list(dropped["content_stored"]) == ["pointer"] * 3


def test_binary_file_source_through_map_in_pandas(spark: SparkSession, tmp_path: Path) -> None:
    files = {
        "gray.png": png_bytes("L", (8, 8)),
        "cut.png": png_bytes("L", (64, 64))[:2000],
        "stereo.wav": wav_bytes(2, 16000, 4000),
        "names.txt": "Müller café".encode(),
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)

    described = (
        spark.read.format("binaryFile")
        .load(str(tmp_path))
        .mapInPandas(lambda it: describe_batches(it, "auto", True, 1 << 20), described_schema())
    )
    rows = {Path(row["path"]).name: row.asDict() for row in described.collect()}

    assert sorted(rows) == sorted(files)
    for name, content in files.items():
        assert rows[name]["sha256"] == hashlib.sha256(content).hexdigest()
        assert rows[name]["content"] == content
        assert rows[name]["content_stored"] == "inline"
    assert kind_fields(rows["gray.png"], IMAGE_FIELDS) == (8, 8, "L")
    assert str(rows["cut.png"]["error"]).startswith("image: truncated or corrupt (")
    assert kind_fields(rows["stereo.wav"], AUDIO_FIELDS) == (pytest.approx(0.25), 16000, 2)
    assert kind_fields(rows["names.txt"], TEXT_FIELDS) == (11, "UTF-8")
    assert rows["names.txt"]["image_width"] is None
