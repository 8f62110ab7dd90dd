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


def train_ddp(spec: dict[str, Any]) -> dict[str, Any]:
    """Train the model with DistributedDataParallel on this process's shard of the train split.

    `spec` holds the hyperparameters, the fitted feature params (JSON), the data feed's folder
    (`lakestory.training.feed`) and the steps an epoch. `batch_size` is the global batch,
    shared out over the processes. Rank 0 evaluates on validation after each epoch, decides
    early stopping for every rank, and returns the state dict of the best epoch, the metrics
    and the history.
    """
    import copy
    import io
    import os

    import numpy as np
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    from lakestory.features.transforms import FeatureParams
    from lakestory.training.feed import read_split
    from lakestory.training.model import build_model

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
    if int(spec["batch_size"]) % world:
        raise ValueError(f"batch_size {spec['batch_size']} is not a multiple of {world} processes")

    # this rank's shard of the train split; validation and test for rank 0, which evaluates
    feed = spec["feed"]
    x_train, y_train = read_split(feed, "train", rank)
    tensors = {"x_train": torch.from_numpy(x_train), "y_train": torch.from_numpy(y_train)}
    if rank == 0:
        for split in ("validation", "test"):
            x, y = read_split(feed, split)
            tensors[f"x_{split}"], tensors[f"y_{split}"] = torch.from_numpy(x), torch.from_numpy(y)
    rank_batch = int(spec["batch_size"]) // world
    steps = int(spec["steps_per_epoch"])

    # the same initial weights on every rank (DDP also broadcasts rank 0's), then dropout
    # masks of each rank's own
    model = build_model(
        FeatureParams.from_json(spec["params"]), spec["hidden"], float(spec["dropout"])
    )
    torch.manual_seed(seed + 1 + rank)
    if horovod:
        # Horovod averages the gradients in the optimizer's step; DDP in the backward pass
        ddp: nn.Module = model
        optimizer = wrap_optimizer(make_optimizer(spec, model.parameters()), model)
    else:
        ddp = DistributedDataParallel(model) if distributed else model
        optimizer = make_optimizer(spec, ddp.parameters())
    schedule = make_schedule(spec, optimizer)
    loss_fn = nn.BCEWithLogitsLoss()
    stopper = Stopper(spec.get("early_stopping"))

    def evaluate(split: str) -> tuple[float, float]:
        x, y = tensors[f"x_{split}"], tensors[f"y_{split}"]
        if len(y) == 0:
            return float("nan"), float("nan")
        model.eval()
        with torch.no_grad():
            logits = model(x).squeeze(1)
        model.train()
        loss = float(loss_fn(logits, y))
        accuracy = float(((logits > 0).float() == y).float().mean())
        return loss, accuracy

    history = []
    best_state, best_epoch = None, -1
    for epoch in range(int(spec["epochs"])):
        # the data order: a function of the seed, the epoch and the rank alone
        order = torch.from_numpy(
            np.random.default_rng([seed, epoch, rank]).permutation(len(y_train))
        )
        total, count = 0.0, 0
        for step in range(steps):
            rows = order[step * rank_batch : (step + 1) * rank_batch]
            xb, yb = tensors["x_train"][rows], tensors["y_train"][rows]
            optimizer.zero_grad()
            loss = loss_fn(ddp(xb).squeeze(1), yb)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(yb)
            count += len(yb)
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
        for split in ("train", "validation", "test"):
            loss, accuracy = evaluate(split)
            metrics[f"{split}_loss"], metrics[f"{split}_accuracy"] = loss, accuracy
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
