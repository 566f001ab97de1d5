"""Reads of an organization's FOCUS table (``focus_cost``, its own dataset only).

Sums are always per ``BillingCurrency``: amounts of different currencies are never added.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import date
from pathlib import Path
from typing import Any, Literal

from src.core.engine.base import QueryOptions, TypedParam, Warehouse
from src.core.engine.exports import ExportFormat
from src.core.engine.schema import Schema
from src.core.engine.sql import TableRef, quote_column

FocusGroupBy = Literal["service_category", "service_name", "provider", "sub_account"]
JSON_COLUMNS = ("Tags", "SkuPriceDetails", "x_Credits")  # JSON text; embedded as objects in JSON lines

# group -> (id column, display-name expression)
_GROUPS: dict[str, tuple[str, str]] = {
    "service_category": ("ServiceCategory", "ANY_VALUE(ServiceCategory)"),
    "service_name": ("ServiceName", "ANY_VALUE(ServiceCategory)"),
    "provider": ("x_Provider", "ANY_VALUE(ProviderName)"),
    "sub_account": ("SubAccountId", "ANY_VALUE(SubAccountName)"),
}
_WINDOW = "x_UsageDate BETWEEN @start_date AND @end_date"
_ROUNDED_MEASURES = (
    "ROUND(SUM(BilledCost), 6) AS billed_cost, ROUND(SUM(EffectiveCost), 6) AS effective_cost, "
    "ROUND(SUM(ListCost), 6) AS list_cost, ROUND(SUM(ContractedCost), 6) AS contracted_cost"
)
_SQL_TYPE = {"FLOAT": "FLOAT64", "INTEGER": "INT64", "BOOLEAN": "BOOL"}


class FocusRepository:
    def __init__(self, warehouse: Warehouse) -> None:
        self._wh = warehouse

    async def daily(
        self,
        table: TableRef,
        *,
        org_slug: str,
        start: date,
        end: date,
        group_by: FocusGroupBy | None,
        provider: str | None = None,
        limit: int,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Per UTC usage day and billing currency (and group): rows and the four FOCUS costs, in a
        stable order, ``limit`` from ``offset``; only ``provider``'s rows (``x_Provider``) when given."""
        key_col, name_expr = _GROUPS[group_by] if group_by else ("", "")
        group_select = f"{key_col} AS group_id, {name_expr} AS group_name, " if group_by else ""
        group_key = f", {key_col}" if group_by else ""
        return await self._wh.query(
            f"""
            SELECT x_UsageDate AS usage_date, {group_select}
                   COUNT(*) AS row_count, {_ROUNDED_MEASURES},
                   BillingCurrency AS currency
            FROM {table.sql}
            WHERE {_WINDOW}{" AND x_Provider = @provider" if provider else ""}
            GROUP BY x_UsageDate, BillingCurrency{group_key}
            ORDER BY x_UsageDate, BillingCurrency{group_key}
            LIMIT @limit OFFSET @offset
            """,
            {
                "start_date": start,
                "end_date": end,
                "provider": TypedParam("STRING", provider),
                "limit": TypedParam("INT64", limit),
                "offset": TypedParam("INT64", offset),
            },
            options=QueryOptions(org_slug=org_slug),
        )

    async def totals(
        self, table: TableRef, *, org_slug: str, start: date, end: date, provider: str | None = None
    ) -> list[dict[str, Any]]:
        """Sums over the window, one row per billing currency."""
        return await self._wh.query(
            f"""
            SELECT BillingCurrency AS currency, COUNT(*) AS row_count, {_ROUNDED_MEASURES}
            FROM {table.sql}
            WHERE {_WINDOW}{" AND x_Provider = @provider" if provider else ""}
            GROUP BY BillingCurrency
            ORDER BY BillingCurrency
            """,
            {"start_date": start, "end_date": end, "provider": TypedParam("STRING", provider)},
            options=QueryOptions(org_slug=org_slug),
        )

    def export(
        self,
        table: TableRef | None,
        schema: Schema,
        *,
        org_slug: str,
        start: date,
        end: date,
        fmt: ExportFormat,
        directory: Path | None,
    ) -> AsyncGenerator[bytes]:
        """The window's rows, every column of ``schema`` in order, as a ``fmt`` file in chunks; an
        empty file (CSV: the header) when the table does not exist yet."""
        columns = ", ".join(quote_column(f.name) for f in schema)
        if table is None:
            empty = ", ".join(
                f"CAST(NULL AS {_SQL_TYPE.get(f.type, f.type)}) AS {quote_column(f.name)}" for f in schema
            )
            sql = f"SELECT {empty} FROM (SELECT 1 AS one) AS nothing WHERE FALSE"
        else:
            sql = f"SELECT {columns} FROM {table.sql} WHERE {_WINDOW}"
        return self._wh.export(
            sql,
            {"start_date": start, "end_date": end},
            fmt=fmt,
            schema=schema,
            json_columns=JSON_COLUMNS,
            directory=directory,
            options=QueryOptions(org_slug=org_slug),
        )
