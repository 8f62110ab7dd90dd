"""Roles for `lakestory sql --role NAME`: which tables a query may read, decided from the
tables its analysed plan reads, not from its text.

Spark analyses a query into a plan in which every view is expanded into the query that defines
it, every common table expression and subquery is a plan of its own, and every table, whatever
name or path it was reached by, is a relation over files. Each relation is named by where its
files lie under the warehouse root, `<root>/<layer>/<table>`, so `restricted.customers_vault`,
a view over it, a CTE over it and `delta.`<root>/restricted/customers_vault`` are one table.
A relation over files outside the warehouse, or one whose files cannot be told, is refused.

Under a role only queries run: a command (DROP, INSERT, CREATE VIEW, SET, ...) is refused
before anything runs, since its analysis is checked but never executed; so is a query that
calls Java methods by name (`reflect`), which could read the process's environment.

This guards people sharing one warehouse through lakestory against reading what their role
does not need; it is no boundary against anyone who can read the files (see the README).
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from lakestory.config import Settings
from lakestory.config.models import Role
from lakestory.errors import AccessDeniedError

_LOGICAL = "org.apache.spark.sql.catalyst.plans.logical."
# leaves that read no table: a literal row or rows, a range of numbers, a CTE's reference (its
# definition is walked where it is defined)
_TABLELESS = {"OneRowRelation", "LocalRelation", "Range", "CTERelationRef", "EmptyRelation"}


@dataclass(frozen=True)
class Analysed:
    """A parsed query, its analysed plan, and the tables that plan reads."""

    parsed: Any  # the JVM's LogicalPlan, as parsed
    tables: frozenset[str]  # `<layer>.<table>` (none for a command)
    command: str | None  # the command's name, when the statement is one


def _is(spark: SparkSession, obj: Any, class_name: str) -> bool:
    jvm = spark._jvm
    assert jvm is not None
    return bool(jvm.java.lang.Class.forName(class_name).isInstance(obj))


def _seq(seq: Any) -> list[Any]:
    return [seq.apply(i) for i in range(seq.size())]


def _table_of(path: str, root: Path) -> str:
    """`<layer>.<table>` for a path of the warehouse's files; AccessDeniedError for another."""
    local = Path(path.removeprefix("file:")).resolve()
    try:
        parts = local.relative_to(root).parts
    except ValueError:
        raise AccessDeniedError(f"the query reads files outside the warehouse ({path})") from None
    if len(parts) < 2:
        raise AccessDeniedError(f"the query reads {path}, a folder of the warehouse, not a table")
    return f"{parts[0]}.{parts[1]}"


def _relation_paths(spark: SparkSession, node: Any) -> list[str] | None:
    """The root paths of the files a relation reads; None when they cannot be told."""
    name = node.getClass().getSimpleName()
    if name == "LogicalRelation":
        relation = node.relation()
        if not _is(spark, relation, "org.apache.spark.sql.execution.datasources.HadoopFsRelation"):
            return None
        return [p.toUri().getPath() for p in _seq(relation.location().rootPaths())]
    if name == "HiveTableRelation":
        location = node.tableMeta().location()
        return [location.getPath()]
    if name == "DataSourceV2Relation":
        location = node.table().properties().get("location")
        return [location.removeprefix("file:")] if location else None
    return None


def _reflection(expression: Any) -> bool:
    """The expression calls a Java method by name (`reflect`, `java_method`), which can read
    what no table holds, an environment variable such as the token key among it."""
    if expression.getClass().getSimpleName() == "CallMethodViaReflection":
        return True
    return any(_reflection(child) for child in _seq(expression.children()))


def _tables(spark: SparkSession, plan: Any, root: Path, found: set[str]) -> None:
    """Add to `found` the tables `plan` reads: its relations, and those of its children, of
    the plans it holds beside them (a view's definition) and of its subqueries. A call of a
    Java method by name is refused outright."""
    name = plan.getClass().getSimpleName()
    if any(_reflection(e) for e in _seq(plan.expressions())):
        raise AccessDeniedError("the query calls a Java method (reflect, java_method)")
    children = _seq(plan.children())
    if not children and name not in _TABLELESS:
        paths = _relation_paths(spark, plan)
        if not paths:
            raise AccessDeniedError(
                f"the query reads a {plan.nodeName()} whose files cannot be told"
            )
        found.update(_table_of(p, root) for p in paths)
    inner = [p for p in _seq(plan.innerChildren()) if _is(spark, p, f"{_LOGICAL}LogicalPlan")]
    for child in [*children, *inner, *_seq(plan.subqueries())]:
        _tables(spark, child, root, found)


def analyse(spark: SparkSession, settings: Settings, query: str) -> Analysed:
    """Parse and analyse `query` without running it (a command included), and find the tables
    its plan reads (for a query; a command's are not looked for)."""
    jvm, jspark = spark._jvm, spark._jsparkSession
    assert jvm is not None
    parsed = jspark.sessionState().sqlParser().parsePlan(query)
    modes = getattr(jvm.org.apache.spark.sql.execution, "CommandExecutionMode$")
    skip = modes.__getattr__("MODULE$").SKIP()  # analyse a command, never execute it
    analysed = jspark.sessionState().executePlan(parsed, skip).analyzed()
    if _is(spark, analysed, f"{_LOGICAL}Command"):  # its tables are not looked for
        return Analysed(parsed, frozenset(), analysed.nodeName())
    found: set[str] = set()
    _tables(spark, analysed, settings.root, found)
    return Analysed(parsed, frozenset(found), None)


def allowed(role: Role, table: str) -> bool:
    return any(fnmatchcase(table, p) for p in role.allow) and not any(
        fnmatchcase(table, p) for p in role.deny
    )


def role_named(settings: Settings, name: str) -> Role:
    if name not in settings.roles:
        known = ", ".join(sorted(settings.roles)) or "none: declare them under `roles:`"
        raise AccessDeniedError(f"no role {name!r} in the settings (roles: {known})")
    return settings.roles[name]


def query_as(spark: SparkSession, settings: Settings, role_name: str, query: str) -> DataFrame:
    """The result of `query` for a person in role `role_name`, refused (AccessDeniedError, nothing
    run) if it is not a query or reads a table the role does not allow."""
    role = role_named(settings, role_name)
    analysed = analyse(spark, settings, query)
    if analysed.command is not None:
        raise AccessDeniedError(
            f"role {role_name!r} runs queries only; this statement is a command "
            f"({analysed.command}), and was not run"
        )
    refused = sorted(t for t in analysed.tables if not allowed(role, t))
    if refused:
        raise AccessDeniedError(
            f"role {role_name!r} may not read {', '.join(refused)} "
            f"(it may read {', '.join(role.allow)}"
            + (f", except {', '.join(role.deny)}" if role.deny else "")
            + "); the query was not run"
        )
    jvm = spark._jvm
    assert jvm is not None
    # the very plan that was checked, analysed again into a DataFrame
    jdf = jvm.org.apache.spark.sql.classic.Dataset.ofRows(spark._jsparkSession, analysed.parsed)
    return DataFrame(jdf, spark)
