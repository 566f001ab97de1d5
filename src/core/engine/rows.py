"""Rows for DML: values typed from the table's schema JSON, so NULLs bind on every backend."""

from __future__ import annotations

from collections.abc import Mapping
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
