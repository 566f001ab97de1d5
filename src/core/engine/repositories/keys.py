"""API keys of organizations: lookup by hash, rotation with a grace period, revocation, listing.

Never selects the key copy or the hash back out for a listing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from src.core.engine.base import TypedParam, Warehouse
from src.core.engine.catalog import CentralCatalog
from src.core.engine.rows import insert_statement
from src.core.errors import WarehouseNotFoundError


class KeyRepository:
    def __init__(self, warehouse: Warehouse, catalog: CentralCatalog) -> None:
        self._wh = warehouse
        self._cat = catalog
        self._keys = catalog.ref("org_api_keys").sql
        self._profiles = catalog.ref("org_profiles").sql

    async def find(self, key_hash: str) -> dict[str, Any] | None:
        """The active key with this hash and its org's status (None before bootstrap)."""
        try:
            rows = await self._wh.query(
                f"""
                SELECT k.key_id, k.org_slug, k.expires_at, k.scopes, p.status AS org_status
                FROM {self._keys} AS k
                JOIN {self._profiles} AS p ON p.org_slug = k.org_slug
                WHERE k.key_hash = @key_hash AND k.status = 'ACTIVE'
                """,
                {"key_hash": key_hash},
            )
        except WarehouseNotFoundError:
            return None
        return rows[0] if rows else None

    async def insert(self, row: dict[str, Any]) -> None:
        await self._wh.execute(*insert_statement(self._cat.ref("org_api_keys"), self._cat.schema("org_api_keys"), row))

    async def expire_others(self, org_slug: str, keep_key_id: str, expires_at: datetime, reason: str) -> int:
        """Active keys other than ``keep_key_id`` stop working at ``expires_at`` (never later than
        an expiry they already had)."""
        return await self._wh.execute(
            f"""
            UPDATE {self._keys}
            SET expires_at = IF(expires_at IS NULL OR expires_at > @at, @at, expires_at),
                revoked_reason = @reason
            WHERE org_slug = @org_slug AND status = 'ACTIVE' AND key_id != @keep
            """,
            {"org_slug": org_slug, "keep": keep_key_id, "at": TypedParam("TIMESTAMP", expires_at), "reason": reason},
        )

    async def revoke(self, org_slug: str, *, key_id: str | None, except_key_id: str | None, reason: str) -> int:
        """Revoke one key (``key_id``) or every active key but ``except_key_id``."""
        return await self._wh.execute(
            f"""
            UPDATE {self._keys}
            SET status = 'REVOKED', revoked_at = CURRENT_TIMESTAMP(), revoked_reason = @reason
            WHERE org_slug = @org_slug AND status = 'ACTIVE'
              AND (@key_id IS NULL OR key_id = @key_id)
              AND (@except_key_id IS NULL OR key_id != @except_key_id)
            """,
            {
                "org_slug": org_slug,
                "key_id": TypedParam("STRING", key_id),
                "except_key_id": TypedParam("STRING", except_key_id),
                "reason": reason,
            },
        )

    async def list(self, org_slug: str) -> list[dict[str, Any]]:
        return await self._wh.query(
            f"""
            SELECT key_id, key_prefix, status, created_at, created_by, last_used_at, expires_at, revoked_at,
                   revoked_reason, scopes
            FROM {self._keys}
            WHERE org_slug = @org_slug
            ORDER BY created_at DESC
            """,
            {"org_slug": org_slug},
        )

    async def exists(self, org_slug: str, key_id: str) -> bool:
        rows = await self._wh.query(
            f"SELECT key_id FROM {self._keys} WHERE org_slug = @org_slug AND key_id = @key_id",
            {"org_slug": org_slug, "key_id": key_id},
        )
        return bool(rows)

    async def touch(self, org_slug: str, key_id: str) -> None:
        await self._wh.execute(
            f"UPDATE {self._keys} SET last_used_at = @now WHERE org_slug = @org_slug AND key_id = @key_id",
            {"org_slug": org_slug, "key_id": key_id, "now": TypedParam("TIMESTAMP", datetime.now(UTC))},
        )
