"""The `lakestory` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from lakestory.config import ConfigError, Dataset, MissingSecretError, Settings
from lakestory.errors import AccessDeniedError, ExpectationError, WrongKeyError

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


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--env", help="config overlay conf/<ENV>/ applied over conf/base/")
    common.add_argument("--conf-dir", type=Path, help="config folder (default: ./conf)")

    parser = argparse.ArgumentParser(
        prog="lakestory", description="From landed files to production models on Spark + Delta."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage, text in STAGE_HELP.items():
        p = sub.add_parser(stage, parents=[common], help=text, description=text)
        p.add_argument("dataset")
        if stage == "refine":
            p.add_argument("--full-refresh", action="store_true", help=FULL_REFRESH_HELP)
    text = "run quarantined rows through the current rules again; move those that pass to silver"
    p = sub.add_parser("reprocess", parents=[common], help=text, description=text)
    p.add_argument("dataset")
    text = (
        "erase the subjects named in a CSV file from every table of a dataset, purge and vacuum "
        "what held them, and keep them out of later refreshes"
    )
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
    text = (
        "re-make the dataset's vault tokens under a new key, keeping every artificial id (the "
        "old key is the one in use)"
    )
    p = sub.add_parser("rotate-key", parents=[common], help=text, description=text)
    p.add_argument("dataset")
    p.add_argument(
        "--new-key-file",
        type=Path,
        required=True,
        help="file with the new key (mode 0600, outside the warehouse, at least 32 bytes)",
    )
    text = "copy every table at its current version, and the stream checkpoints, into a new folder"
    p = sub.add_parser("backup", parents=[common], help=text, description=text)
    p.add_argument("--to", type=Path, required=True, help="a new or empty folder")
    text = (
        "put a backup's tables back; erasures done since it was taken are applied again, so an "
        "erased subject never returns"
    )
    p = sub.add_parser("restore", parents=[common], help=text, description=text)
    p.add_argument("--from", dest="source", type=Path, required=True, help="a backup folder")
    text = TUNE_HELP
    p = sub.add_parser("tune", parents=[common], help=text, description=text)
    p.add_argument("dataset")
    p = sub.add_parser("run", parents=[common], help="run every stage that has new input")
    p.add_argument("dataset")
    p = sub.add_parser(
        "demo", parents=[common], help="generate the demo data and run the whole pipeline"
    )
    p.add_argument("--rows", type=int, default=5000, help="demo customers (default 5000)")
    p = sub.add_parser("generate", parents=[common], help="write the demo landing files")
    p.add_argument("dataset", choices=["customers", "digits"])
    p.add_argument("--rows", type=int, default=5000, help="customers (digits: all 1,797 images)")
    p.add_argument("--drops", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p = sub.add_parser("sql", parents=[common], help="run a SQL query on the warehouse")
    p.add_argument("query")
    p.add_argument(
        "--role",
        help="run the query as this role of the settings: refused if it reads a table the role "
        "may not, or is not a query",
    )
    p.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")
    p = sub.add_parser("summary", parents=[common], help="tables, model and artifacts")
    p.add_argument("dataset")
    p = sub.add_parser(
        "quarantine", parents=[common], help="rows in quarantine by source and failed rule"
    )
    p.add_argument("dataset")
    p = sub.add_parser(
        "status", parents=[common], help="latest ingestion runs and files waiting in landing"
    )
    p.add_argument("dataset", nargs="?", help="one dataset (default: every dataset in conf/)")
    p = sub.add_parser(
        "profile",
        parents=[common],
        help="profile a table into <root>/reports/<table>/<version>.html and .json",
    )
    p.add_argument("table", help="a table such as silver.customers_accounts")
    p.add_argument(
        "--dataset", help="the dataset config to read (default: the one whose source it is)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # Libraries (ONNX Runtime's quantizer among them) log chatty INFO lines on the root logger.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("lakestory").setLevel(logging.INFO)
    try:
        return _dispatch(args)
    except (ConfigError, MissingSecretError, AccessDeniedError, WrongKeyError) as exc:
        print(f"lakestory: {exc}", file=sys.stderr)
        return 2
    except ExpectationError as exc:
        print(f"lakestory: {exc}", file=sys.stderr)
        return 1


def _dispatch(args: argparse.Namespace) -> int:
    from lakestory.config import load_dataset, load_settings

    settings = load_settings(args.conf_dir, args.env)
    if args.command == "generate" and args.dataset == "digits":
        from lakestory.demo.digits import generate_digits

        digits = generate_digits(settings.root / "landing", drops=args.drops, seed=args.seed)
        print(
            f"wrote {digits.images_written} images and {digits.manifest_rows} label rows "
            f"under {settings.root / 'landing' / 'digits'}"
        )
        return 0
    if args.command == "generate":
        from lakestory.demo.generate import generate_customers

        landing = generate_customers(
            settings.root / "landing", rows=args.rows, drops=args.drops, seed=args.seed
        )
        print(
            f"wrote {landing.account_rows} account rows, {landing.transaction_rows} "
            f"transactions under {settings.root / 'landing'}"
        )
        return 0
    if args.command == "demo":
        from lakestory.demo.run import run_demo

        datasets = [load_dataset(n, args.conf_dir, args.env) for n in ("customers", "digits")]
        return run_demo(settings, datasets, args.rows)

    if args.command == "profile":
        return _profile(args, settings)

    from lakestory import session

    named = getattr(args, "dataset", None)
    dataset = load_dataset(named, args.conf_dir, args.env) if named else None
    if args.command in ("backup", "restore"):
        return _recovery(args, settings)
    if args.command in ("forget", "rotate-key"):
        assert dataset is not None
        return _privacy(args, settings, dataset)
    spark = session.build(settings)
    if args.command == "status":
        from lakestory.config import dataset_names
        from lakestory.status import status

        names = [named] if named else dataset_names(args.conf_dir)
        print(status(spark, settings, [load_dataset(n, args.conf_dir, args.env) for n in names]))
        return 0
    if args.command == "quarantine":
        from lakestory.quality.quarantine import by_reason, render

        assert dataset is not None
        print(render(dataset, by_reason(spark, dataset)))
        return 0
    if args.command == "sql":
        if args.role:
            from lakestory.access import query_as

            df = query_as(spark, settings, args.role, args.query)
        else:
            df = spark.sql(args.query)
        df.show(args.limit, truncate=False)
        return 0

    from lakestory.pipeline import STAGES, Context, run_stages
    from lakestory.summary import summary

    assert dataset is not None
    ctx = Context(spark, settings, dataset, getattr(args, "full_refresh", False))
    if args.command == "summary":
        print(summary(ctx))
    elif args.command == "reprocess":
        from lakestory.pipeline import reprocess

        print(reprocess(ctx))
    elif args.command == "tune":
        from lakestory.pipeline import tune

        print(tune(ctx))
    elif args.command == "run":
        run_stages(ctx, STAGES)
    else:
        run_stages(ctx, (args.command,))
    return 0


def _privacy(args: argparse.Namespace, settings: Settings, dataset: Dataset) -> int:
    """`forget` and `rotate-key`: the keys and the subjects file are read, and any error in
    them reported, before Spark starts."""
    from lakestory import session
    from lakestory.config import load_token_key, read_key_file

    key = load_token_key(settings)
    if args.command == "forget":
        from lakestory.privacy.erasure import forget, read_subjects

        subjects = read_subjects(args.subjects, dataset)
        print(forget(session.build(settings), settings, dataset, subjects, key))
        return 0
    from lakestory.privacy.rotation import rotate_key

    new = read_key_file(settings, args.new_key_file)
    if new == key:
        raise ConfigError(f"{args.new_key_file}: holds the key in use; give a new one")
    print(rotate_key(session.build(settings), settings, dataset, key, new))
    return 0


def _recovery(args: argparse.Namespace, settings: Settings) -> int:
    from lakestory import session
    from lakestory.config import dataset_names, load_dataset, load_token_key
    from lakestory.io.backup import backup, read_manifest
    from lakestory.recovery import restore_backup

    try:
        if args.command == "backup":
            manifest = backup(session.build(settings), settings, args.to)
            print(f"backed up {len(manifest.tables)} tables into {args.to}")
            return 0
        read_manifest(args.source)  # before Spark starts
    except ValueError as exc:
        print(f"lakestory: {exc}", file=sys.stderr)
        return 2
    key = load_token_key(settings)
    datasets = [load_dataset(n, args.conf_dir, args.env) for n in dataset_names(args.conf_dir)]
    print(restore_backup(session.build(settings), settings, args.source, datasets, key))
    return 0


def _profile(args: argparse.Namespace, settings: Settings) -> int:
    """`lakestory profile <table> [--dataset NAME]`; a bad name fails before Spark starts."""
    from lakestory import session
    from lakestory.config import dataset_names, load_dataset
    from lakestory.profiling import ProfileError, parse_table, profile_table

    try:
        table = parse_table(args.table)
    except ValueError as exc:
        print(f"lakestory: {exc}", file=sys.stderr)
        return 2
    names = [args.dataset] if args.dataset else dataset_names(args.conf_dir)
    datasets = [load_dataset(n, args.conf_dir, args.env) for n in names]
    try:
        report = profile_table(session.build(settings), settings, table, datasets)
    except ProfileError as exc:
        print(f"lakestory: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


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
    return main(forwarded)


if __name__ == "__main__":
    raise SystemExit(main())
