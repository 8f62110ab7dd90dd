"""Metadata of binary files landed in bronze: images, audio and text documents.

`describe` is pure Python and runs on executors inside `DataFrame.mapInPandas`
(`describe_batches`) over rows of Spark's `binaryFile` source. It never raises for bad content:
a corrupt, truncated or undecodable file keeps its row, with the reason in `error`. Kind-specific
fields are filled only when the content decoded completely; otherwise they are null.

Known blind spots: PCM WAV has no checksums, so flipped sample bytes pass; an Ogg Vorbis file
cut short reads as a shorter, whole file (its header does not state a length).
"""

from __future__ import annotations

import codecs
import hashlib
import io
import mimetypes
import posixpath
import struct
from collections.abc import Callable, Iterator

import charset_normalizer
import pandas as pd
import soundfile as sf
from PIL import Image
from pyspark.sql.types import (
    BinaryType,
    DataType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

KINDS = ("image", "audio", "text", "auto")

MEDIA_FIELDS: list[tuple[str, str]] = [
    ("sha256", "string"),
    ("size", "bigint"),
    ("mime_type", "string"),
    ("media_kind", "string"),
    ("image_width", "int"),
    ("image_height", "int"),
    ("image_mode", "string"),
    ("audio_duration_s", "double"),
    ("audio_sample_rate", "int"),
    ("audio_channels", "int"),
    ("text_length", "bigint"),
    ("text_encoding", "string"),
    ("error", "string"),
]

_SPARK_TYPES: dict[str, DataType] = {
    "string": StringType(),
    "bigint": LongType(),
    "int": IntegerType(),
    "double": DoubleType(),
}

# Checked in order; a RIFF container is told apart by its form type at bytes 8..12.
_SIGNATURES: list[tuple[bytes, str]] = [
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"fLaC", "audio/flac"),
    (b"OggS", "audio/ogg"),
    (b"%PDF-", "application/pdf"),
]
_RIFF_FORMS = {b"WAVE": "audio/wav", b"WEBP": "image/webp"}

_KIND_BY_EXTENSION = {
    **dict.fromkeys([".png", ".jpg", ".jpeg", ".gif", ".webp", ".tif", ".tiff", ".bmp"], "image"),
    **dict.fromkeys([".wav", ".flac", ".ogg", ".oga"], "audio"),
    **dict.fromkeys(
        [".txt", ".csv", ".tsv", ".json", ".jsonl", ".md", ".xml", ".html", ".yaml", ".yml"],
        "text",
    ),
}

# Python's built-in table only: the host's /etc/mime.types differs between machines, and the
# same file must get the same mime type on every executor.
_MIME_TYPES = mimetypes.MimeTypes()
_TEXT_APPLICATION_TYPES = {"application/json", "application/xml", "application/javascript"}

# UTF-32LE before UTF-16LE: its BOM starts with the UTF-16LE one.
_BOMS: list[tuple[bytes, str, str]] = [
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32LE (BOM)"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32BE (BOM)"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8 (BOM)"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16LE (BOM)"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16BE (BOM)"),
]

_DECODE_CHUNK = 1 << 20
_AUDIO_BLOCK_FRAMES = 1 << 16
# Streaming WAV writers that cannot seek back leave the data chunk size at its maximum.
_WAV_UNKNOWN_SIZE = 0xFFFFFFFF


class MediaError(Exception):
    """Content that cannot be described; the message goes into the `error` field."""


def media_schema() -> StructType:
    """The Spark schema of `describe`'s output, in `MEDIA_FIELDS` order."""
    return StructType([StructField(name, _SPARK_TYPES[type_]) for name, type_ in MEDIA_FIELDS])


def described_schema() -> StructType:
    """The Spark schema of `describe_batches`' output."""
    return StructType(
        [
            StructField("path", StringType()),
            *media_schema().fields,
            StructField("content", BinaryType()),
            StructField("content_stored", StringType()),
        ]
    )


