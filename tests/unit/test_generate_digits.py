from __future__ import annotations

import csv
import filecmp
import hashlib
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from lakestory.cli import main
from lakestory.demo.digits import MANIFEST_HEADER, UNKNOWN_LABEL, generate_digits
from tests.conftest import CONF


def _manifest_rows(paths: list[Path]) -> list[tuple[Path, str, str]]:
    """(manifest, file_name, label) for every data line, checking header and line endings."""
    rows = []
    for path in paths:
        raw = path.read_bytes()
        assert b"\r" not in raw and raw.endswith(b"\n")
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            assert next(reader) == MANIFEST_HEADER
            rows += [(path, name, label) for name, label in reader]
    return rows


def _decodes(path: Path) -> Image.Image | None:
    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except OSError:
        return None


def _tree(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_files_lie_where_documented_and_manifests_name_them(tmp_path: Path) -> None:
    g = generate_digits(tmp_path, drops=3, seed=3, limit=100)
    base = tmp_path / "digits"
    assert g.manifest_files == [base / "labels" / f"labels_{d:02d}.csv" for d in (1, 2, 3)]
    drops = {base / "images" / f"drop_{d:02d}" for d in (1, 2, 3)}
    assert {p.parent for p in g.image_files} == drops
    on_disk = [p for p in base.rglob("*") if p.is_file()]
    assert sorted(on_disk) == sorted(g.image_files + g.manifest_files)  # no temp files left
    assert not [p for p in on_disk if p.name.startswith((".", "_"))]
    rows = _manifest_rows(g.manifest_files)
    names = [name for _, name, _ in rows]
    assert len(names) == len(set(names)) == g.manifest_rows == g.images_written == 102
    assert g.images == 100 and len(g.image_files) == g.images_written
    for manifest, name, _ in rows:
        drop = manifest.stem.removeprefix("labels_")
        assert (base / "images" / f"drop_{drop}" / name).is_file()
    assert set(names) == set(g.true_labels) == {p.name for p in g.image_files}


def test_same_seed_gives_byte_identical_files_and_rerun_leaves_them_alone(
    tmp_path: Path,
) -> None:
    first = generate_digits(tmp_path / "a", seed=11, limit=100)
    mtimes = {p: p.stat().st_mtime_ns for p in first.image_files + first.manifest_files}
    again = generate_digits(tmp_path / "a", seed=11, limit=100)
    other = generate_digits(tmp_path / "b", seed=11, limit=100)
    assert {p: p.stat().st_mtime_ns for p in again.image_files + again.manifest_files} == mtimes
    assert other.true_labels == first.true_labels and other.dirt == first.dirt
    tree = _tree(tmp_path / "a")
    assert tree == _tree(tmp_path / "b") and len(tree) == 102 + 2
    match, mismatch, errors = filecmp.cmpfiles(
        tmp_path / "a", tmp_path / "b", [str(p) for p in tree], shallow=False
    )
    assert (len(match), mismatch, errors) == (len(tree), [], [])
    changed = generate_digits(tmp_path / "c", seed=12, limit=100)
    assert changed.true_labels != first.true_labels  # the seed drives the names


@pytest.mark.parametrize(("limit", "drops"), [(None, 2), (100, 1)])
def test_dirt_counts_match_what_is_on_disk(tmp_path: Path, limit: int | None, drops: int) -> None:
    g = generate_digits(tmp_path, drops=drops, seed=7, limit=limit)
    truth, dirt = g.true_labels, g.dirt
    assert all(dirt[k] > 0 for k in dirt), dirt
    label = {name: lab for _, name, lab in _manifest_rows(g.manifest_files)}

    missing = [n for n, lab in label.items() if lab in ("", UNKNOWN_LABEL)]
    assert len(missing) == dirt["missing_labels"]
    if limit is None:
        assert {label[n] for n in missing} == {"", UNKNOWN_LABEL}
    differing = {n for n, lab in label.items() if n not in missing and int(lab) != truth[n]}
    assert len(differing) == dirt["wrong_labels"] + dirt["label_conflicts"]

    by_hash: dict[str, list[str]] = defaultdict(list)
    for path in g.image_files:
        by_hash[hashlib.sha256(path.read_bytes()).hexdigest()].append(path.name)
    groups = [names for names in by_hash.values() if len(names) > 1]
    assert sum(len(names) for names in groups) == 2 * dirt["duplicate_images"]
    assert len(g.image_files) - len(by_hash) == dirt["duplicate_images"]
    in_groups = {n for names in groups for n in names}
    conflicts = [names for names in groups if len({label[n] for n in names}) > 1]
    assert len(conflicts) == dirt["label_conflicts"]
    # Exactly one of each conflicting pair is off, the rest of the wrong labels lie elsewhere.
    assert len(differing & in_groups) == dirt["label_conflicts"]
    assert len(differing - in_groups) == dirt["wrong_labels"]

    pixels = ((load_digits().images.astype(np.int64) * 255 + 8) // 16).astype(np.uint8)
    digit_of = {p.tobytes(): int(t) for p, t in zip(pixels, load_digits().target, strict=True)}
    broken = []
    for path in g.image_files:
        image = _decodes(path)
        if image is None:
            broken.append(path.name)
            continue
        assert (image.mode, image.size) == ("L", (8, 8))
        assert digit_of[image.tobytes()] == truth[path.name]
    assert len(broken) == dirt["truncated"]
    # Each file carries at most one kind of dirt.
    assert not set(broken) & (set(missing) | differing | in_groups)
    assert not set(missing) & in_groups


def test_small_limit_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    g = generate_digits(tmp_path, limit=100)
    assert time.perf_counter() - start < 5.0
    assert g.images == 100 and g.dirt["truncated"] >= 1


def test_rejects_impossible_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_digits(tmp_path, drops=0)
    with pytest.raises(ValueError):
        generate_digits(tmp_path, limit=0)
    with pytest.raises(ValueError):
        generate_digits(tmp_path, drops=4, limit=3)


def test_the_generate_command_writes_the_landing_and_summarises_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAKESTORY_ROOT", str(tmp_path))
    args = ["generate", "digits", "--drops", "3", "--seed", "1", "--conf-dir", str(CONF)]
    assert main(args) == 0
    images = len(list((tmp_path / "landing" / "digits" / "images").rglob("*.png")))
    assert f"wrote {images} images" in capsys.readouterr().out
    assert len(list((tmp_path / "landing" / "digits" / "labels").glob("labels_*.csv"))) == 3
