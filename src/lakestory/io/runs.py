"""`ops.stage_runs`: what each stage consumed and produced, so unchanged stages can be skipped;
and the marker a run keeps until it has recorded itself there, so that a run killed before that
is resumed, not lost."""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lakestory.config import Settings
from lakestory.io.catalog import STAGE_RUNS, Catalog
from lakestory.io.commits import remove
from lakestory.io.files import read_text, write_text
from lakestory.io.local import local_frame
from lakestory.io.shell import Shell
from lakestory.io.tables import exists

log = logging.getLogger("lakestory")

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


@dataclass(frozen=True)
class Underway:
    """A run of a stage between its start and its row in `ops.stage_runs`.

    The run keeps a marker (`Catalog.stage_marker`) with its id and inputs until it has
    recorded itself. A run with the same inputs that finds the marker of one killed before
    that point resumes it: it takes the killed run's id, so that what both wrote under the id
    (refine's rows of `ops.quality_metrics`, one per batch; the model version train or
    convert registered) counts as one run, and the plan the killed run kept (`planned`), so
    that it does the same work again, which the writes skip where the killed run had done it.
    A run with other inputs (new data, a changed config) starts afresh: what the killed run
    wrote stays, each write exactly once, but is not taken as this run's. A stage skipped as
    unchanged leaves a marker where it is; a marker cut while written (a kill in its first
    milliseconds, before the run wrote anything) is one no run left."""

    spark: SparkSession
    marker: str | None  # None: a run that keeps no marker
    run_id: str
    resumed: bool = False
    plan: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def begin(
        cls, spark: SparkSession, catalog: Catalog, stage: str, inputs: dict[str, Any]
    ) -> Underway:
        marker = catalog.stage_marker(stage)
        inputs = json.loads(json.dumps(inputs, sort_keys=True))  # as the marker keeps them
        kept = _marker(read_text(spark, marker))
        if kept is not None and kept.get("inputs") == inputs:
            log.info("%s: resuming the run that stopped before recording itself", stage)
            return cls(spark, marker, kept["run_id"], True, kept.get("plan") or {}, inputs)
        run = cls(spark, marker, uuid.uuid4().hex, inputs=inputs)
        run._keep({})
        return run

    def planned(self, plan: dict[str, Any]) -> dict[str, Any]:
        """The plan the run this one resumes kept, if it kept one; else `plan`, kept (before
        the run writes anything it decides) for a run that resumes this one."""
        if self.resumed and self.plan:
            return self.plan
        self._keep(plan)
        return plan

    def end(self) -> None:
        """The run has recorded itself: nothing is left to resume."""
        if self.marker is not None:
            remove(self.spark, self.marker)

    def _keep(self, plan: dict[str, Any]) -> None:
        if self.marker is not None:
            kept = {"run_id": self.run_id, "inputs": self.inputs, "plan": plan}
            write_text(self.spark, self.marker, json.dumps(kept))


def _marker(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        kept = json.loads(text)
    except ValueError:
        return None
    return kept if isinstance(kept, dict) and isinstance(kept.get("run_id"), str) else None
