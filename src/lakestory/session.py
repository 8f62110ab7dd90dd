"""The only place a SparkSession is built: Delta, a persistent metastore, local or cluster."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from delta import configure_spark_with_delta_pip
from pyspark.sql import SparkSession

from lakestory.config import Settings


def spark_conf(settings: Settings) -> dict[str, str]:
    """Every Spark setting lakestory needs, as `--conf` pairs usable by spark-sql/spark-submit.

    The embedded Derby metastore lives under the warehouse root so that tables registered by
    one process are seen by any later one (`lakestory sql`, `spark-sql`). On a cluster, point
    `spark.hadoop.javax.jdo.option.ConnectionURL` at an external metastore instead.
    """
    root = settings.root
    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(root / "spark-warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={root / 'metastore_db'};create=true"
        ),
        "spark.hadoop.datanucleus.schema.autoCreateAll": "true",
        "spark.hadoop.hive.metastore.schema.verification": "false",
        # Derby writes derby.log into the working directory unless told otherwise.
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={root}",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # No per-file min/max statistics for a new table (bronze names the columns it wants):
        # they copy values into the transaction log, where `lakestory forget` cannot reach.
        "spark.databricks.delta.properties.defaults.dataSkippingNumIndexedCols": "0",
    }
    conf.update(settings.spark.conf)
    return conf


def build(settings: Settings) -> SparkSession:
    """Return the session for `settings`, creating it (and the warehouse root) if needed.

    Under spark-submit the JVM already exists, so `spark.jars.packages` must be given as
    `--packages`; locally the Delta jars are resolved from Maven Central into ~/.ivy2.
    """
    settings.root.mkdir(parents=True, exist_ok=True)
    # PySpark starts its Python workers with $PYSPARK_PYTHON, else the first `python3` on PATH,
    # which need not be the environment lakestory is installed in. Default it to this one.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(settings.spark.master).appName(settings.spark.app_name)
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    builder = builder.enableHiveSupport()
    spark = configure_spark_with_delta_pip(builder).getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


@contextmanager
def analysis_errors_unlogged() -> Iterator[None]:
    """PySpark logs every analysis error it raises, Java stack and all (its logger
    `SQLQueryContextLogger`), before the exception reaches its caller; inside this block the
    caller, which answers the error itself, is the only one to speak of it."""
    logger = logging.getLogger("SQLQueryContextLogger")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
