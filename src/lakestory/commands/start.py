"""Commands that start a dataset of one's own: `init` (a starter config from a file) and
`check` (a config against a sample of its landing files, before any stage runs)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from lakestory.commands import dataset_of, settings_of
from lakestory.console import say

if TYPE_CHECKING:
    from lakestory.commands import Subparsers


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "init",
        parents=[common],
        help="write a starter conf/datasets/NAME.yaml from a sample of a CSV, JSON-lines or "
        "Parquet file, and copy the file into the landing folder it names",
    )
    p.add_argument("dataset", help="the new dataset's name, a lower-case identifier")
    p.add_argument("--from", dest="file", type=Path, required=True, help="the file to start from")
    p.add_argument(
        "--label",
        help="the column the model learns; its values found become the classes (without it, "
        "a guess is left commented out, with the features and the model)",
    )
    p.add_argument("--force", action="store_true", help="write over an existing config")
    p.set_defaults(func=_init)
    p = sub.add_parser(
        "check",
        parents=[common],
        help="check a dataset's config against a sample of its landing files, in seconds, "
        "without running the stages: exits 1 with what would stop a run",
    )
    p.add_argument("dataset")
    p.add_argument(
        "--rows", type=int, default=10_000, help="rows sampled per source (default 10,000)"
    )
    p.set_defaults(func=_check)


def _init(args: argparse.Namespace) -> int:
    from lakestory.config import create_key_file, default_conf_dir, load_dataset
    from lakestory.operations.starter import init_dataset

    settings = settings_of(args)
    conf_dir = args.conf_dir or default_conf_dir()
    started = init_dataset(settings, conf_dir, args.dataset, args.file, args.label, args.force)
    load_dataset(args.dataset, conf_dir, args.env)  # what init writes, lakestory reads
    say(f"wrote {started.config}: {started.summary}")
    say(f"copied {args.file} to {started.landed}")
    if create_key_file(settings.privacy.key_file):
        say(
            f"created a local token key in {settings.privacy.key_file} (mode 0600); "
            f"set {settings.privacy.key_env} to use another"
        )
    say(f"next: lakestory check {args.dataset}, then lakestory run {args.dataset}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from lakestory import session
    from lakestory.config import dataset_path
    from lakestory.operations.check import check_dataset

    settings = settings_of(args)
    dataset = dataset_of(args)  # a config that does not load stops here, before Spark
    spark = session.build(settings)
    config = dataset_path(args.dataset, args.conf_dir)
    forecast = check_dataset(spark, settings, dataset, config, args.rows)
    say(forecast)
    return 0 if forecast.ok else 1
