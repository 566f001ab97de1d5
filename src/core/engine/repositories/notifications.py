"""An organization's notification preferences: columns of ``org_profiles`` (``notify_emails``,
``notify_slack_webhook_encrypted``, ``notify_on``). Scoped by ``org_slug``; the webhook is only
ever stored as ciphertext (encrypted by the caller)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from src.core.engine.base import TypedParam, Warehouse
from src.core.engine.catalog import CentralCatalog


class NotificationRepository:
    def __init__(self, warehouse: Warehouse, catalog: CentralCatalog) -> None:
        self._wh = warehouse
        self._profiles = catalog.ref("org_profiles").sql

    async def get(self, org_slug: str) -> dict[str, Any] | None:
        rows = await self._wh.query(
            f"""
            SELECT org_slug, admin_email, notify_emails, notify_slack_webhook_encrypted, notify_on
            FROM {self._profiles}
            WHERE org_slug = @org_slug
            """,
            {"org_slug": org_slug},
        )
        return rows[0] if rows else None

    async def save(
        self, org_slug: str, *, emails: Sequence[str], webhook_encrypted: str | None, on: Sequence[str]
    ) -> int:
        return await self._wh.execute(
            f"""
            UPDATE {self._profiles}
            SET notify_emails = @emails, notify_slack_webhook_encrypted = @webhook, notify_on = @on,
                updated_at = CURRENT_TIMESTAMP()
            WHERE org_slug = @org_slug
            """,
            {
                "org_slug": org_slug,
                "emails": TypedParam("ARRAY<STRING>", list(emails)),
                "webhook": TypedParam("STRING", webhook_encrypted),
                "on": TypedParam("ARRAY<STRING>", list(on)),
            },
        )
