"""`ops.stage_runs`: what each stage consumed and produced, so unchanged stages can be skipped."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.config import Settings
from lakestory.io.catalog import STAGE_RUNS
from lakestory.io.local import local_frame
from lakestory.io.shell import Shell
from lakestory.io.tables import exists

SCHEMA = (
    "run_id string, dataset string, stage string, inputs string, outputs string, "
    "finished_at timestamp"
)


@dataclass(frozen=True)
class StageRun:
    """One completed run of a stage. `inputs` decide whether a rerun has anything to do."""

    dataset: str
    stage: str
    inputs: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def last_run(spark: SparkSession, dataset: str, stage: str) -> StageRun | None:
    if not exists(spark, STAGE_RUNS):
        return None
    row = (
        spark.read.table(STAGE_RUNS.qualified)
        .where((F.col("dataset") == dataset) & (F.col("stage") == stage))
        .orderBy(F.col("finished_at").desc())
        .first()
    )
    if row is None:
        return None
    return StageRun(
        dataset=row["dataset"],
        stage=row["stage"],
        inputs=json.loads(row["inputs"]),
        outputs=json.loads(row["outputs"]),
        run_id=row["run_id"],
    )


def record_run(spark: SparkSession, settings: Settings, run: StageRun) -> None:
    row = (
        run.run_id,
        run.dataset,
        run.stage,
        json.dumps(run.inputs, sort_keys=True),
        json.dumps(run.outputs, sort_keys=True),
        datetime.now(timezone.utc).replace(tzinfo=None),
    )
    Shell(spark, settings).append(local_frame(spark, [row], SCHEMA), STAGE_RUNS)
