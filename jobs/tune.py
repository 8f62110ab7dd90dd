"""spark-submit entry point of the tuning study (`lakestory tune`).

spark-submit --packages io.delta:delta-spark_4.2_2.13:4.4.0 jobs/tune.py --dataset customers
"""

import sys

from lakestory.cli import job_main

if __name__ == "__main__":
    raise SystemExit(job_main("tune", sys.argv[1:]))
