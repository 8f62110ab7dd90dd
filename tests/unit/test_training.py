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


def test_a_rank_trains_on_its_shards_that_give_rows() -> None:
    from lakestory.training.loop import own_shards

    slices = [3, 3, 2, 0]  # the last shard gives no rows to a global batch of 8
    assert own_shards(slices, rank=0, world=2) == [0, 2]
    assert own_shards(slices, rank=1, world=2) == [1]
    assert own_shards(slices, rank=0, world=1) == [0, 1, 2]
    with pytest.raises(ValueError, match="4 feed shards do not divide among 3"):
        own_shards(slices, rank=0, world=3)


def test_an_unknown_backend_is_refused() -> None:
    from lakestory.training.strategy import DDPBackend, backend_for

    assert isinstance(backend_for(None), DDPBackend)  # the unit tests' plain process
    with pytest.raises(ValueError, match="unknown training backend 'mpi'"):
        backend_for("mpi")


def _ddp_rank(rank: int, folder: str, port: int) -> None:
    """One of two gloo processes, as torchrun would start them: two micro-batches of a step
    of a linear model, each rank from other weights and on other inputs."""
    import os

    import torch

    from lakestory.training.strategy import DDPBackend

    os.environ.update(
        WORLD_SIZE="2", RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    backend = DDPBackend()
    backend.setup()
    torch.manual_seed(rank)
    model = torch.nn.Linear(2, 1, bias=False)
    initial = model.weight.detach().clone()
    trained, _ = backend.wrap(model, torch.optim.SGD(model.parameters(), lr=0.1), 2)
    x = torch.full((1, 2), float(rank + 1))
    with backend.no_sync(trained):
        trained(x).sum().backward()
    assert model.weight.grad is not None
    first = model.weight.grad.clone()
    trained(x).sum().backward()
    out = {
        "rank": backend.rank,
        "world_size": backend.world_size,
        "initial": initial,
        "wrapped": model.weight.detach().clone(),
        "first": first,
        "last": model.weight.grad.clone(),
        "object": backend.broadcast_object(f"rank {rank}"),
        "result": backend.share_result({"rank": rank}),
    }
    backend.shutdown()
    torch.save(out, Path(folder) / f"{rank}.pt")


def test_ddp_averages_the_gradients_at_the_last_micro_batch_only(tmp_path: Path) -> None:
    """Two real gloo processes: rank 0's weights and objects reach both, and the gradients
    accumulate locally until the backward pass outside `no_sync` averages them."""
    import socket

    import torch
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_rank, args=(str(tmp_path), port), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in range(2)]

    assert [(r["rank"], r["world_size"]) for r in ranks] == [(0, 2), (1, 2)]
    assert not torch.equal(ranks[0]["initial"], ranks[1]["initial"])  # seeded differently
    for r in ranks:
        assert torch.equal(r["wrapped"], ranks[0]["initial"])
        assert r["object"] == "rank 0" and r["result"] == {"rank": 0}
    # d(sum of w.x)/dw = x: (1, 1) on rank 0 and (2, 2) on rank 1, each micro-batch
    assert ranks[0]["first"].tolist() == [[1.0, 1.0]]
    assert ranks[1]["first"].tolist() == [[2.0, 2.0]]
    for r in ranks:  # the mean of 2 x (1, 1) and 2 x (2, 2)
        assert r["last"].tolist() == [[3.0, 3.0]]
