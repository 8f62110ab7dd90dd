"""`demo` and `generate`: the demo landing files, and the whole pipeline on them."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from lakestory.commands import settings_of
from lakestory.console import say

if TYPE_CHECKING:
    from lakestory.commands import Subparsers


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo", parents=[common], help="generate the demo data and run the whole pipeline"
    )
    p.add_argument("--rows", type=int, default=5000, help="demo customers (default 5000)")
    p.set_defaults(func=_demo)
    p = sub.add_parser("generate", parents=[common], help="write the demo landing files")
    p.add_argument("dataset", choices=["customers", "digits"])
    p.add_argument("--rows", type=int, default=5000, help="customers (digits: all 1,797 images)")
    p.add_argument("--drops", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=_generate)


def _demo(args: argparse.Namespace) -> int:
    from lakestory.config import load_dataset
    from lakestory.demo.run import run_demo

    settings = settings_of(args)
    datasets = [load_dataset(n, args.conf_dir, args.env) for n in ("customers", "digits")]
    return run_demo(settings, datasets, args.rows)


def _generate(args: argparse.Namespace) -> int:
    """`lakestory generate customers|digits`, the one way to write the demo landing files."""
    from lakestory.io.catalog import landing_root

    landing = landing_root(settings_of(args))
    if args.dataset == "digits":
        from lakestory.demo.digits import generate_digits

        digits = generate_digits(landing, drops=args.drops, seed=args.seed)
        say(
            f"wrote {digits.images_written} images and {digits.manifest_rows} label rows "
            f"under {landing / 'digits'}"
        )
        return 0
    from lakestory.demo.generate import generate_customers

    customers = generate_customers(landing, rows=args.rows, drops=args.drops, seed=args.seed)
    say(
        f"wrote {customers.account_rows} account rows, {customers.transaction_rows} "
        f"transactions under {landing}"
    )
    return 0
