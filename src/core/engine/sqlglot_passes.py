"""The sqlglot side of ``translate``: BigQuery SQL parsed, rewritten for DuckDB and printed.

Imported by ``translate`` on first use only (sqlglot costs ~0.1 s to import).
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from src.core.engine.sqlglot_lists import unnest_subqueries_to_lists
from src.core.errors import TerminalWarehouseError


def _numeric_precision(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.DECIMAL and not node.expressions:
        return exp.DataType.build("DECIMAL(38, 9)", dialect="duckdb")
    return node


def _parse_numeric(node: exp.Expression) -> exp.Expression:
    """``PARSE_NUMERIC(s)`` (no DuckDB function of that name) is a cast to NUMERIC;
    ``PARSE_NUMERIC(CAST(x AS STRING))`` -- how config SQL turns FLOAT64 into NUMERIC so that the local
    BigQuery emulator keeps 9 decimals (its ``CAST(x AS NUMERIC)`` keeps 3) -- casts ``x`` directly."""
    if not isinstance(node, exp.ParseNumeric):
        return node
    value = node.this
    if isinstance(value, exp.Cast) and value.to.this in (exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR):
        value = value.this
    return exp.Cast(this=value.copy(), to=exp.DataType.build("DECIMAL(38, 9)", dialect="duckdb"))


def _parameter_names(tree: exp.Expr) -> set[str]:
    names: set[str] = set()
    for node in tree.find_all(exp.Parameter, exp.Placeholder):
        name = node.name if isinstance(node, exp.Placeholder) else node.this.name
        if name:
            names.add(name)
    return names


def parameter_names(sql: str) -> frozenset[str]:
    try:
        trees = sqlglot.parse(sql, read="bigquery")
    except ParseError:
        return frozenset(re.findall(r"@([A-Za-z_][A-Za-z0-9_]*)", sql))
    return frozenset().union(*(_parameter_names(t) for t in trees if t is not None))


def to_duckdb(sql: str) -> list[tuple[str, frozenset[str]]]:
    """(DuckDB SQL, parameter names) of each statement of a BigQuery SQL text."""
    try:
        trees = [t for t in sqlglot.parse(sql, read="bigquery") if t is not None]
    except ParseError as exc:
        raise TerminalWarehouseError(f"invalid SQL: {exc.errors[0]['description'] if exc.errors else exc}") from None
    statements = []
    for tree in trees:
        params = frozenset(_parameter_names(tree))
        tree = unnest_subqueries_to_lists(tree).transform(_parse_numeric).transform(_numeric_precision)
        statements.append((tree.sql(dialect="duckdb"), params))
    return statements


def output_columns(sql: str) -> list[str]:
    """Names of the columns a BigQuery SELECT returns, in order (every item must be named)."""
    try:
        tree = sqlglot.parse_one(sql, read="bigquery")
    except ParseError as exc:
        raise TerminalWarehouseError(f"invalid SQL: {exc.errors[0]['description'] if exc.errors else exc}") from None
    if not isinstance(tree, exp.Query):
        raise TerminalWarehouseError("not a query")
    names = tree.named_selects
    if len(names) != len(tree.selects) or any(not n or n == "*" for n in names):
        raise TerminalWarehouseError("every column of the query must have a name")
    return list(names)
