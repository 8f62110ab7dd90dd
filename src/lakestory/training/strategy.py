"""What the train function asks of the processes it runs in, whichever backend started them.

`train_ddp` runs in every process of a run, started by TorchDistributor or Horovod
(`lakestory.training.backends`). It names the one that started it in `spec["backend"]` and
makes its object here, in the process: `backend_for(name)`, then `setup()`. The model and the
loop know nothing else of distribution. Like the train function, these classes import torch
and Horovod inside their methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

if TYPE_CHECKING:
    import torch
    from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


class Backend(Protocol):
    """The processes of one run, as the train loop sees them."""

    rank: int
    world_size: int

    def setup(self) -> None:
        """Join this process to the others; set `rank` and `world_size`."""

    def wrap(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, micro_batches: int
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """Start from rank 0's weights; return the module to train and the optimizer to step.

        A step accumulates `micro_batches` backward passes, then averages the gradients over
        the processes (the last micro-batch's backward pass or the optimizer's `step()`).
        `model` itself stays the plain module, to evaluate and save.
        """
        ...

    def no_sync(self, module: torch.nn.Module) -> AbstractContextManager[Any]:
        """Around the backward pass of every micro-batch of a step but the last."""
        ...

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's `obj`, in every process. Every process calls it, in the same order."""
        ...

    def share_result(self, result: dict[str, Any]) -> dict[str, Any]:
        """What this process returns, given its own `result`; the driver keeps rank 0's."""
        ...

    def shutdown(self) -> None:
        """Leave the others, after the last collective call."""


class DDPBackend:
    """Processes started by TorchDistributor (torchrun), joined by a gloo process group.

    Without TorchDistributor's `WORLD_SIZE` it is one process and none of this is needed: the
    train function runs as it is, as in the unit tests.
    """

    def __init__(self) -> None:
        self.rank, self.world_size = 0, 1
        self.distributed = False

    def setup(self) -> None:
        import os

        import torch.distributed as dist

        # torchrun's variables: the one place the train function learns who started it
        self.distributed = "WORLD_SIZE" in os.environ
        if self.distributed:
            dist.init_process_group("gloo")
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def wrap(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, micro_batches: int
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        # DistributedDataParallel broadcasts rank 0's weights when built, and averages the
        # gradients in the backward pass of each step's last micro-batch (see `no_sync`). The
        # optimizer holds the very parameters the wrapper trains.
        from torch.nn.parallel import DistributedDataParallel

        if not self.distributed:
            return model, optimizer
        return DistributedDataParallel(model), optimizer

    def no_sync(self, module: torch.nn.Module) -> AbstractContextManager[Any]:
        if not self.distributed:
            return contextlib.nullcontext()
        return cast("DistributedDataParallel", module).no_sync()

    def broadcast_object(self, obj: T) -> T:
        import torch.distributed as dist

        if not self.distributed:
            return obj
        box: list[Any] = [obj]
        dist.broadcast_object_list(box, src=0)
        return cast(T, box[0])

    def share_result(self, result: dict[str, Any]) -> dict[str, Any]:
        # TorchDistributor's local mode has every process write its return value to the same
        # file, so the last one to finish wins: every rank returns rank 0's result.
        return self.broadcast_object(result)

    def shutdown(self) -> None:
        import torch.distributed as dist

        if self.distributed:
            dist.destroy_process_group()


class HorovodBackend:
    """Processes started by `horovod.spark.run`, joined by Horovod over Gloo."""

    def __init__(self) -> None:
        self.rank, self.world_size = 0, 1
        self._broadcasts = 0  # names Horovod's collective calls, the same in every process

    def setup(self) -> None:
        from lakestory.training.horovod import horovod_context

        self.rank, self.world_size = horovod_context()

    def wrap(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, micro_batches: int
    ) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        # Horovod averages the gradients in the optimizer's step, after a backward pass per
        # micro-batch; it trains the plain module.
        from lakestory.training.horovod import wrap_optimizer

        return model, wrap_optimizer(optimizer, model, backward_passes=micro_batches)

    def no_sync(self, module: torch.nn.Module) -> AbstractContextManager[Any]:
        # nothing to hold back: the backward passes only count towards the optimizer's step
        return contextlib.nullcontext()

    def broadcast_object(self, obj: T) -> T:
        import horovod.torch as hvd

        if self.world_size == 1:
            return obj
        self._broadcasts += 1
        return cast(T, hvd.broadcast_object(obj, root_rank=0, name=f"object.{self._broadcasts}"))

    def share_result(self, result: dict[str, Any]) -> dict[str, Any]:
        return result  # horovod.spark.run returns every rank's result, in rank order

    def shutdown(self) -> None:
        pass  # Horovod shuts down with the process (horovod.spark starts one per run)


BACKENDS: dict[str, Callable[[], Backend]] = {
    "torch_distributor": DDPBackend,
    "horovod": HorovodBackend,
}


def backend_for(name: str | None) -> Backend:
    """The backend object of the named backend (`model.backend`); None: TorchDistributor's,
    which runs as one plain process when nothing started it."""
    try:
        return BACKENDS[name or "torch_distributor"]()
    except KeyError:
        raise ValueError(f"unknown training backend {name!r} ({' or '.join(BACKENDS)})") from None
