"""Refine against a bare read and Delta write of the same bronze rows.

Generates a customers drop of --rows accounts (CSV, with the demo's dirt: duplicates, missing
fields, malformed rows, bad numbers, invalid labels, outliers) in a temporary warehouse and
ingests it into bronze once, untimed. Then, in one Spark session, alternating the two sides
--repeat times after a warm-up of each:

- bare: `spark.read.table(bronze)` appended to a new Delta table;
- refine: `lakestory.operations.refine.refine_source` with `full_refresh` (a new checkpoint:
  every bronze row, in one micro-batch) into an empty silver and quarantine: the stream from
  bronze, typed casts, outlier fences, every built-in rule and the dataset's expectations in
  one pass, the accounts, exact and key de-duplication, pseudonymisation (keyed tokens,
  artificial ids minted in and looked up from the vault, dropped and generalised columns),
  the silver write, the quarantine write and the `ops.quality_metrics` row, each commit with
  its transaction id. The vault is kept between runs, as a refresh finds most people known;
  one more run, from an empty vault, mints every id (`refine_new_ids_s`).

The best time of each side is taken; their ratio is the figure (target <= 2.0, on at least 1M
rows). The ratio of the two sides' median times is printed beside it. Refine pays a few
seconds per run whatever its size (the stream's start, the fences' two aggregates, the
commits and the metrics row) to the bare write's half second, so the ratio falls as the batch
grows. Measured on 2 cores (this shared machine; the same code moved by up to 15% from hour
to hour):

- 4M rows (`--rows 4000000`, 4,122,000 bronze rows with the dirt): 1.71 (`--repeat 2`),
  1.82 (`--repeat 3`; medians 1.90) and, once the token key reached the rows as data rather
  than as literals of the plan, 1.95 (medians 1.92; refine's best time as before, 48.2 s
  against 48.7 s, the bare side's 2 s faster): the target met;
- 2M rows: 1.95, 2.11 and 2.2;
- 1M rows: 2.83, then 2.67 once refine read each batch from its bronze files
  (`lakestory.io.commits.rescanned`); then 2.2 to 2.57 (`--repeat 2` and `3`) with the
  rules as bit masks, the counts of the rules taken on failing rows only and one sort for
  de-duplication.

With the vault (issue 5), which adds a pass that finds the batch's new identifiers and a join
of the kept rows with the vault in the silver and the unlabeled passes, and with Delta's
per-file statistics off for new tables (an erasure requirement), which made the bare copy
faster (24.7 s to 15.8 s at 4M):

- 4M rows: 6.15 (medians 6.36) with e-mail tokenised too, then 4.29 (medians 4.21; refine
  67.6 s, bare 15.75 s; from an empty vault 66.7 s, 4.23) with e-mail dropped, the key's
  lookup sharing the ranking's exchange, and no MERGE for a batch of known people;
- 1M rows: 4.71 (refine 26.0 s, bare 5.5 s), before the last of those three changes.

Before the vault, at 1M rows, of a refresh's 18 s: 1.4 s the stream's start, 1.7 s the fences,
7.9 s silver (about what the bare side takes for the whole table), 4.3 s the quarantine pass (a
second scan of every column, raw text included, of which it writes the 2.5% of failing rows),
1.5 s the commits and the metrics row.

With the key's id looked up after the ranking rather than before it (issue 21: the join reuses
the window's exchange and sort) and the vault's anti-join before the distinct, at 1M rows
(`--rows 1000000 --repeat 2`): 5.27 before (refine 48.5 s, bare 9.2 s) and 4.06 after (refine
44.9 s, bare 11.1 s; the bare side itself moved by a fifth between the two runs). Alternating
the two versions in one process three times, refine's best time moved by 1 to 9%. Where the
time went after (`refine_passes_s`): check 4.8 s, mint 6.8, silver 21.4, quarantine 7.3,
record 1.9. Reading and casting every column of the batch costs about 4.6 s a pass here;
caching the cast batch (`MEMORY_AND_DISK`) to read it once took about 30 s to build, against
the 4 s it saved the quarantine pass, so each pass reads bronze's files again instead.

Issue 21's target, <= 2.0 at 1M rows, is out of reach of this design. On 7 December 2026, on
2 cores, `--rows 1000000 --repeat 2` gave 4.69 (refine 25.2 s, bare 5.36 s; passes: check 1.6,
mint 3.6, silver 12.9, quarantine 4.7, record 1.1). The bare side had got faster than in the
figures above (5.4 s against 9 to 11 s), and refine had not. Each part was timed alone in one
process on the same drop, best of two or three (a probe, not kept):
- reading bronze's files: 1.1 s;
- the casts: 0.4 s;
- every rule into the masks: 1.5 s;
- the window that ranks a key's versions, the key's token and the vault's join: 3.7 to 5.5 s
  over writing the same kept rows without them;
- writing about a million silver rows to Delta: 2.8 to 4 s, as the bare side's write does.
So silver's pass alone is 7 to 8 s when timed apart, about 1.4 times the whole bare copy, and
12.5 to 15 s inside a refine run. Add the quarantine pass, which reads, casts and checks every
row again to write 2.5% of them (3.3 to 5 s), the fences (1.6 s) and the vault's anti-join
(3.6 s): these four passes, timed apart, come to 15.5 to 18 s, 2.9 to 3.4 times the bare copy,
before the metrics row and the stream's own commits. To reach 2.0, a whole pass has to go.
Neither way of reading each batch once pays:
- caching the cast batch: 30 s to build (above);
- writing it once as Parquet: that write alone would cost about what the bare copy's own write
  does (4 of its 5.4 s), and silver's window, join and write would still follow.
Reaching 2.0 would take removing two of the four passes, for example:
- quarantine's pass, with its rows taken from silver's scan: one scan writing two tables,
  which Spark's writers do not offer;
- the vault's anti-join, with the ids looked up once for both minting and silver.

Prints one JSON line: {"rows": N, "bare_s": ..., "refine_s": ..., "ratio_vs_bare": ...,
"ratio_of_medians": ..., "rows_per_s": ..., "bare_runs_s": [...], "refine_runs_s": [...],
"refine_passes_s": {pass: seconds}, "refine_new_ids_s": ..., "ratio_new_ids_vs_bare": ...}.

    python bench/refine.py --rows 4000000
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time

from _drop import accounts_drop  # bench/ is on sys.path when a script there runs

from lakestory import session
from lakestory.io import Catalog
from lakestory.operations.ingest import ingest_source
from lakestory.operations.refine import refine_source

KEY = b"bench-refine-key-0123456789abcdef"  # a throwaway key for throwaway data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--files", type=int, default=4, help="files the drop is split into")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with accounts_drop(args.rows, args.files) as (root, settings, dataset):
        spark = session.build(settings)
        bronze = ingest_source(spark, settings, dataset, "accounts").table
        rows = spark.read.table(bronze.qualified).count()
        outputs = [
            Catalog(dataset).silver("accounts"),
            Catalog(dataset).quarantine("accounts"),
        ]

        def bare(i: int) -> float:
            start = time.perf_counter()
            df = spark.read.table(bronze.qualified)
            df.write.format("delta").mode("append").save(str(root / f"bare_{i}"))
            return time.perf_counter() - start

        def refine(i: int, new_ids: bool = False) -> float:
            for table in outputs:  # every run starts from an empty silver and quarantine
                shutil.rmtree(table.path(settings), ignore_errors=True)
            if new_ids:  # and from an empty vault: every identifier is minted an id
                shutil.rmtree(Catalog(dataset).vault().path(settings), ignore_errors=True)
            start = time.perf_counter()
            counts = refine_source(
                spark, settings, dataset, "accounts", KEY, f"bench-{i}", full_refresh=True
            )
            elapsed = time.perf_counter() - start
            assert counts.reconciles and counts.rows_in == rows, counts
            assert counts.silver > 0 and counts.unchanged == 0, counts
            passes.append(counts.seconds)
            return elapsed

        passes: list[dict[str, float]] = []
        bare(-1)
        refine(-1)
        passes.clear()
        bare_times, refine_times = [], []
        for i in range(args.repeat):
            bare_times.append(bare(i))
            refine_times.append(refine(i))
        best_passes = passes[refine_times.index(min(refine_times))]
        new_ids_s = refine(args.repeat, new_ids=True)
        spark.stop()

    bare_s, refine_s = min(bare_times), min(refine_times)
    median_ratio = statistics.median(refine_times) / statistics.median(bare_times)
    print(
        json.dumps(
            {
                "rows": rows,
                "files": args.files,
                "bare_s": round(bare_s, 2),
                "refine_s": round(refine_s, 2),
                "ratio_vs_bare": round(refine_s / bare_s, 2),
                "ratio_of_medians": round(median_ratio, 2),
                "rows_per_s": round(rows / refine_s),
                "bare_runs_s": [round(t, 2) for t in bare_times],
                "refine_runs_s": [round(t, 2) for t in refine_times],
                # where the best refine run's time went, pass by pass (the rest of refine_s
                # is the stream's start and the checkpoint's commits)
                "refine_passes_s": best_passes,
                "refine_new_ids_s": round(new_ids_s, 2),
                "ratio_new_ids_vs_bare": round(new_ids_s / bare_s, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
