"""Rows for DML: values typed from the table's schema JSON, so NULLs bind on every backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from src.core.engine.base import TypedParam
from src.core.engine.schema import Schema, SchemaField
from src.core.engine.sql import TableRef, quote_column

_PARAM_TYPE = {
    "STRING": "STRING",
    "BYTES": "BYTES",
    "INTEGER": "INT64",
    "FLOAT": "FLOAT64",
    "NUMERIC": "NUMERIC",
    "BIGNUMERIC": "BIGNUMERIC",
    "BOOLEAN": "BOOL",
    "DATE": "DATE",
    "DATETIME": "DATETIME",
    "TIME": "TIME",
    "TIMESTAMP": "TIMESTAMP",
    "JSON": "JSON",
    "GEOGRAPHY": "STRING",
}


def param_type(field: SchemaField) -> str:
    if field.type == "RECORD":
        raise ValueError(f"RECORD column {field.name!r} cannot be bound as a parameter")
    base = _PARAM_TYPE[field.type]
    return f"ARRAY<{base}>" if field.mode == "REPEATED" else base


def typed_params(schema: Schema, row: Mapping[str, Any], *, prefix: str = "") -> dict[str, TypedParam]:
    fields = {f.name: f for f in schema}
    unknown = set(row) - set(fields)
    if unknown:
        raise ValueError(f"unknown columns: {', '.join(sorted(unknown))}")
    params = {}
    for name, value in row.items():
        field = fields[name]
        if field.mode == "REPEATED" and value is None:
            value = []
        params[f"{prefix}{name}"] = TypedParam(param_type(field), value)
    return params


def insert_sql(ref: TableRef, columns: list[str], *, prefix: str = "") -> str:
    cols = ", ".join(quote_column(c) for c in columns)
    values = ", ".join(f"@{prefix}{c}" for c in columns)
    return f"INSERT INTO {ref.sql} ({cols}) VALUES ({values})"


def insert_statement(
    ref: TableRef, schema: Schema, row: Mapping[str, Any], *, prefix: str = ""
) -> tuple[str, dict[str, TypedParam]]:
    return insert_sql(ref, list(row), prefix=prefix), typed_params(schema, row, prefix=prefix)


def insert_rows_sql(
    ref: TableRef, columns: list[str], count: int, *, unless: str | None = None, key: str | None = None
) -> str:
    """One INSERT of ``count`` rows bound as ``@r{i}_{column}`` (``rows_params``). With ``unless``
    (a condition on the table's own columns), nothing is inserted while a row matches it; with
    ``key`` (a column), a row is left out when the table has one with its value. Either way a
    statement retried after a lost answer adds its rows once. An append all the same: BigQuery
    counts INSERTs apart from mutating DML (UPDATE, DELETE, MERGE) in its per-table limits."""
    cols = ", ".join(quote_column(c) for c in columns)
    rows = " UNION ALL ".join(
        "SELECT " + ", ".join(f"@r{i}_{c} AS {quote_column(c)}" for c in columns) for i in range(count)
    )
    guards = []
    if unless:
        guards.append(f"NOT EXISTS (SELECT 1 FROM {ref.sql} WHERE {unless})")
    if key:
        k = quote_column(key)
        guards.append(f"NOT EXISTS (SELECT 1 FROM {ref.sql} AS t WHERE t.{k} = s.{k})")
    where = f" WHERE {' AND '.join(guards)}" if guards else ""
    return f"INSERT INTO {ref.sql} ({cols}) SELECT {cols} FROM ({rows}) AS s{where}"


def rows_params(schema: Schema, rows: Sequence[Mapping[str, Any]]) -> dict[str, TypedParam]:
    params: dict[str, TypedParam] = {}
    for i, row in enumerate(rows):
        params.update(typed_params(schema, row, prefix=f"r{i}_"))
    return params


def merge_row_sql(
    ref: TableRef,
    columns: list[str],
    *,
    keys: list[str],
    update: list[str] | None = None,
    prefix: str = "",
) -> str:
    """Insert one row (bound as ``@{prefix}{column}``) unless a row with the same ``keys`` exists;
    with ``update``, such a row gets those columns instead. One statement: atomic on both backends."""
    source = ", ".join(f"@{prefix}{c} AS {quote_column(c)}" for c in columns)
    on = " AND ".join(f"t.{quote_column(k)} = s.{quote_column(k)}" for k in keys)
    cols = ", ".join(quote_column(c) for c in columns)
    values = ", ".join(f"s.{quote_column(c)}" for c in columns)
    matched = ""
    if update:
        matched = (
            "WHEN MATCHED THEN UPDATE SET "
            + ", ".join(f"{quote_column(c)} = s.{quote_column(c)}" for c in update)
            + " "
        )
    return (
        f"MERGE {ref.sql} AS t USING (SELECT {source}) AS s ON {on} "
        f"{matched}WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({values})"
    )
