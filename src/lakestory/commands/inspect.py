"""Commands that look at the warehouse: `sql`, `summary`, `quarantine`, `status`, `profile`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from lakestory import console
from lakestory.commands import dataset_of, settings_of
from lakestory.console import err, say

if TYPE_CHECKING:
    from lakestory.commands import Subparsers


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("sql", parents=[common], help="run a SQL query on the warehouse")
    p.add_argument("query")
    p.add_argument(
        "--role",
        help="run the query as this role of the settings: refused if it reads a table the role "
        "may not, or is not a query",
    )
    p.add_argument("--limit", type=int, default=50, help="rows to print (default 50)")
    p.set_defaults(func=_sql)
    p = sub.add_parser("summary", parents=[common], help="tables, model and artifacts")
    p.add_argument("dataset")
    p.set_defaults(func=_summary)
    p = sub.add_parser(
        "quarantine", parents=[common], help="rows in quarantine by source and failed rule"
    )
    p.add_argument("dataset")
    p.set_defaults(func=_quarantine)
    p = sub.add_parser(
        "status", parents=[common], help="latest ingestion runs and files waiting in landing"
    )
    p.add_argument("dataset", nargs="?", help="one dataset (default: every dataset in conf/)")
    p.set_defaults(func=_status)
    p = sub.add_parser(
        "profile",
        parents=[common],
        help="profile a table into <root>/reports/<table>/<version>.html and .json",
    )
    p.add_argument("table", help="a table such as silver.customers_accounts")
    p.add_argument(
        "--dataset", help="the dataset config to read (default: the one whose source it is)"
    )
    p.set_defaults(func=_profile)


def _sql(args: argparse.Namespace) -> int:
    from pyspark.errors import AnalysisException

    from lakestory import session

    settings = settings_of(args)
    spark = session.build(settings)
    try:
        with session.analysis_errors_unlogged():
            if args.role:
                from lakestory.access import query_as

                df = query_as(spark, settings, args.role, args.query)
            else:
                df = spark.sql(args.query)
    except AnalysisException as exc:  # a parse error too: what is wrong with the query
        err(f"lakestory: {query_error(exc)}")
        return 2
    with console.to_terminal():  # the table Spark draws is the answer
        df.show(args.limit, truncate=False)
    return 0


def query_error(exc: Exception) -> str:
    """Spark's own words on a query it cannot run: its first line (`[UNRESOLVED_COLUMN...]
    ... Did you mean one of the following? [...]`), without the plan that follows; a parse
    error keeps the query with its caret under the place."""
    text = str(exc).strip()
    if "== SQL" in text:
        return text
    return text.splitlines()[0] if text else type(exc).__name__


def _summary(args: argparse.Namespace) -> int:
    from lakestory import session
    from lakestory.pipeline import Context
    from lakestory.summary import summary

    settings = settings_of(args)
    dataset = dataset_of(args)
    say(summary(Context(session.build(settings), settings, dataset)))
    return 0


def _quarantine(args: argparse.Namespace) -> int:
    from lakestory import session
    from lakestory.io import Catalog
    from lakestory.quality.quarantine import by_reason, render

    settings = settings_of(args)
    catalog = Catalog(dataset_of(args), settings)
    say(render(catalog, by_reason(session.build(settings), catalog)))
    return 0


def _status(args: argparse.Namespace) -> int:
    from lakestory import session
    from lakestory.config import dataset_names, load_dataset
    from lakestory.status import status

    settings = settings_of(args)
    names = [args.dataset] if args.dataset else dataset_names(args.conf_dir)
    datasets = [load_dataset(n, args.conf_dir, args.env) for n in names]  # before Spark starts
    say(status(session.build(settings), settings, datasets))
    return 0


def _profile(args: argparse.Namespace) -> int:
    """`lakestory profile <table> [--dataset NAME]`; a bad name fails before Spark starts."""
    from lakestory import session
    from lakestory.config import dataset_names, load_dataset
    from lakestory.profiling import ProfileError, parse_table, profile_table

    settings = settings_of(args)
    try:
        table = parse_table(args.table)
    except ValueError as exc:
        err(f"lakestory: {exc}")
        return 2
    names = [args.dataset] if args.dataset else dataset_names(args.conf_dir)
    datasets = [load_dataset(n, args.conf_dir, args.env) for n in names]
    try:
        report = profile_table(session.build(settings), settings, table, datasets)
    except ProfileError as exc:
        err(f"lakestory: {exc}")
        return 2
    say(report.summary())
    return 0
