"""The subcommands of `lakestory`, one module per group.

Each module's `register(sub, common)` adds its commands' parsers to `sub`, with `common` (the
options every command takes) as their parent, and names each one's handler with
`set_defaults(func=...)`; `lakestory.cli.main` parses and calls `args.func(args)`. A handler
returns the exit status. Handlers import what they use inside, so that `lakestory --help`
stays quick and a bad file or name is reported before Spark starts.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from lakestory import console
from lakestory.config import Dataset, Settings, load_dataset, load_settings
from lakestory.io.catalog import logs_folder

if TYPE_CHECKING:
    from typing import TypeAlias

    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

Handler = Callable[[argparse.Namespace], int]


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings `--conf-dir` and `--env` name. Unless `-v`, everything but lakestory's
    own lines goes from here on to the run's log, `<warehouse>/logs/<time>-<command>.log`."""
    settings = load_settings(args.conf_dir, args.env)
    if not getattr(args, "verbose", True):
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        console.to_log(logs_folder(settings) / f"{stamp}-{args.command}-{os.getpid()}.log")
    return settings


def dataset_of(args: argparse.Namespace) -> Dataset:
    """The dataset the command's `dataset` argument names."""
    return load_dataset(args.dataset, args.conf_dir, args.env)
