"""The Horovod backend: two real processes started by Spark, joined by Gloo, on a tiny model."""

from __future__ import annotations

import io
import sys
from typing import Any

import cloudpickle
import pytest
from pyspark.sql import SparkSession

from lakestory.training.horovod import run_horovod

pytestmark = pytest.mark.slow

SPEC = {"seed": 7, "steps": 5, "lr": 0.1}

# Horovod ships the train function to its processes with cloudpickle. By reference it would name
# this module, which they import only when started in the repository root (tests/ is not
# installed); by value they need nothing but lakestory and torch.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _shard(rank: int) -> tuple[Any, Any]:
    """This rank's training data: different inputs and targets on each rank."""
    import torch

    generator = torch.Generator().manual_seed(100 + rank)
    x = torch.randn(16, 4, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 2.0 * rank
    return x, y


def _weights(model: Any) -> list[float]:
    import torch

    return torch.cat([p.detach().flatten() for p in model.parameters()]).tolist()


def train_linear(spec: dict[str, Any]) -> dict[str, Any]:
    """A few SGD steps of a linear model, each rank seeded differently, on its own shard."""
    import horovod.torch as hvd
    import torch

    from lakestory.training.horovod import horovod_context, wrap_optimizer

    rank, world_size = horovod_context()
    torch.set_num_threads(1)
    # Each rank starts from other weights: the broadcast must make them rank 0's.
    torch.manual_seed(spec["seed"] + rank)
    model = torch.nn.Linear(4, 1)
    initial = _weights(model)
    sgd = torch.optim.SGD(model.parameters(), lr=spec["lr"], momentum=0.9)
    optimizer = wrap_optimizer(sgd, model)
    broadcast = _weights(model)
    x, y = _shard(rank)
    for _ in range(spec["steps"]):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    weights = {"rank": rank, "initial": initial, "broadcast": broadcast, "final": _weights(model)}
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return {
        "rank": rank,
        "world_size": world_size,
        "state_dict": buffer.getvalue(),
        "ranks": hvd.allgather_object(weights),
    }


def train_nothing(spec: dict[str, Any]) -> dict[str, Any]:
    from lakestory.training.horovod import horovod_context

    rank, _ = horovod_context()
    return {"rank": rank}


@pytest.fixture(scope="module")
def result(spark: SparkSession) -> dict[str, Any]:
    return run_horovod(spark, train_linear, SPEC, num_processes=2)


def test_returns_rank_zeros_result_of_two_processes(result: dict[str, Any]) -> None:
    assert result["rank"] == 0
    assert result["world_size"] == 2
    assert [r["rank"] for r in result["ranks"]] == [0, 1]


def test_every_rank_starts_from_rank_zeros_weights(result: dict[str, Any]) -> None:
    rank0, rank1 = result["ranks"]
    assert rank1["initial"] != rank0["initial"]  # seeded differently
    assert rank0["broadcast"] == rank0["initial"]
    assert rank1["broadcast"] == rank0["initial"]


def test_steps_apply_the_gradient_averaged_over_ranks(result: dict[str, Any]) -> None:
    import torch

    rank0, rank1 = result["ranks"]
    assert rank1["final"] == rank0["final"]
    assert rank0["final"] != rank0["initial"]

    # The same steps in one process on both shards: the mean of the two shards' mean losses has
    # the average of their gradients.
    torch.manual_seed(SPEC["seed"])
    expected = torch.nn.Linear(4, 1)
    sgd = torch.optim.SGD(expected.parameters(), lr=SPEC["lr"], momentum=0.9)
    shards = [_shard(0), _shard(1)]
    for _ in range(SPEC["steps"]):
        sgd.zero_grad()
        losses = [torch.nn.functional.mse_loss(expected(x), y) for x, y in shards]
        (sum(losses) / 2).backward()
        sgd.step()

    returned = torch.nn.Linear(4, 1)
    returned.load_state_dict(torch.load(io.BytesIO(result["state_dict"]), weights_only=True))
    torch.testing.assert_close(returned.state_dict(), expected.state_dict())
    torch.testing.assert_close(torch.tensor(rank0["final"]), torch.tensor(_weights(expected)))


def test_a_result_without_a_model_is_an_error(spark: SparkSession) -> None:
    with pytest.raises(RuntimeError, match="no model from rank 0"):
        run_horovod(spark, train_nothing, {}, num_processes=2)


def test_more_processes_than_local_task_slots_is_refused(spark: SparkSession) -> None:
    with pytest.raises(ValueError, match="concurrent Spark tasks"):
        run_horovod(spark, train_nothing, {}, num_processes=100_000)
