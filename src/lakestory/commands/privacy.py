"""`forget` and `rotate-key`: the keys and the subjects file are read, and any error in them
reported, before Spark starts."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from lakestory.commands import dataset_of, settings_of
from lakestory.config import ConfigError
from lakestory.console import say

if TYPE_CHECKING:
    from lakestory.commands import Subparsers

FORGET_HELP = (
    "erase the subjects named in a CSV file from every table of a dataset, purge and vacuum "
    "what held them, and keep them out of later refreshes"
)

ROTATE_KEY_HELP = (
    "re-make the dataset's vault tokens under a new key, keeping every artificial id (the "
    "old key is the one in use)"
)


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    text = FORGET_HELP
    p = sub.add_parser("forget", parents=[common], help=text, description=text)
    p.add_argument("dataset")
    p.add_argument(
        "--subjects",
        type=Path,
        required=True,
        help="CSV file whose header names identifier columns the dataset tokenises "
        "(e.g. customer_id or email), one subject a row; identifiers are never taken from the "
        "command line",
    )
    p.set_defaults(func=_forget)
    text = ROTATE_KEY_HELP
    p = sub.add_parser("rotate-key", parents=[common], help=text, description=text)
    p.add_argument("dataset")
    p.add_argument(
        "--new-key-file",
        type=Path,
        required=True,
        help="file with the new key (mode 0600, outside the warehouse, at least 32 bytes)",
    )
    p.set_defaults(func=_rotate_key)


def _forget(args: argparse.Namespace) -> int:
    from lakestory import session
    from lakestory.config import load_token_key
    from lakestory.operations.erasure import forget, read_subjects

    settings = settings_of(args)
    dataset = dataset_of(args)
    key = load_token_key(settings)
    subjects = read_subjects(args.subjects, dataset)
    say(forget(session.build(settings), settings, dataset, subjects, key))
    return 0


def _rotate_key(args: argparse.Namespace) -> int:
    from lakestory import session
    from lakestory.config import load_token_key, read_key_file
    from lakestory.operations.rotation import rotate_key

    settings = settings_of(args)
    dataset = dataset_of(args)
    key = load_token_key(settings)
    new = read_key_file(settings, args.new_key_file)
    if new == key:
        raise ConfigError(f"{args.new_key_file}: holds the key in use; give a new one")
    say(rotate_key(session.build(settings), settings, dataset, key, new))
    return 0
