"""Bronze ingestion against a bare Spark CSV read + Delta write of the same files.

Generates a customers drop of --rows accounts (CSV, with the demo's dirt) in a temporary
warehouse, then, in one Spark session and alternating the two sides --repeat times:

- bare: `spark.read.csv(files, header, all-string schema)` appended to a new Delta table;
- ingest: `lakestory.ingestion.ingest_source` on a fresh checkpoint and table: file discovery
  by the streaming file source, header and encoding sniffing, rescue and drift columns,
  `_row_hash`, idempotent commit, per-file read-back counts, and the ops log.

The best time of each side is taken; their ratio is the figure (target <= 1.5, on at least
1M rows). Each run also pays about 1.5 s whatever its size (the streaming query, the per-file
counts, two small ops commits), on top of about 1.25x per row, so the ratio falls as the drop
grows. Measured on 2 cores (the bare side alone moves by 10% from run to run there):

- 2M rows (`--rows 2000000 --repeat 3`): 1.34, 1.34, 1.35 and 1.44 (with `--breakdown`);
- 1M rows (`--repeat 4` or 5): 1.41, 1.46, 1.46, 1.47, 1.51, 1.51, 1.52, 1.53;
- 4M rows (`--rows 4000000 --files 8`): 1.27, before the ops frames became local relations.

Before and after issue 21's restructuring (commit 731812c against 13af3f2), 1M rows,
`--repeat 3`, run in the order before, after, after, before on 7 December 2026:
- before: ratio 1.82 and 1.93 (ingest 7.73 and 7.31 s);
- after: ratio 2.16 and 2.07 (ingest 7.71 and 7.13 s).
Ingest takes the same time in both. The ratios differ only through the bare side, the same
code in both versions: 3.8 to 4.3 s in the runs of the old version and 3.45 to 3.6 s in those
of the new. On that day the bare side ran faster than in the figures above, and so every
ratio was higher.

With --breakdown it also writes, in the same loop, bronze's frame alone with bronze's table
options (`bronze_frame`), so the ingest time splits into a part that grows with the rows
(`per_row_ratio` = bronze_frame / bare) and a fixed part per run (`fixed_s` = ingest -
bronze_frame: discovery, sniffing, the transaction lookup, the per-file counts, the ops log).
It also times, written without any statistics, the steps between a bare write and that frame:
the bare write itself, the corrupt-record column, the file and flag columns, the row-level
decode check and the row hash.

Prints one JSON line: {"rows": N, "bare_s": ..., "ingest_s": ..., "ratio_vs_bare": ...,
"rows_per_s": ..., "per_row_ratio": ..., "fixed_s": ..., "breakdown_s": {...}}.

    python bench/ingest.py --rows 1000000 --breakdown
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable

from _drop import accounts_drop  # bench/ is on sys.path when a script there runs
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from lakestory import session
from lakestory.columns import CORRUPT, DECODE_ERROR, ROW_HASH
from lakestory.ingestion.structured import read_structured
from lakestory.io import checkpoint_path
from lakestory.operations.ingest import STATS_COLUMNS, ingest_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=4, help="files the drop is split into")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--breakdown", action="store_true", help="also time the steps between")
    args = parser.parse_args()

    with accounts_drop(args.rows, args.files) as (root, settings, dataset):
        source = dataset.structured()["accounts"]
        landing = root / "landing" / source.path
        files = sorted(str(p) for p in landing.glob("*.csv"))
        spark = session.build(settings)
        schema = StructType([StructField(c, StringType()) for c in source.schema_])

        def bare(i: int) -> float:
            start = time.perf_counter()
            df = spark.read.options(**source.options).schema(schema).csv(files)
            df.write.format("delta").mode("append").save(str(root / f"bare_{i}"))
            return time.perf_counter() - start

        def ingest(i: int) -> tuple[float, int]:
            ds = dataset.model_copy(update={"name": f"bench{i}" if i >= 0 else "benchwarm"})
            start = time.perf_counter()
            result = ingest_source(spark, settings, ds, "accounts")
            elapsed = time.perf_counter() - start
            shutil.rmtree(checkpoint_path(settings, result.table))
            return elapsed, result.rows

        def write(name: str, df: DataFrame, options: dict[str, str]) -> float:
            start = time.perf_counter()
            writer = df.write.format("delta").mode("append").options(**options)
            writer.save(str(root / f"step_{name}"))
            return time.perf_counter() - start

        def frame() -> DataFrame:
            out = read_structured(spark, source, files, list(source.schema_)).frame
            assert out is not None
            return out.withColumns({"_ingested_at": F.current_timestamp(), "_batch_id": F.lit(0)})

        corrupt_schema = StructType([*schema.fields, StructField(CORRUPT, StringType())])
        steps: dict[str, Callable[[], DataFrame]] = {
            "bare_no_stats": lambda: spark.read.options(**source.options).schema(schema).csv(files),
            "corrupt_record": lambda: (
                spark.read.options(**source.options)
                .option("mode", "PERMISSIVE")
                .option("columnNameOfCorruptRecord", CORRUPT)
                .schema(corrupt_schema)
                .csv(files)
            ),
            "flags_and_file_columns": lambda: frame().drop(ROW_HASH, DECODE_ERROR),
            "decode_check": lambda: frame().drop(ROW_HASH),
            "row_hash": frame,
            "bronze_frame": frame,
        }
        no_stats = {"delta.dataSkippingNumIndexedCols": "0"}
        bronze_options = {"delta.dataSkippingStatsColumns": ",".join(STATS_COLUMNS)}

        # warm-up of both sides: JVM, jars, and the code paths each side runs (the JIT keeps
        # speeding up the longer ingest path for a run or two)
        bare(-1)
        ingest(-1)
        bare_times, ingest_times, rows = [], [], 0
        step_times: dict[str, list[float]] = {name: [] for name in steps}
        for i in range(args.repeat):
            bare_times.append(bare(i))
            if args.breakdown:
                for name, make in steps.items():
                    options = bronze_options if name == "bronze_frame" else no_stats
                    step_times[name].append(write(name, make(), options))
            elapsed, rows = ingest(i)
            ingest_times.append(elapsed)
        spark.stop()

    bare_s, ingest_s = min(bare_times), min(ingest_times)
    split = {}
    if args.breakdown:
        frame_s = min(step_times["bronze_frame"])
        split = {
            "per_row_ratio": round(frame_s / bare_s, 2),
            "fixed_s": round(ingest_s - frame_s, 2),
        }
    print(
        json.dumps(
            {
                "rows": rows,
                "files": args.files,
                "bare_s": round(bare_s, 2),
                "ingest_s": round(ingest_s, 2),
                "ratio_vs_bare": round(ingest_s / bare_s, 2),
                "rows_per_s": round(rows / ingest_s),
                **split,
                "bare_runs_s": [round(t, 2) for t in bare_times],
                "ingest_runs_s": [round(t, 2) for t in ingest_times],
                "breakdown_s": {k: round(min(v), 2) for k, v in step_times.items() if v},
            }
        )
    )


if __name__ == "__main__":
    main()
