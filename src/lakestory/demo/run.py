"""`lakestory demo`: landing data, a local key, the whole pipeline, a summary."""

from __future__ import annotations

from lakestory.config import Dataset, Settings, create_key_file
from lakestory.console import say


def run_demo(settings: Settings, datasets: list[Dataset], rows: int) -> int:
    """Customers (tabular) and digits (images), each through the whole flow."""
    from lakestory import session
    from lakestory.demo.digits import generate_digits
    from lakestory.demo.generate import generate_customers
    from lakestory.io.catalog import landing_root
    from lakestory.pipeline import STAGES, Context, run_stages
    from lakestory.summary import summary

    if create_key_file(settings.privacy.key_file):
        say(
            f"created a local token key in {settings.privacy.key_file} (mode 0600); "
            f"set {settings.privacy.key_env} to use another"
        )
    root = landing_root(settings)
    landing = generate_customers(root, rows=rows)
    say(
        f"landing: {len(landing.accounts_files)} account drops, "
        f"{len(landing.transactions_files)} transaction drops under {root}"
    )
    digits = generate_digits(root)
    say(f"landing: {digits.images_written} digit images and {digits.manifest_rows} labels")
    spark = session.build(settings)
    for dataset in datasets:
        say(f"\n== {dataset.name}")
        ctx = Context(spark, settings, dataset)
        run_stages(ctx, STAGES)
        say()
        say(summary(ctx))
    return 0
