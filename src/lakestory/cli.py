"""The `lakestory` command.

Each group of subcommands lives in a module of `lakestory.commands` that registers its parsers
and their handlers; `main` parses and calls the handler argparse picked.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from lakestory import console
from lakestory.commands import Handler, demo, inspect, privacy, recovery, stages, start
from lakestory.commands.stages import FULL_REFRESH_HELP, STAGE_HELP, TUNE_HELP
from lakestory.config import ConfigError, MissingSecretError
from lakestory.console import err
from lakestory.errors import AccessDeniedError, ExpectationError, StageError, WrongKeyError

COMMANDS = (
    start,
    stages,
    privacy,
    recovery,
    demo,
    inspect,
)  # in the order `lakestory -h` lists them


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--env", help="config overlay conf/<ENV>/ applied over conf/base/")
    common.add_argument("--conf-dir", type=Path, help="config folder (default: ./conf)")
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show Spark's, Ivy's, MLflow's and torch's output live (by default it goes to the "
        "run's log, <warehouse>/logs/)",
    )

    parser = argparse.ArgumentParser(
        prog="lakestory", description="From landed files to production models on Spark + Delta."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None, quiet: bool | None = None) -> int:
    """Run the command; lakestory's lines on the terminal, the rest in the run's log (see
    `lakestory.console`; `-v` keeps everything on the terminal). A user's mistake is one line
    and exit status 2; a failure the log explains is one line naming the log, and status 1.

    `quiet` (default: whether this is the command line itself, `argv` None) parts the output;
    a caller in the same process (a test, a notebook) keeps its own unless it asks."""
    args = _parser().parse_args(argv)
    if not (argv is None if quiet is None else quiet):
        args.verbose = True
    # Libraries (ONNX Runtime's quantizer among them) log chatty INFO lines on the root logger.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("lakestory").setLevel(logging.INFO)
    handler: Handler = args.func
    try:
        return handler(args)
    except (ConfigError, MissingSecretError, AccessDeniedError, WrongKeyError) as exc:
        err(f"lakestory: {exc}")
        return 2
    except (ExpectationError, StageError) as exc:
        err(f"lakestory: {exc}")
        return 1
    except Exception as exc:
        log = console.log_path()
        if log is None:  # -v, or before the warehouse was known: the traceback as it is
            raise
        logging.getLogger().exception("%s failed", args.command)  # the log's handler alone
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        err(f"lakestory: {args.command} failed: {type(exc).__name__}: {first}")
        err(f"lakestory: the whole story is in {log}")
        return 1


def job_main(stage: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of jobs/<stage>.py under spark-submit: `--dataset NAME [--env E]`."""
    text = TUNE_HELP if stage == "tune" else STAGE_HELP[stage]
    parser = argparse.ArgumentParser(prog=f"jobs/{stage}.py", description=text)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--env")
    parser.add_argument("--conf-dir", type=Path)
    if stage == "refine":
        parser.add_argument("--full-refresh", action="store_true", help=FULL_REFRESH_HELP)
    args = parser.parse_args(argv)
    forwarded = [stage, args.dataset]
    if getattr(args, "full_refresh", False):
        forwarded.append("--full-refresh")
    if args.env:
        forwarded += ["--env", args.env]
    if args.conf_dir:
        forwarded += ["--conf-dir", str(args.conf_dir)]
    return main(forwarded, quiet=True)


if __name__ == "__main__":
    raise SystemExit(main())
