"""Distribution backends: they wrap a plain, picklable train function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pyspark.sql import SparkSession


def run_torch_distributor(
    spark: SparkSession,
    train_fn: Callable[[dict[str, Any]], dict[str, Any]],
    spec: dict[str, Any],
    num_processes: int,
) -> dict[str, Any]:
    """Run `train_fn(spec)` on `num_processes` gloo processes; return rank 0's result.

    On a local master the processes are children of the driver (`local_mode=True`); on a
    cluster they run as a barrier stage on the executors.
    """
    from pyspark.ml.torch.distributor import TorchDistributor

    local = (spark.sparkContext.master or "").startswith("local")
    distributor = TorchDistributor(num_processes=num_processes, local_mode=local, use_gpu=False)
    result = distributor.run(train_fn, spec)
    if not isinstance(result, dict) or "state_dict" not in result:
        raise RuntimeError("distributed training returned no model from rank 0")
    return result


def run_backend(
    spark: SparkSession,
    backend: str,
    train_fn: Callable[[dict[str, Any]], dict[str, Any]],
    spec: dict[str, Any],
    num_processes: int,
) -> dict[str, Any]:
    """Run `train_fn(spec)` with the named backend ("torch_distributor" or "horovod"); return
    rank 0's result. `spec["backend"]` tells `train_fn` which one started it: the train loop
    makes its backend object of it (`lakestory.training.strategy.backend_for`)."""
    spec = {**spec, "backend": backend}
    if backend == "torch_distributor":
        return run_torch_distributor(spark, train_fn, spec, num_processes)
    if backend == "horovod":
        try:
            import horovod.torch  # noqa: F401
        except ImportError as e:
            raise RuntimeError(
                "the horovod backend needs Horovod built for this environment's torch: run "
                "`make horovod` (scripts/build-horovod.sh), or set model.backend: torch_distributor"
            ) from e
        from lakestory.training.horovod import run_horovod

        return run_horovod(spark, train_fn, spec, num_processes)
    raise ValueError(f"unknown training backend {backend!r} (torch_distributor or horovod)")
