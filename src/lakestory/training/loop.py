"""The train function shipped to every process. It is pickled: it imports torch inside."""

from __future__ import annotations

from typing import Any


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators, and make torch's kernels deterministic:
    two runs with one seed compute the same numbers."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def make_optimizer(spec: dict[str, Any], parameters: Any) -> Any:
    """The configured optimizer: SGD with momentum, Adam or AdamW, with weight decay."""
    import torch

    lr, decay = float(spec["learning_rate"]), float(spec["weight_decay"])
    name = spec.get("optimizer", "adamw")
    if name == "sgd":
        momentum = float(spec.get("momentum", 0.9))
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=decay)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=decay)
    raise ValueError(f"unknown optimizer {name!r}")


def make_schedule(spec: dict[str, Any], optimizer: Any) -> Any:
    """The learning-rate schedule, stepped once an epoch: constant, cosine to zero over the
    epochs, or a step down by `gamma` every `step_size` epochs."""
    import torch

    name = spec.get("schedule", "constant")
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(spec["epochs"]))
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=int(spec.get("step_size", 10)), gamma=float(spec.get("gamma", 0.1))
        )
    if name == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    raise ValueError(f"unknown schedule {name!r}")


class Stopper:
    """Early stopping on a validation metric: `improved` says whether an epoch is the best so
    far, `stop` whether `patience` epochs have passed without one."""

    def __init__(self, rule: dict[str, Any] | None) -> None:
        self.rule = rule
        self.best: float | None = None
        self.since = 0

    def update(self, val_loss: float, val_accuracy: float) -> bool:
        """Record an epoch; True when it is the best so far."""
        if self.rule is None:
            return True  # no rule: the last epoch is the one kept
        higher = self.rule["metric"] == "val_accuracy"
        value = val_accuracy if higher else val_loss
        margin = float(self.rule.get("min_delta", 0.0))
        better = self.best is None or (
            value > self.best + margin if higher else value < self.best - margin
        )
        if better:
            self.best, self.since = value, 0
        else:
            self.since += 1
        return better

    @property
    def stop(self) -> bool:
        return self.rule is not None and self.since >= int(self.rule["patience"])


def step_seed(seed: int, epoch: int, step: int, shard: int) -> int:
    """The seed of one shard's slice of one step: its dropout masks and augmentation are a
    function of these alone, whichever process computes them."""
    import numpy as np

    return int(np.random.SeedSequence([seed, epoch, step, shard]).generate_state(1)[0])


