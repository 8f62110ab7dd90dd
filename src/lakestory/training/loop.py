"""The train function shipped to every process. It is pickled: it imports torch inside."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import torch

    from lakestory.training.strategy import Backend


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
    """Train the model in this process, one of the run's, on its shards of the train split.

    `spec` holds the hyperparameters, the fitted feature params (JSON), the data feed's folder
    (`lakestory.training.feed`), the rows each shard gives to a global batch (`slices`), the
    steps an epoch and the backend that started the processes (`backend`, see
    `lakestory.training.strategy`; none: one plain process). `batch_size` is the global batch.
    Each step, every shard's slice is a micro-batch of its own: forward with dropout (and
    augmentation) seeded by the seed, epoch, step and shard, backward with its loss summed and
    divided by the global batch, gradients accumulated, and averaged over the processes once,
    at the step's last micro-batch. So the gradient of a step is the global batch's mean,
    computed alike in one process or several. Rank 0 evaluates on validation after each epoch,
    decides early stopping for every rank, and returns the state dict of the best epoch, the
    metrics and the history.
    """
    import torch

    from lakestory.training.strategy import backend_for

    # Two processes on two cores: one intra-op thread each avoids oversubscription.
    torch.set_num_threads(1)
    seed_everything(int(spec["seed"]))
    backend = backend_for(spec.get("backend"))
    backend.setup()
    run = prepare(spec, backend)
    history, best_state, best_epoch = fit_epochs(run, backend)
    result: dict[str, Any] = {"world_size": backend.world_size}
    if backend.rank == 0:
        result.update(final_result(run, history, best_state, best_epoch))
    result = backend.share_result(result)
    backend.shutdown()
    return result


def own_shards(slices: list[int], rank: int, world: int) -> list[int]:
    """The shards rank `rank` of `world` trains on: those s with s % world == rank that give
    rows to a global batch, in order (one micro-batch each, a step)."""
    if len(slices) % world:
        raise ValueError(f"{len(slices)} feed shards do not divide among {world} processes")
    return [s for s in range(len(slices)) if s % world == rank and slices[s]]


class Objective:
    """Per-row losses and hits of a classifier: one logit (binary) or one a class."""

    def __init__(self, classes: int) -> None:
        from torch import nn

        self.classes = classes
        self.criterion: nn.Module = (
            nn.CrossEntropyLoss(reduction="none")
            if classes > 1
            else nn.BCEWithLogitsLoss(reduction="none")
        )

    def losses(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.classes > 1:
            return cast("torch.Tensor", self.criterion(logits, y.long()))
        return cast("torch.Tensor", self.criterion(logits.squeeze(1), y))

    def hits(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.classes > 1:
            return (logits.argmax(1) == y.long()).float()
        return ((logits.squeeze(1) > 0).float() == y).float()


@dataclass
class Run:
    """What one process trains with: its shards, the model as the backend wrapped it, the
    optimizer, its schedule, and what the loss and the evaluation need."""

    spec: dict[str, Any]
    mine: list[int]  # this rank's shards: a step's micro-batches, in order
    slices: list[int]  # every shard's rows in a global batch
    shards: dict[int, tuple[torch.Tensor, torch.Tensor]]  # this rank's train (x, y)
    evaluation: dict[str, tuple[torch.Tensor, torch.Tensor]]  # rank 0's (x, y) per split
    model: torch.nn.Module  # the plain module: evaluated and saved
    trained: torch.nn.Module  # the backend's wrapper of it (or itself): trained
    optimizer: torch.optim.Optimizer
    schedule: Any
    stopper: Stopper
    objective: Objective
    scale: float  # a summed loss -> this rank's share of the global batch's mean

    @property
    def seed(self) -> int:
        return int(self.spec["seed"])


def _tensors(xy: tuple[Any, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    return torch.from_numpy(xy[0]), torch.from_numpy(xy[1])


def prepare(spec: dict[str, Any], backend: Backend) -> Run:
    """This rank's shards of the train split (validation and test too for rank 0, which
    evaluates), and the model and optimizer, wrapped by `backend`."""
    from lakestory.training.feed import read_split
    from lakestory.training.model import build_network

    rank, world = backend.rank, backend.world_size
    slices = [int(n) for n in spec["slices"]]
    mine = own_shards(slices, rank, world)
    if not mine:
        raise ValueError(f"rank {rank} has no rows in a global batch of {spec['batch_size']}")
    feed = spec["feed"]
    shards = {s: _tensors(read_split(feed, "train", s)) for s in mine}
    evaluation = {}
    if rank == 0:
        evaluation = {split: _tensors(read_split(feed, split)) for split in ("validation", "test")}
    # the same initial weights on every rank (the backend also broadcasts rank 0's)
    model = build_network(spec)
    trained, optimizer = backend.wrap(
        model, make_optimizer(spec, model.parameters()), micro_batches=len(mine)
    )
    return Run(
        spec=spec,
        mine=mine,
        slices=slices,
        shards=shards,
        evaluation=evaluation,
        model=model,
        trained=trained,
        optimizer=optimizer,
        schedule=make_schedule(spec, optimizer),
        stopper=Stopper(spec.get("early_stopping")),
        objective=Objective(int(spec.get("classes") or 1)),
        scale=world / int(spec["batch_size"]),
    )


def fit_epochs(
    run: Run, backend: Backend
) -> tuple[list[dict[str, float]], dict[str, Any] | None, int]:
    """Train epoch after epoch until the last or rank 0 stops early; return rank 0's history,
    the state dict of the best epoch and its index (None and -1 on other ranks)."""
    import copy

    history: list[dict[str, float]] = []
    best_state, best_epoch = None, -1
    for epoch in range(int(run.spec["epochs"])):
        train_loss = train_epoch(run, backend, epoch)
        lr = run.optimizer.param_groups[0]["lr"]
        run.schedule.step()
        if backend.rank == 0:
            val_loss, val_accuracy = evaluate(run, "validation")
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "val_accuracy": val_accuracy,
                    "learning_rate": lr,
                }
            )
            if run.stopper.update(val_loss, val_accuracy):
                best_state, best_epoch = copy.deepcopy(run.model.state_dict()), epoch
        # rank 0's decision: every rank stops together, or the others would wait on it forever
        if backend.broadcast_object(run.stopper.stop):
            break
    return history, best_state, best_epoch


def train_epoch(run: Run, backend: Backend, epoch: int) -> float:
    """One epoch's steps; return the mean loss of this rank's train rows."""
    import contextlib

    import numpy as np
    import torch

    # the data order: a function of the seed, the epoch and the shard alone
    orders = {
        s: torch.from_numpy(np.random.default_rng([run.seed, epoch, s]).permutation(len(y)))
        for s, (_, y) in run.shards.items()
    }
    total, count = 0.0, 0
    for step in range(int(run.spec["steps_per_epoch"])):
        run.optimizer.zero_grad()
        for i, s in enumerate(run.mine):
            size = run.slices[s]
            rows = orders[s][step * size : (step + 1) * size]
            xb, yb = run.shards[s][0][rows], run.shards[s][1][rows]
            drawn = step_seed(run.seed, epoch, step, s)
            torch.manual_seed(drawn)  # dropout masks
            generator = torch.Generator().manual_seed(drawn + 1)  # augmentation
            # the gradients are averaged over the processes after the last micro-batch only
            last = i == len(run.mine) - 1
            with contextlib.nullcontext() if last else backend.no_sync(run.trained):
                xb = augmented(xb, generator, run.spec.get("augmentation"))
                loss = run.objective.losses(run.trained(xb), yb)
                (loss.sum() * run.scale).backward()
            total += float(loss.detach().sum())
            count += len(yb)
        run.optimizer.step()
    return total / max(count, 1)


def augmented(
    x: torch.Tensor, generator: torch.Generator, augmentation: dict[str, Any] | None
) -> torch.Tensor:
    """`x` rotated and shifted as `augmentation` says, drawn from `generator`; as it is
    without augmentation."""
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


def evaluate(run: Run, split: str) -> tuple[float, float]:
    """The plain model's mean loss and accuracy on `split` (NaN for no rows), in eval mode."""
    import torch

    x, y = run.evaluation[split]
    if len(y) == 0:
        return float("nan"), float("nan")
    run.model.eval()
    with torch.no_grad():
        logits = run.model(x)
    run.model.train()
    return float(run.objective.losses(logits, y).mean()), float(
        run.objective.hits(logits, y).mean()
    )


def final_result(
    run: Run, history: list[dict[str, float]], best_state: dict[str, Any] | None, best_epoch: int
) -> dict[str, Any]:
    """Rank 0's result: the best epoch's state dict (serialised), its figures on every split,
    and the history."""
    import io

    import torch

    from lakestory.training.feed import read_split

    if best_state is not None:
        run.model.load_state_dict(best_state)
    metrics: dict[str, float] = {"best_epoch": float(best_epoch), "epochs_run": float(len(history))}
    # the whole train split, once, for its final figures (a process holds its shards only)
    run.evaluation["train"] = _tensors(read_split(run.spec["feed"], "train"))
    for split in ("train", "validation", "test"):
        metrics[f"{split}_loss"], metrics[f"{split}_accuracy"] = evaluate(run, split)
    buffer = io.BytesIO()
    torch.save(run.model.state_dict(), buffer)
    return {"state_dict": buffer.getvalue(), "metrics": metrics, "history": history}
