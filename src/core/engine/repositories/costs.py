"""Reads of an organization's cost tables (its own dataset only): GCP's and AWS's, per day and currency.

Both answer the same measures: ``gross_cost`` (before credits), ``credits`` (negative) and
``net_cost`` = gross + credits. GCP's export nests credits in each row; in AWS CUR 2.0 credits,
refunds and discounts are line items of their own (negative ``line_item_unblended_cost``), so there
gross = the other line items' unblended cost, credits = those line items', net = all of them.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from src.core.engine.base import QueryOptions, Warehouse
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


class CostRepository:
    def __init__(self, warehouse: Warehouse) -> None:
        self._wh = warehouse

    async def daily(
        self, table: TableRef, *, org_slug: str, start: date, end: date, group_by: GroupBy | None
    ) -> list[dict[str, Any]]:
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
            """,
            {"start_date": start, "end_date": end},
            options=QueryOptions(org_slug=org_slug),
        )

    async def daily_aws(
        self, table: TableRef, *, org_slug: str, start: date, end: date, group_by: GroupBy | None
    ) -> list[dict[str, Any]]:
        key_col, name_col = _AWS_GROUP_COLUMNS[group_by] if group_by else ("", "")
        group_select = f"{key_col} AS group_id, ANY_VALUE({name_col}) AS group_name, " if group_by else ""
        group_key = f", {key_col}" if group_by else ""
        credit = f"CASE WHEN {_AWS_CREDIT} THEN line_item_unblended_cost ELSE 0 END"
        return await self._wh.query(
            f"""
            SELECT usage_date, {group_select}
                   COUNT(*) AS row_count,
                   ROUND(SUM(line_item_unblended_cost) - SUM({credit}), 6) AS gross_cost,
                   ROUND(SUM({credit}), 6) AS credits,
                   ROUND(SUM(line_item_unblended_cost), 6) AS net_cost,
                   line_item_currency_code AS currency
            FROM {table.sql}
            WHERE usage_date BETWEEN @start_date AND @end_date
            GROUP BY usage_date, currency{group_key}
            ORDER BY usage_date, currency{group_key}
            """,
            {"start_date": start, "end_date": end},
            options=QueryOptions(org_slug=org_slug),
        )
