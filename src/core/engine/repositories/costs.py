"""Reads of an organization's cost table (its own dataset only)."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from src.core.engine.base import QueryOptions, TypedParam, Warehouse
from src.core.engine.sql import TableRef

GroupBy = Literal["service", "project", "sku"]

_GROUP_COLUMNS: dict[str, tuple[str, str]] = {
    "service": ("service_id", "service_description"),
    "project": ("project_id", "project_name"),
    "sku": ("sku_id", "sku_description"),
}


class CostRepository:
    def __init__(self, warehouse: Warehouse) -> None:
        self._wh = warehouse

    async def totals(self, table: TableRef, *, org_slug: str, start: date, end: date) -> list[dict[str, Any]]:
        """Sums over the window, one row per currency."""
        return await self._wh.query(
            f"""
            SELECT currency, COUNT(*) AS row_count, ROUND(SUM(cost), 6) AS gross_cost,
                   ROUND(SUM(credits_total), 6) AS credits, ROUND(SUM(net_cost), 6) AS net_cost
            FROM {table.sql}
            WHERE usage_date BETWEEN @start_date AND @end_date
            GROUP BY currency
            ORDER BY currency
            """,
            {"start_date": start, "end_date": end},
            options=QueryOptions(org_slug=org_slug),
        )

    async def daily(
        self,
        table: TableRef,
        *,
        org_slug: str,
        start: date,
        end: date,
        group_by: GroupBy | None,
        limit: int,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Rows per day (and currency, and group), in a stable order, ``limit`` from ``offset``."""
        key_col, name_col = _GROUP_COLUMNS[group_by] if group_by else ("", "")
        group_select = f"{key_col} AS group_id, ANY_VALUE({name_col}) AS group_name, " if group_by else ""
        group_key = f", {key_col}" if group_by else ""
        return await self._wh.query(
            f"""
            SELECT usage_date, {group_select}
                   COUNT(*) AS row_count,
                   ROUND(SUM(cost), 6) AS gross_cost,
                   ROUND(SUM(credits_total), 6) AS credits,
                   ROUND(SUM(net_cost), 6) AS net_cost,
                   currency
            FROM {table.sql}
            WHERE usage_date BETWEEN @start_date AND @end_date
            GROUP BY usage_date, currency{group_key}
            ORDER BY usage_date, currency{group_key}
            LIMIT @limit OFFSET @offset
            """,
            {
                "start_date": start,
                "end_date": end,
                "limit": TypedParam("INT64", limit),
                "offset": TypedParam("INT64", offset),
            },
            options=QueryOptions(org_slug=org_slug),
        )
