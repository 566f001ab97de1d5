"""Between Google's BigQuery client and our types: driver errors -> project errors (transient or
terminal), bound values -> query parameters, schema fields -> ``SchemaField``/DDL, label values.

Imported only with the BigQuery backend (google-cloud-bigquery is heavy to import).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from typing import Any

import requests
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from src.core.engine.base import TypedParam
from src.core.engine.schema import Schema, SchemaField, TableOptions, TimePartitioning
from src.core.errors import (
    TerminalWarehouseError,
    TransientWarehouseError,
    WarehouseAccessDeniedError,
    WarehouseError,
    WarehouseNotFoundError,
)

_TRANSIENT_REASONS = {"rateLimitExceeded", "backendError", "internalError", "jobRateLimitExceeded"}
_CONCURRENT = re.compile(r"concurrent update|could not serialize access|aborted due to concurrent", re.I)
# The per-table DML queue is full (BigQuery: 400 resourcesExceeded "Too many DML statements
# outstanding against table …"): the statement never ran, so it is safe and worth retrying later.
_DML_QUEUE_FULL = re.compile(r"too many dml statements outstanding", re.I)
_LABEL_VALUE = re.compile(r"[^a-z0-9_\-]")


def _reason(exc: gexc.GoogleAPICallError) -> str:
    errors = getattr(exc, "errors", None) or []
    return str(errors[0].get("reason", "")) if errors and isinstance(errors[0], dict) else ""


def translate_error(exc: Exception) -> WarehouseError:
    """Google exception -> project error (transient: retry; terminal: do not)."""
    message = getattr(exc, "message", None) or str(exc)
    message = str(message).splitlines()[0][:1000]
    if isinstance(exc, gexc.GoogleAPICallError):
        reason = _reason(exc)
        if _CONCURRENT.search(message):
            return TransientWarehouseError(f"concurrent update conflict: {message}")
        if _DML_QUEUE_FULL.search(message):
            return TransientWarehouseError(f"DML queue of the table is full: {message}")
        if isinstance(exc, gexc.TooManyRequests | gexc.ServerError) or reason in _TRANSIENT_REASONS:
            return TransientWarehouseError(message)
        if isinstance(exc, gexc.NotFound):
            return WarehouseNotFoundError(message)
        if isinstance(exc, gexc.Forbidden | gexc.Unauthorized):
            if reason in {"quotaExceeded", "rateLimitExceeded"}:
                return TransientWarehouseError(message)
            return WarehouseAccessDeniedError(message)
        return TerminalWarehouseError(message)
    if isinstance(exc, TimeoutError):
        return TransientWarehouseError(f"query timed out: {message}")
    if isinstance(exc, gexc.RetryError):  # the client's own retries of a call ran out of time
        return TransientWarehouseError(f"BigQuery did not answer in time: {message}")
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return TransientWarehouseError(f"BigQuery could not be reached: {type(exc).__name__}")
    return TerminalWarehouseError(f"{type(exc).__name__}: {message}")


def _infer_type(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, Decimal):
        return "NUMERIC"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP"
    if isinstance(value, dt.date):
        return "DATE"
    if isinstance(value, bytes):
        return "BYTES"
    return "STRING"


def to_query_parameter(name: str, value: Any) -> bigquery.ScalarQueryParameter | bigquery.ArrayQueryParameter:
    if isinstance(value, TypedParam):
        kind, raw = value.type.upper(), value.value
    elif isinstance(value, list | tuple):
        kind, raw = f"ARRAY<{_infer_type(value[0]) if value else 'STRING'}>", list(value)
    else:
        kind, raw = _infer_type(value), value
    if kind.startswith("ARRAY<"):
        return bigquery.ArrayQueryParameter(name, kind[6:-1], list(raw or []))
    if kind == "JSON" and raw is not None and not isinstance(raw, str):
        raw = json.dumps(raw, separators=(",", ":"), default=str)
    return bigquery.ScalarQueryParameter(name, kind, raw)


def to_schema_field(field: SchemaField) -> bigquery.SchemaField:
    return bigquery.SchemaField(
        field.name,
        field.type,
        mode=field.mode,
        description=field.description or "",
        fields=[to_schema_field(f) for f in field.fields],
    )


def ddl_type(field: SchemaField) -> str:
    """BigQuery DDL type of a schema field (for ALTER TABLE ADD COLUMN)."""
    names = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}
    if field.type == "RECORD":
        base = "STRUCT<" + ", ".join(f"`{f.name}` {ddl_type(f)}" for f in field.fields) + ">"
    else:
        base = names.get(field.type, field.type)
    return f"ARRAY<{base}>" if field.mode == "REPEATED" else base


def label_value(value: str) -> str:
    return _LABEL_VALUE.sub("_", value.lower())[:63]


def to_bigquery_table(table_id: str, schema: Schema, options: TableOptions | None) -> bigquery.Table:
    """A table resource from our schema and options (partitioning, clustering, labels)."""
    table = bigquery.Table(table_id, schema=[to_schema_field(f) for f in schema])
    if options is not None:
        part = options.time_partitioning
        if part is not None:
            table.time_partitioning = bigquery.TimePartitioning(
                type_=part.type,
                field=part.field,
                expiration_ms=part.expiration_days * 86_400_000 if part.expiration_days else None,
            )
            table.require_partition_filter = part.require_partition_filter or None
        if options.clustering_fields:
            table.clustering_fields = list(options.clustering_fields)
        table.labels = {label_value(k): label_value(v) for k, v in options.labels.items()}
        table.description = options.description
    return table


def table_options_of(table: bigquery.Table) -> TableOptions:
    """Partitioning, clustering, labels and description as the table resource reports them."""
    part = table.time_partitioning
    return TableOptions(
        description=table.description,
        time_partitioning=(
            TimePartitioning(
                type=part.type_,
                field=part.field,
                expiration_days=int(part.expiration_ms // 86_400_000) if part.expiration_ms else None,
            )
            if part
            else None
        ),
        clustering_fields=tuple(table.clustering_fields or ()),
        labels=dict(table.labels or {}),
    )


def job_statistics(job: Any) -> dict[str, int | None]:
    """A finished job's bytes processed, bytes billed and slot milliseconds, as the client reports
    them (None where it reports nothing: a dry run bills nothing, the emulator reports no bytes
    billed)."""

    def figure(name: str) -> int | None:
        value = getattr(job, name, None)
        return int(value) if value is not None else None

    return {
        "bytes_processed": figure("total_bytes_processed"),
        "bytes_billed": figure("total_bytes_billed"),
        "slot_ms": figure("slot_millis"),
    }
