"""Where an organization's AWS Data Export lives (columns of ``org_profiles``); scoped by ``org_slug``."""

from __future__ import annotations

from typing import Any

from src.core.engine.base import TypedParam, Warehouse
from src.core.engine.catalog import CentralCatalog


class AwsSourceRepository:
    def __init__(self, warehouse: Warehouse, catalog: CentralCatalog) -> None:
        self._wh = warehouse
        self._profiles = catalog.ref("org_profiles").sql

    async def get(self, org_slug: str) -> dict[str, Any] | None:
        rows = await self._wh.query(
            f"SELECT aws_export_uri, aws_region, aws_source_set_by FROM {self._profiles} WHERE org_slug = @org_slug",
            {"org_slug": org_slug},
        )
        return rows[0] if rows and rows[0]["aws_export_uri"] else None

    async def set(self, org_slug: str, *, export_uri: str | None, region: str | None, set_by: str | None) -> int:
        """Set (or clear, ``export_uri=None``) the org's export, only while no other org uses it;
        1 when set, 0 when another org has it."""
        return await self._wh.execute(
            f"""
            UPDATE {self._profiles}
            SET aws_export_uri = @uri, aws_region = @region, aws_source_set_by = @set_by,
                updated_at = CURRENT_TIMESTAMP()
            WHERE org_slug = @org_slug
              AND (@uri IS NULL OR NOT EXISTS (
                SELECT 1 FROM {self._profiles} AS other
                WHERE other.aws_export_uri = @uri AND other.org_slug != @org_slug
              ))
            """,
            {
                "org_slug": org_slug,
                "uri": TypedParam("STRING", export_uri),
                "region": TypedParam("STRING", region),
                "set_by": TypedParam("STRING", set_by),
            },
        )
