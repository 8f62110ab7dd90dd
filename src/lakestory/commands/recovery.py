"""`backup` and `restore`: a folder that is no backup is refused before Spark starts."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from lakestory.commands import settings_of
from lakestory.console import err, say

if TYPE_CHECKING:
    from lakestory.commands import Subparsers

BACKUP_HELP = (
    "copy every table at its current version, and the stream checkpoints, into a new folder"
)

RESTORE_HELP = (
    "put a backup's tables back; erasures done since it was taken are applied again, so an "
    "erased subject never returns"
)


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    text = BACKUP_HELP
    p = sub.add_parser("backup", parents=[common], help=text, description=text)
    p.add_argument("--to", type=Path, required=True, help="a new or empty folder")
    p.set_defaults(func=_backup)
    text = RESTORE_HELP
    p = sub.add_parser("restore", parents=[common], help=text, description=text)
    p.add_argument("--from", dest="source", type=Path, required=True, help="a backup folder")
    p.set_defaults(func=_restore)


def _backup(args: argparse.Namespace) -> int:
    from lakestory import session
    from lakestory.io.backup import backup

    settings = settings_of(args)
    try:
        manifest = backup(session.build(settings), settings, args.to)
    except ValueError as exc:
        err(f"lakestory: {exc}")
        return 2
    say(f"backed up {len(manifest.tables)} tables into {args.to}")
    return 0


def _restore(args: argparse.Namespace) -> int:
    from lakestory import session
    from lakestory.config import dataset_names, load_dataset, load_token_key
    from lakestory.io.backup import read_manifest
    from lakestory.operations.recovery import restore_backup

    settings = settings_of(args)
    try:
        read_manifest(args.source)  # before Spark starts
    except ValueError as exc:
        err(f"lakestory: {exc}")
        return 2
    key = load_token_key(settings)
    datasets = [load_dataset(n, args.conf_dir, args.env) for n in dataset_names(args.conf_dir)]
    say(restore_backup(session.build(settings), settings, args.source, datasets, key))
    return 0
