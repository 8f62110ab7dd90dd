"""Seeded generator of a dirty landing zone for a ``digits`` image dataset.

The source is scikit-learn's bundled handwritten digits (1,797 8x8 images, values 0..16; no
download). Each source image becomes one PNG, spread over the drops in source order, with one
line in its drop's label manifest. File names are a seeded permutation of ``img_<NNNNN>.png``,
so neither the name nor the order says anything about the label.

Dirt is drawn on disjoint source images, so each file carries at most one kind:
missing_labels (label empty, or the token ``unknown``), wrong_labels (another digit) and
truncated (the PNG is cut inside its image data and fails to decode; its label is true) change
an image's own line or file; duplicate_images adds a byte-identical copy of a clean image
under a new name, in the same or a later drop, with its own manifest line. The copies in
label_conflicts (a subset of duplicate_images) carry a label that differs from the original's.
So ``images_written == images + duplicate_images`` and the non-empty manifest labels that
differ from the truth number ``wrong_labels + label_conflicts``.

Example:
    lakestory generate digits --drops 2  # into <root>/landing
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from lakestory.demo.landing import write_atomically

MANIFEST_HEADER = ["file_name", "label"]
# dirt kind -> share of source images; the kinds are drawn on disjoint images, in this order
DIGIT_DIRT = {
    "missing_labels": 0.02,
    "wrong_labels": 0.02,
    "duplicate_images": 0.02,
    "truncated": 0.003,
}
UNKNOWN_SHARE = 0.5  # of missing_labels: written as "unknown" rather than left empty
CONFLICT_SHARE = 0.5  # of duplicate_images: the copy's label differs from the original's
UNKNOWN_LABEL = "unknown"


@dataclass(frozen=True)
class GeneratedDigits:
    """What :func:`generate_digits` wrote.

    Attributes:
        image_files: Every PNG written, in drop order (originals and duplicate copies).
        manifest_files: Label manifests, one per drop, in drop order.
        images: Distinct source images used.
        images_written: PNG files written, ``images + dirt["duplicate_images"]``.
        manifest_rows: Data lines across all manifests (headers excluded); one per PNG.
        dirt: Dirty files per kind (see ``DIGIT_DIRT``), plus ``label_conflicts``, the
            duplicate copies whose label differs from the original's.
        true_labels: File name -> true digit, for every PNG (a copy has its original's).
    """

    image_files: list[Path]
    manifest_files: list[Path]
    images: int
    images_written: int
    manifest_rows: int
    dirt: dict[str, int] = field(default_factory=dict)
    true_labels: dict[str, int] = field(default_factory=dict)


def _count(total: int, frac: float) -> int:
    return int(round(total * frac))


def _png(pixels: np.ndarray) -> bytes:
    """Encode an 8x8 uint8 array as a grayscale PNG; Pillow adds no timestamp, so it is stable."""
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _truncate(png: bytes) -> bytes:
    """Cut a PNG halfway through its IDAT data, which Pillow refuses to decode."""
    start = png.index(b"IDAT") - 4
    length = int.from_bytes(png[start : start + 4], "big")
    # Half the compressed data keeps the cut files distinct (checked over all 1,797 digits),
    # so truncation never masquerades as a duplicate.
    return png[: start + 8 + length // 2]


def _write(path: Path, data: bytes) -> None:
    write_atomically(path, [data])


def _manifest(rows: list[tuple[str, str]]) -> bytes:
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(MANIFEST_HEADER)
    out.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _other_digit(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    return (labels + rng.integers(1, 10, labels.size)) % 10


def generate_digits(
    landing: Path, drops: int = 2, seed: int = 7, limit: int | None = None
) -> GeneratedDigits:
    """Write <landing>/digits/images/drop_<NN>/<name>.png and
    <landing>/digits/labels/labels_<NN>.csv (``file_name,label``, one per drop).

    Args:
        landing: Root of the landing zone; directories are created as needed.
        drops: Number of drops, numbered from 01; each drop's images are written before its
            manifest, so a manifest never names a file that is not there yet.
        seed: Seed for names, dirt and placement; the same arguments give byte-identical files.
        limit: Use only the first ``limit`` source images (all 1,797 when None).

    Returns:
        The files written with their row and dirt counts and the true labels.

    Raises:
        ValueError: If drops or limit is below 1, or there are fewer images than drops.
    """
    if drops < 1 or (limit is not None and limit < 1):
        raise ValueError("drops and limit must be >= 1")
    source = load_digits()
    n = len(source.target) if limit is None else min(limit, len(source.target))
    if n < drops:
        raise ValueError(f"{n} images cannot fill {drops} drops")
    values = source.images[:n].astype(np.int64)
    pixels = ((values * 255 + 8) // 16).astype(np.uint8)  # round(v * 255 / 16), halves up
    truth = source.target[:n].astype(np.int64)
    rng = np.random.default_rng(seed)

    dirt = {kind: _count(n, frac) for kind, frac in DIGIT_DIRT.items()}
    dirt["truncated"] = max(dirt["truncated"], 1)
    for kind in DIGIT_DIRT:  # on tiny inputs the earlier kinds give way to truncated
        others = sum(v for k, v in dirt.items() if k != kind)
        dirt[kind] = max(0, min(dirt[kind], n - others))
    perm, at = rng.permutation(n), 0
    sets: dict[str, np.ndarray] = {}
    for kind in DIGIT_DIRT:
        sets[kind] = np.sort(perm[at : at + dirt[kind]])
        at += dirt[kind]
    originals = sets["duplicate_images"]
    dups = originals.size
    dirt["label_conflicts"] = _count(dups, CONFLICT_SHARE)

    drop = (np.arange(n) * drops) // n
    labels = [str(v) for v in truth.tolist()]
    missing = sets["missing_labels"].tolist()
    unknown = set(rng.choice(missing, _count(len(missing), UNKNOWN_SHARE), replace=False).tolist())
    for i in missing:
        labels[i] = UNKNOWN_LABEL if i in unknown else ""
    wrong = sets["wrong_labels"]
    for i, v in zip(wrong.tolist(), _other_digit(rng, truth[wrong]).tolist(), strict=True):
        labels[i] = str(v)
    copy_labels = truth[originals].copy()
    conflicts = rng.choice(dups, dirt["label_conflicts"], replace=False)
    copy_labels[conflicts] = _other_digit(rng, copy_labels[conflicts])
    labels += [str(v) for v in copy_labels.tolist()]

    # File k < n is source image k; file n + j is the copy of originals[j].
    source_of = np.concatenate([np.arange(n), originals])
    file_drop = np.concatenate([drop, rng.integers(drop[originals], drops)])
    names = [f"img_{i:05d}.png" for i in rng.permutation(n + dups).tolist()]
    truncated = set(sets["truncated"].tolist())

    base = Path(landing) / "digits"
    image_files: list[Path] = []
    manifest_files: list[Path] = []
    for d in range(drops):
        mine = sorted(np.flatnonzero(file_drop == d).tolist(), key=names.__getitem__)
        folder = base / "images" / f"drop_{d + 1:02d}"
        for k in mine:
            png = _png(pixels[source_of[k]])
            image_files.append(folder / names[k])
            _write(image_files[-1], _truncate(png) if k in truncated else png)
        manifest_files.append(base / "labels" / f"labels_{d + 1:02d}.csv")
        _write(manifest_files[-1], _manifest([(names[k], labels[k]) for k in mine]))
    true_labels = {names[k]: int(truth[s]) for k, s in enumerate(source_of.tolist())}
    return GeneratedDigits(
        image_files, manifest_files, n, n + dups, n + dups, dirt, dict(sorted(true_labels.items()))
    )
