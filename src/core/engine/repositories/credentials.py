"""Organizations' stored cloud credentials (``org_cloud_credentials``); every statement is scoped
by ``org_slug``.

At most one row per (org, provider, credential type) is ACTIVE: a new one is inserted, then the
older ACTIVE rows are revoked (REVOKED, ciphertext removed). Readers take the newest ACTIVE row,
so even two instances storing at once end with the newest one in use.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from src.core.engine.base import TypedParam, Warehouse
from src.core.engine.catalog import CentralCatalog
from src.core.engine.rows import insert_statement

TABLE = "org_cloud_credentials"
_METADATA = (
    "credential_id, org_slug, provider, credential_type, principal, project_id, status, kms_key_name, "
    "last_validated_at, created_at, updated_at"
)


class CredentialRepository:
    def __init__(self, warehouse: Warehouse, catalog: CentralCatalog) -> None:
        self._wh = warehouse
        self._ref = catalog.ref(TABLE)
        self._schema = catalog.schema(TABLE)
        self._table = self._ref.sql

    async def insert(self, row: dict[str, Any]) -> None:
        await self._wh.execute(*insert_statement(self._ref, self._schema, row))

    async def active_older(
        self, org_slug: str, provider: str, credential_type: str, *, keep_id: str, created_at: datetime
    ) -> list[dict[str, Any]]:
        """The ACTIVE rows ``revoke_older`` would revoke (their principals lose their grants)."""
        return await self._wh.query(
            f"""
            SELECT credential_id, principal FROM {self._table}
            WHERE org_slug = @org_slug AND provider = @provider AND credential_type = @credential_type
              AND status = 'ACTIVE' AND credential_id != @keep_id
              AND (created_at < @created_at OR (created_at = @created_at AND credential_id < @keep_id))
            """,
            {
                "org_slug": org_slug,
                "provider": provider,
                "credential_type": credential_type,
                "keep_id": keep_id,
                "created_at": TypedParam("TIMESTAMP", created_at),
            },
        )

    async def revoke_older(
        self, org_slug: str, provider: str, credential_type: str | None, *, keep_id: str, created_at: datetime
    ) -> int:
        """Revoke the ACTIVE rows stored before ``keep_id`` (ties broken by id); of every type with
        ``credential_type=None``."""
        return await self._wh.execute(
            f"""
            UPDATE {self._table}
            SET status = 'REVOKED', encrypted_credential = NULL, updated_at = CURRENT_TIMESTAMP()
            WHERE org_slug = @org_slug AND provider = @provider
              AND (@credential_type IS NULL OR credential_type = @credential_type)
              AND status = 'ACTIVE' AND credential_id != @keep_id
              AND (created_at < @created_at OR (created_at = @created_at AND credential_id < @keep_id))
            """,
            {
                "org_slug": org_slug,
                "provider": provider,
                "credential_type": TypedParam("STRING", credential_type),
                "keep_id": keep_id,
                "created_at": TypedParam("TIMESTAMP", created_at),
            },
        )

    async def revoke_id(self, org_slug: str, credential_id: str) -> int:
        """Revoke one row (compensation when its grant could not be made)."""
        return await self._wh.execute(
            f"""
            UPDATE {self._table}
            SET status = 'REVOKED', encrypted_credential = NULL, updated_at = CURRENT_TIMESTAMP()
            WHERE org_slug = @org_slug AND credential_id = @credential_id AND status = 'ACTIVE'
            """,
            {"org_slug": org_slug, "credential_id": credential_id},
        )

    async def revoke_all(self, org_slug: str, provider: str, credential_type: str) -> int:
        return await self._wh.execute(
            f"""
            UPDATE {self._table}
            SET status = 'REVOKED', encrypted_credential = NULL, updated_at = CURRENT_TIMESTAMP()
            WHERE org_slug = @org_slug AND provider = @provider AND credential_type = @credential_type
              AND status = 'ACTIVE'
            """,
            {"org_slug": org_slug, "provider": provider, "credential_type": credential_type},
        )

    async def latest(
        self,
        org_slug: str,
        provider: str,
        credential_type: str | None,
        *,
        active_only: bool,
        with_secret: bool = False,
    ) -> dict[str, Any] | None:
        """The newest row of the org (of any type with ``credential_type=None``; optionally only an
        ACTIVE one, optionally with its ciphertext)."""
        columns = _METADATA + (", encrypted_credential" if with_secret else "")
        active = "AND status = 'ACTIVE'" if active_only else ""
        rows = await self._wh.query(
            f"""
            SELECT {columns}
            FROM {self._table}
            WHERE org_slug = @org_slug AND provider = @provider
              AND (@credential_type IS NULL OR credential_type = @credential_type) {active}
            ORDER BY created_at DESC, credential_id DESC
            LIMIT 1
            """,
            {
                "org_slug": org_slug,
                "provider": provider,
                "credential_type": TypedParam("STRING", credential_type),
            },
        )
        return rows[0] if rows else None
