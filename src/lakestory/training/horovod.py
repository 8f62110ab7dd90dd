"""The Horovod backend: `horovod.spark.run` starts the processes as Spark tasks, Gloo joins them.

Horovod is built from source (`scripts/build-horovod.sh`, run by `make horovod`), so it is
imported inside the functions: this module imports without it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyspark.sql import SparkSession

if TYPE_CHECKING:
    import torch

_LOCAL_MASTER = re.compile(r"local(?:\[(\*|\d+)(?:,\s*\d+)?\])?")


def run_horovod(
    spark: SparkSession,
    train_fn: Callable[[dict[str, Any]], dict[str, Any]],
    spec: dict[str, Any],
    num_processes: int,
    start_timeout: int = 120,
) -> dict[str, Any]:
    """Run `train_fn(spec)` on `num_processes` Horovod processes; return rank 0's result.

    Each process is started by a Spark task of one job, on a local master as on a cluster, and
    all of them must run at once: a master with fewer task slots would leave Horovod waiting.
    `train_fn` calls `horovod_context()` and `wrap_optimizer()` to join the others (the train
    loop's `lakestory.training.strategy.HorovodBackend` does).

    Args:
        spark: The session whose SparkContext runs the tasks.
        train_fn: A picklable function of `spec`; rank 0's result must hold "state_dict".
        spec: The argument of `train_fn`.
        num_processes: How many processes (Spark tasks) to train with.
        start_timeout: Seconds the tasks have to start and register before Horovod gives up.
            Tasks of a local master start at once; on a cluster whose executors are allocated
            on demand, give it more.

    Raises:
        ValueError: A local master has fewer task slots than `num_processes`.
        RuntimeError: Rank 0 returned no "state_dict".
    """
    import horovod.spark

    slots = _local_task_slots(spark.sparkContext.master or "")
    if slots is not None and slots < num_processes:
        raise ValueError(
            f"{num_processes} Horovod processes need as many concurrent Spark tasks; "
            f"the master {spark.sparkContext.master!r} runs at most {slots}"
        )
    # Gloo, never MPI: a Horovod built with MPI would otherwise run `mpirun`, which a Spark
    # executor need not have. Spark tasks on one host get one host hash, so Horovod gives them
    # consecutive local ranks and Gloo connects them over loopback; no other setting is needed
    # under a local master. An explicit start_timeout also keeps Horovod from reading its
    # HOROVOD_SPARK_START_TIMEOUT variable (default 600 s).
    results = horovod.spark.run(
        train_fn,
        args=(spec,),
        num_proc=num_processes,
        start_timeout=start_timeout,
        use_mpi=False,
        use_gloo=True,
    )
    result = results[0]  # horovod.spark.run returns the results in rank order
    if not isinstance(result, dict) or "state_dict" not in result:
        raise RuntimeError("distributed training returned no model from rank 0")
    return result


def horovod_context() -> tuple[int, int]:
    """Join this process to the others of the run; return (rank, world size).

    Called first thing in the train function of `run_horovod`, in every process.
    """
    import horovod.torch as hvd

    hvd.init()
    return hvd.rank(), hvd.size()


def wrap_optimizer(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module, backward_passes: int = 1
) -> torch.optim.Optimizer:
    """Start every process from rank 0's model and optimizer; average gradients from then on.

    Use the returned optimizer instead of `optimizer`: its `step()` averages the gradients of
    all processes before applying them.

    Horovod initialises an optimizer that has no state yet by one `step()` with zero gradients
    before it broadcasts the state. That leaves the parameters unchanged unless the optimizer
    decays weights (`weight_decay` > 0), which then take one step of decay, alike in every
    process; Adam-like optimizers also count that step.

    Args:
        optimizer: A plain torch optimizer over `model`'s parameters.
        model: The model being trained, the same in every process except for its weights.
        backward_passes: Backward passes (micro-batches) a step accumulates before its
            gradients are averaged over the processes.
    """
    import horovod.torch as hvd

    # DistributedOptimizer builds a new optimizer from the param groups, without the state
    # (e.g. one resumed from a checkpoint), so carry the state over, then broadcast it: the
    # broadcast has to reach the optimizer that is used.
    distributed = hvd.DistributedOptimizer(
        optimizer,
        named_parameters=model.named_parameters(),
        backward_passes_per_step=backward_passes,
    )
    distributed.load_state_dict(optimizer.state_dict())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(distributed, root_rank=0)
    return distributed


def _local_task_slots(master: str) -> int | None:
    """How many tasks a local master runs at once; None for any other master.

    For `local[*]` this is the machine's CPU count, which is at least what Spark finds (the JVM
    counts only the CPUs a container allows), so the check never refuses a run that fits.
    """
    match = _LOCAL_MASTER.fullmatch(master.strip())
    if match is None:
        return None
    threads = match.group(1)
    if threads is None:
        return 1
    return (os.cpu_count() or 1) if threads == "*" else int(threads)
