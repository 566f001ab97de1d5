"""Organizations: profiles, their keys, subscription and quota rows (central tables).

Every statement on a central table is scoped by ``org_slug``, except the admin listing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from src.core.engine.base import RetryPolicy, TypedParam, Warehouse, with_retries
from src.core.engine.catalog import CentralCatalog
from src.core.engine.rows import insert_statement, typed_params
from src.core.engine.schema import Schema
from src.core.engine.sql import TableRef
from src.core.errors import ConflictError


@dataclass(frozen=True, slots=True)
class NewOrg:
    org_slug: str
    company_name: str
    admin_email: str
    subscription_plan: str
    org_dataset: str
    billing_export_table: str | None
    daily_limit: int
    monthly_limit: int
    concurrent_limit: int


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    key_hash: str
    key_prefix: str
    encrypted_key: str
    kms_key_name: str
    created_by: str
    scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ExtraRow:
    """A row written in the same transaction (e.g. the org dataset's metadata row)."""

    ref: TableRef
    schema: Schema
    row: dict[str, Any]


class OrgRepository:
    def __init__(self, warehouse: Warehouse, catalog: CentralCatalog, *, retry: RetryPolicy) -> None:
        self._wh = warehouse
        self._cat = catalog
        self._profiles = catalog.ref("org_profiles").sql
        self._keys = catalog.ref("org_api_keys").sql
        self._subs = catalog.ref("org_subscriptions").sql
        self._quotas = catalog.ref("org_usage_quotas").sql
        self._retry = retry

    async def exists(self, org_slug: str) -> bool:
        rows = await self._wh.query(
            f"SELECT 1 AS found FROM {self._profiles} WHERE org_slug = @org_slug LIMIT 1", {"org_slug": org_slug}
        )
        return bool(rows)

    async def get(self, org_slug: str) -> dict[str, Any] | None:
        rows = await self._wh.query(
            f"""
            SELECT p.org_slug, p.company_name, p.admin_email, p.status, p.subscription_plan, p.org_dataset,
                   p.billing_export_table, p.created_at, p.updated_at, p.suspended_at, p.suspended_reason,
                   q.daily_limit, q.monthly_limit, q.concurrent_limit
            FROM {self._profiles} AS p
            LEFT JOIN {self._quotas} AS q ON q.org_slug = p.org_slug
            WHERE p.org_slug = @org_slug
            """,
            {"org_slug": org_slug},
        )
        return rows[0] if rows else None

    async def onboard(self, org: NewOrg, key: NewKey, *, extra: ExtraRow, today: date) -> None:
        """Profile, key, subscription and quota rows in one transaction: all or nothing.

        The profile is written with a MERGE on ``org_slug`` so that two concurrent onboardings
        of one slug cannot both succeed: the loser inserts nothing and gets a 409.
        """
        now = datetime.now(UTC)
        profile = {
            "org_slug": org.org_slug,
            "company_name": org.company_name,
            "admin_email": org.admin_email,
            "status": "ACTIVE",
            "subscription_plan": org.subscription_plan,
            "org_dataset": org.org_dataset,
            "billing_export_table": org.billing_export_table,
            "created_at": now,
            "updated_at": now,
        }
        profile_params = typed_params(self._cat.schema("org_profiles"), profile, prefix="p_")
        columns = ", ".join(profile)
        values = ", ".join(f"@p_{c}" for c in profile)
        merge_profile = f"""
            MERGE {self._profiles} AS t
            USING (SELECT @p_org_slug AS org_slug) AS s
            ON t.org_slug = s.org_slug
            WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})
        """
        key_sql, key_params = insert_statement(
            self._cat.ref("org_api_keys"),
            self._cat.schema("org_api_keys"),
            {
                "key_id": key.key_id,
                "org_slug": org.org_slug,
                "key_hash": key.key_hash,
                "key_prefix": key.key_prefix,
                "encrypted_key": key.encrypted_key,
                "kms_key_name": key.kms_key_name,
                "scopes": list(key.scopes),
                "status": "ACTIVE",
                "created_by": key.created_by,
                "created_at": now,
            },
            prefix="k_",
        )
        sub_sql, sub_params = insert_statement(
            self._cat.ref("org_subscriptions"),
            self._cat.schema("org_subscriptions"),
            {
                "subscription_id": f"sub_{secrets.token_hex(8)}",
                "org_slug": org.org_slug,
                "plan_name": org.subscription_plan,
                "status": "ACTIVE",
                "daily_run_limit": org.daily_limit,
                "monthly_run_limit": org.monthly_limit,
                "concurrent_run_limit": org.concurrent_limit,
                "started_at": now,
                "created_at": now,
            },
            prefix="s_",
        )
        quota_sql, quota_params = insert_statement(
            self._cat.ref("org_usage_quotas"),
            self._cat.schema("org_usage_quotas"),
            {
                "org_slug": org.org_slug,
                "usage_date": today,
                "daily_runs": 0,
                "usage_month": today.replace(day=1),
                "monthly_runs": 0,
                "concurrent_runs": 0,
                "daily_limit": org.daily_limit,
                "monthly_limit": org.monthly_limit,
                "concurrent_limit": org.concurrent_limit,
                "updated_at": now,
            },
            prefix="q_",
        )
        extra_sql, extra_params = insert_statement(extra.ref, extra.schema, extra.row, prefix="m_")

        async def attempt() -> None:
            async with self._wh.transaction() as tx:
                if await tx.execute(merge_profile, profile_params) != 1:
                    raise ConflictError(f"organization {org.org_slug!r} already exists", code="org_exists")
                await tx.execute(key_sql, key_params)
                await tx.execute(sub_sql, sub_params)
                await tx.execute(quota_sql, quota_params)
                await tx.execute(extra_sql, extra_params)

        await with_retries(attempt, what="onboard", policy=self._retry)

    async def set_billing_export_table(self, org_slug: str, table: str | None) -> int:
        return await self._wh.execute(
            f"UPDATE {self._profiles} SET billing_export_table = @table, updated_at = CURRENT_TIMESTAMP() "
            "WHERE org_slug = @org_slug",
            {"org_slug": org_slug, "table": TypedParam("STRING", table)},
        )

    async def find_key(self, key_hash: str) -> dict[str, Any] | None:
        rows = await self._wh.query(
            f"""
            SELECT k.key_id, k.org_slug, k.expires_at, p.status AS org_status
            FROM {self._keys} AS k
            JOIN {self._profiles} AS p ON p.org_slug = k.org_slug
            WHERE k.key_hash = @key_hash AND k.status = 'ACTIVE'
            """,
            {"key_hash": key_hash},
        )
        return rows[0] if rows else None
