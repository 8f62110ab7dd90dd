"""spark-submit entry point of the refine stage.

spark-submit --packages io.delta:delta-spark_4.2_2.13:4.4.0 jobs/refine.py --dataset customers

--full-refresh refines all of bronze again, as `lakestory refine --full-refresh` does.
"""

import sys

from lakestory.cli import job_main

if __name__ == "__main__":
    raise SystemExit(job_main("refine", sys.argv[1:]))
