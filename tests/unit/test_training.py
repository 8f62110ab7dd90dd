"""The train function in this process (no distribution): seeding, optimizers, schedules and
early stopping, on real torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakestory.features import FeatureParams, Input
from lakestory.training.loop import train_ddp

PARAMS = FeatureParams(tuple(Input(f"x{i}", "numeric", 0.0, 0.0, 1.0) for i in range(4)))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(5)
    arrays: dict[str, np.ndarray] = {}
    for split, n in (("train", 400), ("validation", 100), ("test", 100)):
        x = rng.normal(size=(n, 4)).astype(np.float32)
        noise = rng.normal(scale=0.5, size=n)
        arrays[f"x_{split}"] = x
        arrays[f"y_{split}"] = (x[:, 0] - x[:, 1] + noise > 0).astype(np.float32)
    # the data feed's layout (lakestory.training.feed), one shard
    path = tmp_path_factory.mktemp("train") / "feed"
    for split in ("train", "validation", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        table = pa.table(
            {
                "key": [f"k{i:04d}" for i in range(len(y))],
                "label": y.astype(np.int32),
                "features": x.astype(np.float64).tolist(),
            }
        )
        (path / f"split={split}" / "shard=0").mkdir(parents=True)
        pq.write_table(table, path / f"split={split}" / "shard=0" / "part-0.parquet")
    return path


def _spec(data: Path, **overrides: Any) -> dict[str, Any]:
    spec = {
        "hidden": [8],
        "dropout": 0.1,
        "epochs": 6,
        "batch_size": 32,
        "learning_rate": 0.01,
        "weight_decay": 0.0001,
        "seed": 3,
        "params": PARAMS.to_json(),
        "feed": str(data),
        "steps_per_epoch": 400 // 32,
        "slices": [32],
    }
    return {**spec, **overrides}


@pytest.fixture(autouse=True)
def _single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def test_one_seed_gives_the_same_run_and_another_seed_another(data: Path) -> None:
    a, b = train_ddp(_spec(data)), train_ddp(_spec(data))
    assert a["metrics"] == b["metrics"] and a["history"] == b["history"]
    assert a["state_dict"] == b["state_dict"]
    other = train_ddp(_spec(data, seed=4))
    assert other["history"] != a["history"]
    assert a["metrics"]["test_accuracy"] > 0.75  # it learns


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_every_optimizer_learns(data: Path, optimizer: str) -> None:
    result = train_ddp(_spec(data, optimizer=optimizer, learning_rate=0.05, epochs=4))
    losses = [h["train_loss"] for h in result["history"]]
    assert losses[-1] < losses[0] and result["metrics"]["test_accuracy"] > 0.7


def test_schedules_set_each_epochs_learning_rate(data: Path) -> None:
    step = train_ddp(_spec(data, schedule="step", step_size=2, gamma=0.5, epochs=5))
    assert [h["learning_rate"] for h in step["history"]] == pytest.approx(
        [0.01, 0.01, 0.005, 0.005, 0.0025]
    )
    cosine = [h["learning_rate"] for h in train_ddp(_spec(data, schedule="cosine"))["history"]]
    assert cosine[0] == pytest.approx(0.01) and cosine == sorted(cosine, reverse=True)
    assert cosine[-1] < 0.001


def test_early_stopping_keeps_the_best_epoch(data: Path) -> None:
    # a learning rate far too high: validation stops improving early
    rule = {"metric": "val_loss", "patience": 2, "min_delta": 0.0}
    result = train_ddp(_spec(data, epochs=40, learning_rate=2.0, early_stopping=rule))
    history, metrics = result["history"], result["metrics"]
    assert len(history) < 40 and metrics["epochs_run"] == len(history)
    losses = [h["val_loss"] for h in history]
    best = int(np.argmin(losses))
    assert metrics["best_epoch"] == best and len(history) == best + 1 + 2
    assert metrics["validation_loss"] == pytest.approx(losses[best])  # the best model is kept


def _write_feed(path: Path, arrays: dict[str, tuple[np.ndarray, np.ndarray]], shards: int) -> None:
    """The data feed's layout (lakestory.training.feed): train in `shards` shards."""
    for split, (x, y) in arrays.items():
        parts = range(shards) if split == "train" else range(1)
        for shard in parts:
            rows = np.arange(len(y))[shard::shards] if split == "train" else np.arange(len(y))
            table = pa.table(
                {
                    "key": [f"k{i:04d}" for i in rows],
                    "label": y[rows].astype(np.int32),
                    "features": x[rows].astype(np.float64).tolist(),
                }
            )
            folder = path / f"split={split}" / f"shard={shard}"
            folder.mkdir(parents=True)
            pq.write_table(table, folder / "part-0.parquet")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8x8 images of three classes: a bright 3x3 square top left, top right or at the bottom,
    on noise; two train shards."""
    rng = np.random.default_rng(9)
    corners = [(0, 0), (0, 5), (5, 2)]
    arrays = {}
    for split, n in (("train", 240), ("validation", 60), ("test", 60)):
        y = np.arange(n) % 3
        x = rng.uniform(0, 60, size=(n, 8, 8))
        for i, label in enumerate(y):
            r, c = corners[label]
            x[i, r : r + 3, c : c + 3] += 180
        arrays[split] = (x.reshape(n, 64), y)
    path = tmp_path_factory.mktemp("images") / "feed"
    _write_feed(path, arrays, shards=2)
    return path


def _image_spec(images: Path, **overrides: Any) -> dict[str, Any]:
    from lakestory.features import ImageParams

    spec = {
        **_spec(images),
        "params": ImageParams(8, 8, 60.0, 70.0, 3).to_json(),
        "classes": 3,
        "channels": [4, 8],
        "hidden": [16],
        "batch_size": 16,
        "slices": [8, 8],
        "steps_per_epoch": 120 // 8,
        "learning_rate": 0.01,
    }
    return {**spec, **overrides}


def test_a_small_cnn_learns_three_classes_of_images(images: Path) -> None:
    result = train_ddp(_image_spec(images, epochs=5))
    assert result["metrics"]["validation_accuracy"] > 0.9, result["history"]
    assert result["metrics"]["test_accuracy"] > 0.9


def test_augmentation_moves_train_batches_only(images: Path) -> None:
    """With a learning rate of 0 the weights never change: validation sees the same images
    with or without augmentation, train batches do not."""
    frozen = {"learning_rate": 0.0, "weight_decay": 0.0, "epochs": 2}
    strong = {"height": 8, "width": 8, "max_degrees": 30.0, "max_shift": 2.0}
    plain = train_ddp(_image_spec(images, **frozen))
    moved = train_ddp(_image_spec(images, **frozen, augmentation=strong))
    again = train_ddp(_image_spec(images, **frozen, augmentation=strong))
    for a, b in zip(plain["history"], moved["history"], strict=True):
        assert a["val_loss"] == b["val_loss"] and a["val_accuracy"] == b["val_accuracy"]
        assert a["train_loss"] != b["train_loss"]
    assert moved["history"] == again["history"]  # seeded: the same shifts and rotations
    assert plain["metrics"]["test_loss"] == moved["metrics"]["test_loss"]
