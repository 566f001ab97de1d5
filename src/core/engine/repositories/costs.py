"""Reads of an organization's cost tables (its own dataset only): GCP's and AWS's, per day and currency.

Both answer the same measures: ``gross_cost`` (before credits), ``credits`` (negative) and
``net_cost`` = gross + credits. GCP's export nests credits in each row; in AWS CUR 2.0 credits,
refunds and discounts are line items of their own (negative ``line_item_unblended_cost``), so there
gross = the other line items' unblended cost, credits = those line items', net = all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
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
# AWS: service = product code (named by the product map's product_name), project = usage account.
_AWS_GROUP_COLUMNS: dict[str, tuple[str, str]] = {
    "service": ("line_item_product_code", "JSON_VALUE(product, '$.product_name')"),
    "project": ("line_item_usage_account_id", "line_item_usage_account_name"),
    "sku": ("line_item_usage_type", "line_item_usage_type"),
}
_AWS_CREDIT = "(line_item_line_item_type IN ('Credit', 'Refund') OR line_item_line_item_type LIKE '%Discount')"


_NO_GROUP = "CAST(NULL AS STRING) AS group_id, CAST(NULL AS STRING) AS group_name, "


def _gcp_rows(table: TableRef, group_by: GroupBy | None) -> str:
    """GCP's cost table per day and currency (and group): the measures of the module docstring."""
    key_col, name_col = _GROUP_COLUMNS[group_by] if group_by else ("", "")
    group_select = f"{key_col} AS group_id, ANY_VALUE({name_col}) AS group_name, " if group_by else _NO_GROUP
    return f"""
        SELECT 'gcp' AS provider, usage_date, currency, {group_select}
               COUNT(*) AS row_count, SUM(cost) AS gross_cost, SUM(credits_total) AS credits, SUM(net_cost) AS net_cost
        FROM {table.sql}
        WHERE usage_date BETWEEN @start_date AND @end_date
        GROUP BY usage_date, currency{f", {key_col}" if group_by else ""}"""


def _aws_rows(table: TableRef, group_by: GroupBy | None) -> str:
    """AWS's cost table per day and currency (and group): credits are line items of their own."""
    key_col, name_col = _AWS_GROUP_COLUMNS[group_by] if group_by else ("", "")
    group_select = f"{key_col} AS group_id, ANY_VALUE({name_col}) AS group_name, " if group_by else _NO_GROUP
    credit = f"CASE WHEN {_AWS_CREDIT} THEN line_item_unblended_cost ELSE 0 END"
    return f"""
        SELECT 'aws' AS provider, usage_date, line_item_currency_code AS currency, {group_select}
               COUNT(*) AS row_count, SUM(line_item_unblended_cost) - SUM({credit}) AS gross_cost,
               SUM({credit}) AS credits, SUM(line_item_unblended_cost) AS net_cost
        FROM {table.sql}
        WHERE usage_date BETWEEN @start_date AND @end_date
        GROUP BY usage_date, line_item_currency_code{f", {key_col}" if group_by else ""}"""


_ROWS = {"gcp": _gcp_rows, "aws": _aws_rows}


class CostRepository:
    def __init__(self, warehouse: Warehouse) -> None:
        self._wh = warehouse

    @staticmethod
    def _union(tables: Mapping[str, TableRef], group_by: GroupBy | None) -> str:
        return " UNION ALL ".join(f"({_ROWS[provider](table, group_by)})" for provider, table in tables.items())

    async def daily(
        self,
        tables: Mapping[str, TableRef],
        *,
        org_slug: str,
        start: date,
        end: date,
        group_by: GroupBy | None,
        limit: int,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Rows per day, provider and currency (and group) of the providers' tables (``provider`` ->
        its cost table, each existing), in a stable order, ``limit`` from ``offset``."""
        return await self._wh.query(
            f"""
            SELECT usage_date, provider, group_id, group_name, row_count,
                   ROUND(gross_cost, 6) AS gross_cost, ROUND(credits, 6) AS credits,
                   ROUND(net_cost, 6) AS net_cost, currency
            FROM ({self._union(tables, group_by)}) AS d
            ORDER BY usage_date, provider, currency, group_id
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

    async def totals(
        self, tables: Mapping[str, TableRef], *, org_slug: str, start: date, end: date
    ) -> list[dict[str, Any]]:
        """Sums over the window, one row per provider and currency."""
        return await self._wh.query(
            f"""
            SELECT provider, currency, SUM(row_count) AS row_count, ROUND(SUM(gross_cost), 6) AS gross_cost,
                   ROUND(SUM(credits), 6) AS credits, ROUND(SUM(net_cost), 6) AS net_cost
            FROM ({self._union(tables, None)}) AS d
            GROUP BY provider, currency
            ORDER BY provider, currency
            """,
            {"start_date": start, "end_date": end},
            options=QueryOptions(org_slug=org_slug),
        )
