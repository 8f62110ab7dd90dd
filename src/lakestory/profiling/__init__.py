"""Profiles of tables for a person: statistics from Spark aggregates, plots, drift, HTML."""

from lakestory.profiling.profile import (
    ProfileError,
    ProfileReport,
    build_profile,
    profile_table,
    report_folder,
)
from lakestory.profiling.spec import TableSpec, parse_table, resolve

__all__ = [
    "ProfileError",
    "ProfileReport",
    "TableSpec",
    "build_profile",
    "parse_table",
    "profile_table",
    "report_folder",
    "resolve",
]