def train_ddp(spec: dict[str, Any]) -> dict[str, Any]:
    """Train the model with DistributedDataParallel on this process's shards of the train split.

    `spec` holds the hyperparameters, the fitted feature params (JSON), the data feed's folder
    (`lakestory.training.feed`), the rows each shard gives to a global batch (`slices`) and the
    steps an epoch. `batch_size` is the global batch. Each step, every shard's slice is a
    micro-batch of its own: forward with dropout (and augmentation) seeded by the seed, epoch,
    step and shard, backward with its loss summed and divided by the global batch, gradients
    accumulated, and averaged over the processes once, at the step's last micro-batch. So the
    gradient of a step is the global batch's mean, computed alike in one process or several.
    Rank 0 evaluates on validation after each epoch, decides early stopping for every rank, and
    returns the state dict of the best epoch, the metrics and the history.
    """
    import contextlib
    import copy
    import io
    import os

    import numpy as np
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    from lakestory.training.feed import read_split
    from lakestory.training.model import build_network

    # Two processes on two cores: one intra-op thread each avoids oversubscription.
    torch.set_num_threads(1)
    seed = int(spec["seed"])
    seed_everything(seed)
    horovod = spec.get("backend") == "horovod"
    if horovod:
        from lakestory.training.horovod import horovod_context, wrap_optimizer

        rank, world = horovod_context()
        distributed = world > 1
    else:
        distributed = "WORLD_SIZE" in os.environ  # set by TorchDistributor
        if distributed:
            dist.init_process_group("gloo")
        rank = dist.get_rank() if distributed else 0
        world = dist.get_world_size() if distributed else 1
    slices = [int(n) for n in spec["slices"]]
    if len(slices) % world:
        raise ValueError(f"{len(slices)} feed shards do not divide among {world} processes")
    mine = [s for s in range(len(slices)) if s % world == rank and slices[s]]
    if not mine:
        raise ValueError(f"rank {rank} has no rows in a global batch of {spec['batch_size']}")

    # this rank's shards of the train split; validation and test for rank 0, which evaluates
    feed = spec["feed"]
    shards = {}
    for s in mine:
        x, y = read_split(feed, "train", s)
        shards[s] = (torch.from_numpy(x), torch.from_numpy(y))
    tensors = {}
    if rank == 0:
        for split in ("validation", "test"):
            x, y = read_split(feed, split)
            tensors[f"x_{split}"], tensors[f"y_{split}"] = torch.from_numpy(x), torch.from_numpy(y)
    steps = int(spec["steps_per_epoch"])
    scale = world / int(spec["batch_size"])  # a summed loss -> this rank's share of the mean

    # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_network(spec)
    classes = int(spec.get("classes") or 1)
    augmentation = spec.get("augmentation")
    if horovod:
        # Horovod averages the gradients in the optimizer's step, after a backward pass per
        # micro-batch; DDP in the backward pass of the last one
        ddp: nn.Module = model
        optimizer = wrap_optimizer(
            make_optimizer(spec, model.parameters()), model, backward_passes=len(mine)
        )
        parallel = None
    else:
        parallel = DistributedDataParallel(model) if distributed else None
        ddp = parallel or model
        optimizer = make_optimizer(spec, ddp.parameters())
    schedule = make_schedule(spec, optimizer)
    stopper = Stopper(spec.get("early_stopping"))
    if classes > 1:
        criterion: nn.Module = nn.CrossEntropyLoss(reduction="none")

        def losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return criterion(logits, y.long())

        def hits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return (logits.argmax(1) == y.long()).float()
    else:
        criterion = nn.BCEWithLogitsLoss(reduction="none")

        def losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return criterion(logits.squeeze(1), y)

        def hits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return ((logits.squeeze(1) > 0).float() == y).float()

    def evaluate(split: str) -> tuple[float, float]:
        x, y = tensors[f"x_{split}"], tensors[f"y_{split}"]
        if len(y) == 0:
            return float("nan"), float("nan")
        model.eval()
        with torch.no_grad():
            logits = model(x)
        model.train()
        return float(losses(logits, y).mean()), float(hits(logits, y).mean())

    def augmented(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not augmentation:
            return x
        from lakestory.training.vision import augment

        return augment(
            x,
            int(augmentation["height"]),
            int(augmentation["width"]),
            generator,
            float(augmentation["max_degrees"]),
            float(augmentation["max_shift"]),
        )

    history = []
    best_state, best_epoch = None, -1
    for epoch in range(int(spec["epochs"])):
        # the data order: a function of the seed, the epoch and the shard alone
        orders = {
            s: torch.from_numpy(np.random.default_rng([seed, epoch, s]).permutation(len(y)))
            for s, (_, y) in shards.items()
        }
        total, count = 0.0, 0
        for step in range(steps):
            optimizer.zero_grad()
            for i, s in enumerate(mine):
                size = slices[s]
                rows = orders[s][step * size : (step + 1) * size]
                xb, yb = shards[s][0][rows], shards[s][1][rows]
                drawn = step_seed(seed, epoch, step, s)
                torch.manual_seed(drawn)  # dropout masks
                generator = torch.Generator().manual_seed(drawn + 1)  # augmentation
                last = i == len(mine) - 1
                with parallel.no_sync() if parallel and not last else contextlib.nullcontext():
                    loss = losses(ddp(augmented(xb, generator)), yb)
                    (loss.sum() * scale).backward()
                total += float(loss.detach().sum())
                count += len(yb)
            optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        schedule.step()
        stop = torch.zeros(1)
        if rank == 0:
            val_loss, val_accuracy = evaluate("validation")
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": total / max(count, 1),
                    "val_loss": val_loss,
                    "val_accuracy": val_accuracy,
                    "learning_rate": lr,
                }
            )
            if stopper.update(val_loss, val_accuracy):
                best_state, best_epoch = copy.deepcopy(model.state_dict()), epoch
            stop[0] = float(stopper.stop)
        if distributed:  # every rank stops together, or the others would wait on it forever
            if horovod:
                import horovod.torch as hvd

                stop = hvd.broadcast(stop, root_rank=0, name=f"stop.{epoch}")
            else:
                dist.broadcast(stop, src=0)
        if stop[0]:
            break

    result: dict[str, Any] = {"world_size": world}
    if rank == 0:
        if best_state is not None:
            model.load_state_dict(best_state)
        metrics: dict[str, float] = {
            "best_epoch": float(best_epoch),
            "epochs_run": float(len(history)),
        }
        # the whole train split, once, for its final figures (a process holds its shards only)
        x, y = read_split(feed, "train")
        tensors["x_train"], tensors["y_train"] = torch.from_numpy(x), torch.from_numpy(y)
        for split in ("train", "validation", "test"):
            metrics[f"{split}_loss"], metrics[f"{split}_accuracy"] = evaluate(split)
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        result.update(state_dict=buffer.getvalue(), metrics=metrics, history=history)
    if distributed and not horovod:  # horovod.spark.run returns every rank's result in order
        # TorchDistributor's local mode has every process write its return value to the same
        # file, so the last one to finish wins: every rank returns rank 0's result.
        box: list[Any] = [result if rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        result = box[0]
        dist.destroy_process_group()
    return result