def describe(content: bytes | None, path: str, kind: str) -> dict[str, object]:
    """Describe one file's content; keys are exactly the names in `MEDIA_FIELDS`.

    Args:
        content: The file's bytes; None when the source gave none.
        path: The file's path or URI; its extension helps resolve "auto" and text mime types.
        kind: "image", "audio", "text", or "auto" to decide from magic bytes, then extension.

    Raises:
        ValueError: If `kind` is not one of `KINDS`. Bad content never raises.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    sniffed = _sniff_mime(content) if content else None
    media_kind = _resolve_kind(sniffed, path) if kind == "auto" else kind
    record: dict[str, object] = {name: None for name, _ in MEDIA_FIELDS}
    record["media_kind"] = media_kind
    if content is None:
        record["error"] = "no content"
        return record
    record["sha256"] = hashlib.sha256(content).hexdigest()
    record["size"] = len(content)
    record["mime_type"] = sniffed or _fallback_mime(path, media_kind)
    if not content:
        record["error"] = "empty file"
        return record
    describer = _DESCRIBERS.get(media_kind)
    if describer is not None:
        try:
            record.update(describer(content))
        except MediaError as exc:
            record["error"] = str(exc)
    return record


def describe_batches(
    batches: Iterator[pd.DataFrame], kind: str, keep_content: bool, max_inline_bytes: int
) -> Iterator[pd.DataFrame]:
    """Describe `binaryFile` rows for `mapInPandas`; the output matches `described_schema()`.

    Content stays inline only when `keep_content` is set and it is at most `max_inline_bytes`;
    otherwise it is dropped and `content_stored` is "pointer" (the path points at the file).
    Rows are described one at a time, so only the input batch is ever held whole.
    """
    names = [field.name for field in described_schema().fields]
    for batch in batches:
        columns: dict[str, list[object]] = {name: [] for name in names}
        for path, content in zip(batch["path"], batch["content"], strict=True):
            record = describe(content, path, kind)
            inline = keep_content and content is not None and len(content) <= max_inline_bytes
            record["path"] = path
            record["content"] = content if inline else None
            record["content_stored"] = "inline" if inline else "pointer"
            for name in names:
                columns[name].append(record[name])
        # object columns keep ints as ints and nulls as None (no float NaN) for Arrow.
        yield pd.DataFrame(
            {name: pd.Series(values, dtype=object) for name, values in columns.items()}
        )


def _sniff_mime(content: bytes) -> str | None:
    if content.startswith(b"RIFF"):
        return _RIFF_FORMS.get(content[8:12])
    for signature, mime in _SIGNATURES:
        if content.startswith(signature):
            return mime
    return None


def _resolve_kind(sniffed: str | None, path: str) -> str:
    if sniffed is not None:
        major = sniffed.split("/")[0]
        return major if major in ("image", "audio", "text") else "other"
    extension = posixpath.splitext(path)[1].lower()
    return _KIND_BY_EXTENSION.get(extension, "other")


def _fallback_mime(path: str, media_kind: str) -> str:
    """The mime type of content no signature matched: from the extension for text only."""
    if media_kind != "text":
        return "application/octet-stream"
    guessed, _ = _MIME_TYPES.guess_type(path)
    if guessed and (guessed.startswith("text/") or guessed in _TEXT_APPLICATION_TYPES):
        return guessed
    return "text/plain"


def _describe_image(content: bytes) -> dict[str, object]:
    try:
        with Image.open(io.BytesIO(content)) as image:
            image.load()
            fields: dict[str, object] = {
                "image_width": image.width,
                "image_height": image.height,
                "image_mode": image.mode,
            }
        # load() skips chunk checksums; verify() checks them (PNG) and needs a fresh open.
        with Image.open(io.BytesIO(content)) as image:
            image.verify()
    except Image.UnidentifiedImageError as exc:
        raise MediaError("image: unrecognised format") from exc
    except Image.DecompressionBombError as exc:
        raise MediaError(f"image: too large to decode ({exc})") from exc
    except Exception as exc:  # decoders raise many types on hostile bytes
        raise MediaError(f"image: truncated or corrupt ({exc})") from exc
    return fields


def _describe_audio(content: bytes) -> dict[str, object]:
    try:
        sound = sf.SoundFile(io.BytesIO(content))
    except Exception as exc:
        raise MediaError(f"audio: unreadable ({_audio_reason(exc)})") from exc
    with sound:
        try:
            decoded = _count_frames(sound)
        except Exception as exc:
            raise MediaError(f"audio: truncated or corrupt ({_audio_reason(exc)})") from exc
        declared, sample_rate, channels = sound.frames, sound.samplerate, sound.channels
    # A backstop: libsndfile 1.2 raises instead for every cut or over-claiming FLAC tried.
    if decoded < declared:
        raise MediaError(f"audio: truncated ({decoded} of {declared} frames decode)")
    # libsndfile shortens a cut WAV's frame count to the bytes present, so the header's own
    # chunk sizes are the only witness that the file was cut.
    wav_cut = _wav_truncation(content)
    if wav_cut is not None:
        raise MediaError(f"audio: truncated ({wav_cut})")
    return {
        "audio_duration_s": decoded / sample_rate,
        "audio_sample_rate": sample_rate,
        "audio_channels": channels,
    }


def _count_frames(sound: sf.SoundFile) -> int:
    """Decode every frame, a block at a time, and return how many there were."""
    decoded = 0
    while True:
        block = sound.read(_AUDIO_BLOCK_FRAMES, dtype="float32", always_2d=True)
        if len(block) == 0:
            return decoded
        decoded += len(block)


def _audio_reason(exc: Exception) -> str:
    # LibsndfileError's str() names the BytesIO object's address; keep only libsndfile's words.
    if isinstance(exc, sf.LibsndfileError):
        return str(exc.error_string)
    return str(exc)


def _wav_truncation(content: bytes) -> str | None:
    """Why a RIFF/WAVE file is cut short, judged by its chunk sizes; None if whole or not WAV."""
    if not (content.startswith(b"RIFF") and content[8:12] == b"WAVE"):
        return None
    offset = 12
    while offset + 8 <= len(content):
        chunk_id = content[offset : offset + 4]
        (size,) = struct.unpack_from("<I", content, offset + 4)
        if chunk_id == b"data":
            present = len(content) - offset - 8
            if size != _WAV_UNKNOWN_SIZE and size > present:
                return f"data chunk declares {size} bytes, {present} present"
            return None
        offset += 8 + size + (size & 1)  # chunks are padded to an even length
    return "no complete data chunk"


def _describe_text(content: bytes) -> dict[str, object]:
    for bom, codec, name in _BOMS:
        if content.startswith(bom):
            return {
                "text_length": _count_chars(content, len(bom), codec, name),
                "text_encoding": name,
            }
    try:
        return {"text_length": _count_chars(content, 0, "utf-8", "UTF-8"), "text_encoding": "UTF-8"}
    except MediaError:
        pass
    try:
        best = charset_normalizer.from_bytes(content).best()
    except Exception as exc:
        raise MediaError("text: undecodable") from exc
    if best is None:
        raise MediaError("text: undecodable")
    return {
        "text_length": _count_chars(content, 0, best.encoding, best.encoding),
        "text_encoding": best.encoding,
    }


def _count_chars(content: bytes, start: int, codec: str, name: str) -> int:
    """Characters in `content[start:]` decoded strictly, without holding the whole text."""
    data = memoryview(content)[start:]
    try:
        decoder = codecs.getincrementaldecoder(codec)(errors="strict")
        length = 0
        for offset in range(0, len(data), _DECODE_CHUNK):
            length += len(decoder.decode(data[offset : offset + _DECODE_CHUNK]))
        return length + len(decoder.decode(b"", final=True))
    except (UnicodeDecodeError, LookupError) as exc:
        raise MediaError(f"text: undecodable as {name}") from exc


_DESCRIBERS: dict[str, Callable[[bytes], dict[str, object]]] = {
    "image": _describe_image,
    "audio": _describe_audio,
    "text": _describe_text,
}
