"""The train function shipped to every process. It is pickled: it imports torch inside."""

from __future__ import annotations

from typing import Any


def train_ddp(spec: dict[str, Any]) -> dict[str, Any]:
    """Train the model with DistributedDataParallel on this process's shard of the train split.

    `spec` holds the hyperparameters, the fitted feature params (JSON) and the path of an .npz
    file with x_<split> / y_<split> arrays. Rank 0 returns the state dict, metrics and loss history.
    """
    import io
    import os

    import numpy as np
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from lakestory.features.transforms import FeatureParams
    from lakestory.training.model import build_model

    # Two processes on two cores: one intra-op thread each avoids oversubscription.
    torch.set_num_threads(1)
    seed = int(spec["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed)
    distributed = "WORLD_SIZE" in os.environ
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1

    arrays = np.load(spec["data"])
    tensors = {k: torch.from_numpy(arrays[k]) for k in arrays.files}
    train = TensorDataset(tensors["x_train"], tensors["y_train"])
    sampler: DistributedSampler[tuple[torch.Tensor, ...]] = DistributedSampler(
        train, num_replicas=world, rank=rank, shuffle=True, seed=seed
    )
    loader = DataLoader(train, batch_size=int(spec["batch_size"]), sampler=sampler)

    params = FeatureParams.from_json(spec["params"])
    model = build_model(params, spec["hidden"], float(spec["dropout"]))
    ddp: nn.Module = DistributedDataParallel(model) if distributed else model
    optimizer = torch.optim.AdamW(
        ddp.parameters(), lr=float(spec["learning_rate"]), weight_decay=float(spec["weight_decay"])
    )
    loss_fn = nn.BCEWithLogitsLoss()

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
    for epoch in range(int(spec["epochs"])):
        sampler.set_epoch(epoch)
        total, count = 0.0, 0
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = loss_fn(ddp(xb).squeeze(1), yb)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(yb)
            count += len(yb)
        if rank == 0:
            val_loss, val_accuracy = evaluate("validation")
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": total / max(count, 1),
                    "val_loss": val_loss,
                    "val_accuracy": val_accuracy,
                }
            )

    result: dict[str, Any] = {"world_size": world}
    if rank == 0:
        metrics = {}
        for split in ("train", "validation", "test"):
            loss, accuracy = evaluate(split)
            metrics[f"{split}_loss"], metrics[f"{split}_accuracy"] = loss, accuracy
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        result.update(state_dict=buffer.getvalue(), metrics=metrics, history=history)
    if distributed:
        # TorchDistributor's local mode has every process write its return value to the same
        # file, so the last one to finish wins: every rank returns rank 0's result.
        box: list[Any] = [result if rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        result = box[0]
        dist.destroy_process_group()
    return result
