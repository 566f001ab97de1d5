"""The sqlglot side of ``translate``: BigQuery SQL parsed, rewritten for DuckDB and printed.

Imported by ``translate`` on first use only (sqlglot costs ~0.1 s to import).
"""

from __future__ import annotations

import re

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from src.core.errors import TerminalWarehouseError


def _is_column_of(node: exp.Expression, alias: str) -> bool:
    return isinstance(node, exp.Column) and node.table == alias and bool(node.name)


def _unnest_sum_to_list_sum(node: exp.Expression) -> exp.Expression:
    if not isinstance(node, exp.Subquery) or not isinstance(node.this, exp.Select):
        return node
    select = node.this
    if len(select.expressions) != 1 or any(
        select.args.get(k) for k in ("where", "group", "having", "joins", "order", "limit", "distinct")
    ):
        return node
    agg = select.expressions[0]
    source = select.args.get("from_") or select.args.get("from")
    if not isinstance(agg, exp.Sum) or source is None or not isinstance(source.this, exp.Unnest):
        return node
    unnest = source.this
    alias = unnest.args.get("alias")
    columns = alias.columns if isinstance(alias, exp.TableAlias) else []
    if len(unnest.expressions) != 1 or len(columns) != 1 or unnest.args.get("offset"):
        return node
    var = columns[0].name
    value = agg.this
    if not _is_column_of(value, var):
        return node
    field = exp.Dot(this=exp.column(var), expression=exp.to_identifier(value.name))
    mapper = exp.Lambda(this=field, expressions=[exp.to_identifier(var)])
    transformed = exp.Anonymous(this="list_transform", expressions=[unnest.expressions[0].copy(), mapper])
    return exp.Anonymous(this="list_sum", expressions=[transformed])


def _numeric_precision(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.DECIMAL and not node.expressions:
        return exp.DataType.build("DECIMAL(38, 9)", dialect="duckdb")
    return node


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
        tree = tree.transform(_unnest_sum_to_list_sum).transform(_numeric_precision)
        statements.append((tree.sql(dialect="duckdb"), params))
    return statements
