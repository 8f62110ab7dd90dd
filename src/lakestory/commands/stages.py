"""The pipeline's commands: one per stage, `reprocess`, `tune` and `run`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from lakestory.commands import dataset_of, settings_of
from lakestory.console import say

if TYPE_CHECKING:
    from lakestory.commands import Subparsers
    from lakestory.pipeline import Context

STAGE_HELP = {
    "ingest": "land new files of a dataset in its bronze tables",
    "refine": "cast, check, de-duplicate and pseudonymise bronze into silver + quarantine",
    "features": "build gold features: a seeded split per key and transforms fitted on train",
    "train": "train the model (TorchDistributor or Horovod), track it, register a candidate",
    "convert": "export the candidate to ONNX and int8 (two ways); a gate picks the champion",
    "score": "score with the champion (ONNX Runtime in Spark) into gold.<dataset>_predictions",
}

TUNE_HELP = (
    "search the model settings declared in the dataset's tune section (Optuna TPE, each trial a "
    "nested MLflow run); train the best again and register it as the candidate"
)

FULL_REFRESH_HELP = (
    "refine all of bronze again (replaces silver and quarantine), not only the rows no run has "
    "refined"
)

REPROCESS_HELP = (
    "run quarantined rows through the current rules again; move those that pass to silver"
)


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    for stage, text in STAGE_HELP.items():
        p = sub.add_parser(stage, parents=[common], help=text, description=text)
        p.add_argument("dataset")
        if stage == "refine":
            p.add_argument("--full-refresh", action="store_true", help=FULL_REFRESH_HELP)
        p.set_defaults(func=_stage)
    text = REPROCESS_HELP
    p = sub.add_parser("reprocess", parents=[common], help=text, description=text)
    p.add_argument("dataset")
    p.set_defaults(func=_reprocess)
    text = TUNE_HELP
    p = sub.add_parser("tune", parents=[common], help=text, description=text)
    p.add_argument("dataset")
    p.set_defaults(func=_tune)
    p = sub.add_parser("run", parents=[common], help="run every stage that has new input")
    p.add_argument("dataset")
    p.set_defaults(func=_run)


def _context(args: argparse.Namespace) -> Context:
    """The settings, then the dataset (a bad name fails here), then Spark."""
    from lakestory import session
    from lakestory.pipeline import Context

    settings = settings_of(args)
    dataset = dataset_of(args)
    return Context(session.build(settings), settings, dataset, getattr(args, "full_refresh", False))


def _stage(args: argparse.Namespace) -> int:
    from lakestory.pipeline import run_stages

    run_stages(_context(args), (args.command,))
    return 0


def _run(args: argparse.Namespace) -> int:
    from lakestory.pipeline import STAGES, run_stages

    run_stages(_context(args), STAGES)
    return 0


def _reprocess(args: argparse.Namespace) -> int:
    from lakestory.pipeline import reprocess

    say(reprocess(_context(args)))
    return 0


def _tune(args: argparse.Namespace) -> int:
    from lakestory.pipeline import tune

    say(tune(_context(args)))
    return 0
