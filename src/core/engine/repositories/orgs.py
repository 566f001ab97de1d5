"""Organizations: profiles, their keys, subscription and quota rows (central tables).

Every statement on a central table is scoped by ``org_slug``, except the admin listing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from src.core.engine.base import RetryPolicy, TypedParam, Warehouse
from src.core.engine.catalog import CentralCatalog
from src.core.engine.rows import insert_statement, merge_row_sql, typed_params
from src.core.engine.schema import Schema
from src.core.engine.sql import TableRef
from src.core.errors import ConflictError, WarehouseNotFoundError


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
    name: str = "default"


@dataclass(frozen=True, slots=True)
class ExtraRow:
    """A row written with the org's rows (e.g. the org dataset's metadata row)."""

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
        return await self.get(org_slug) is not None

    async def get(self, org_slug: str) -> dict[str, Any] | None:
        rows = await self._query_central(
            f"""
            SELECT p.org_slug, p.company_name, p.admin_email, p.status, p.subscription_plan, p.org_dataset,
                   p.billing_export_table, p.billing_source_set_by, p.created_at, p.updated_at, p.suspended_at,
                   p.suspended_reason,
                   q.daily_limit, q.monthly_limit, q.concurrent_limit
            FROM {self._profiles} AS p
            LEFT JOIN {self._quotas} AS q ON q.org_slug = p.org_slug
            WHERE p.org_slug = @org_slug
            """,
            {"org_slug": org_slug},
        )
        return rows[0] if rows else None

    async def orgs_using_billing_table(self, table: str, *, other_than: str) -> list[str]:
        rows = await self._query_central(
            f"SELECT org_slug FROM {self._profiles} WHERE billing_export_table = @table AND org_slug != @org_slug",
            {"table": table, "org_slug": other_than},
        )
        return [str(r["org_slug"]) for r in rows]

    async def _query_central(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """A read of central tables; before bootstrap they do not exist, which reads as empty."""
        try:
            return await self._wh.query(sql, params)
        except WarehouseNotFoundError:
            return []

    async def onboard(self, org: NewOrg, key: NewKey, *, extra: ExtraRow, today: date) -> None:
        """Quota, subscription, key and metadata rows, then the profile — each one statement.

        The profile is written last, with a MERGE on ``org_slug``: it is what makes the org exist
        (keys only authenticate through it). Rows written before it are idempotent (MERGEs keyed by
        org that never overwrite) or compensated (the new key is revoked if the profile cannot be
        written), so a failure halfway leaves no usable half-org and a retry completes it. Of
        concurrent onboardings of one slug, on any number of instances, one profile MERGE inserts
        (concurrent MERGEs of one table conflict and the loser's retry matches the winner's row):
        that one sets the plan's limits, every other gets 409 and revokes its key.
        """
        now = datetime.now(UTC)
        run = self._wh.execute
        quota = {
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
        }
        subscription = {
            "subscription_id": f"sub_{secrets.token_hex(8)}",
            "org_slug": org.org_slug,
            "plan_name": org.subscription_plan,
            "status": "ACTIVE",
            "daily_run_limit": org.daily_limit,
            "monthly_run_limit": org.monthly_limit,
            "concurrent_run_limit": org.concurrent_limit,
            "started_at": now,
            "created_at": now,
        }
        key_row = {
            "key_id": key.key_id,
            "org_slug": org.org_slug,
            "key_hash": key.key_hash,
            "key_prefix": key.key_prefix,
            "name": key.name,
            "encrypted_key": key.encrypted_key,
            "kms_key_name": key.kms_key_name,
            "scopes": list(key.scopes),
            "status": "ACTIVE",
            "created_by": key.created_by,
            "created_at": now,
        }
        profile = {
            "org_slug": org.org_slug,
            "company_name": org.company_name,
            "admin_email": org.admin_email,
            "status": "ACTIVE",
            "subscription_plan": org.subscription_plan,
            "org_dataset": org.org_dataset,
            "billing_export_table": org.billing_export_table,
            "billing_source_set_by": "admin" if org.billing_export_table else None,
            "created_at": now,
            "updated_at": now,
        }
        if await self.exists(org.org_slug):
            raise ConflictError(f"organization {org.org_slug!r} already exists", code="org_exists")
        wrote_quota = await run(
            merge_row_sql(self._cat.ref("org_usage_quotas"), list(quota), keys=["org_slug"]),
            typed_params(self._cat.schema("org_usage_quotas"), quota),
        )
        wrote_plan = await run(
            merge_row_sql(self._cat.ref("org_subscriptions"), list(subscription), keys=["org_slug", "status"]),
            typed_params(self._cat.schema("org_subscriptions"), subscription),
        )
        await run(*insert_statement(self._cat.ref("org_api_keys"), self._cat.schema("org_api_keys"), key_row))
        try:
            await run(
                merge_row_sql(extra.ref, list(extra.row), keys=["org_slug"]), typed_params(extra.schema, extra.row)
            )
            created = await run(
                merge_row_sql(self._cat.ref("org_profiles"), list(profile), keys=["org_slug"]),
                typed_params(self._cat.schema("org_profiles"), profile),
            )
        except BaseException:
            await self._revoke_key(org.org_slug, key.key_id, "onboarding failed")
            raise
        if created != 1:
            await self._revoke_key(org.org_slug, key.key_id, "concurrent onboarding of the same organization")
            raise ConflictError(f"organization {org.org_slug!r} already exists", code="org_exists")
        # The winner's plan, whichever request wrote the quota and subscription rows first (a
        # loser, or an earlier attempt that failed halfway with another plan).
        if not (wrote_quota and wrote_plan):
            await self._set_plan_limits(org)

    async def _set_plan_limits(self, org: NewOrg) -> None:
        limits = {"org_slug": org.org_slug, "daily": org.daily_limit, "monthly": org.monthly_limit,
                  "concurrent": org.concurrent_limit}  # fmt: skip
        await self._wh.execute(
            f"""
            UPDATE {self._quotas}
            SET daily_limit = @daily, monthly_limit = @monthly, concurrent_limit = @concurrent
            WHERE org_slug = @org_slug
              AND (daily_limit != @daily OR monthly_limit != @monthly OR concurrent_limit != @concurrent)
            """,
            limits,
        )
        await self._wh.execute(
            f"""
            UPDATE {self._subs}
            SET plan_name = @plan, daily_run_limit = @daily, monthly_run_limit = @monthly,
                concurrent_run_limit = @concurrent
            WHERE org_slug = @org_slug AND status = 'ACTIVE'
              AND (plan_name != @plan OR daily_run_limit != @daily OR monthly_run_limit != @monthly
                   OR concurrent_run_limit != @concurrent)
            """,
            {**limits, "plan": org.subscription_plan},
        )

    async def _revoke_key(self, org_slug: str, key_id: str, reason: str) -> None:
        await self._wh.execute(
            f"UPDATE {self._keys} SET status = 'REVOKED', revoked_at = CURRENT_TIMESTAMP(), revoked_reason = @reason "
            "WHERE org_slug = @org_slug AND key_id = @key_id AND status = 'ACTIVE'",
            {"org_slug": org_slug, "key_id": key_id, "reason": reason},
        )

    async def set_billing_export_table(self, org_slug: str, table: str | None, *, set_by: str) -> int:
        return await self._wh.execute(
            f"UPDATE {self._profiles} SET billing_export_table = @table, billing_source_set_by = @set_by, "
            "updated_at = CURRENT_TIMESTAMP() WHERE org_slug = @org_slug",
            {
                "org_slug": org_slug,
                "table": TypedParam("STRING", table),
                "set_by": TypedParam("STRING", set_by if table else None),
            },
        )

    # --- lifecycle (admin) -----------------------------------------------------------------
    async def list_orgs(
        self, *, status: str | None, limit: int, offset: int, after: tuple[datetime, str] | None = None
    ) -> list[dict[str, Any]]:
        """Oldest first; ``after`` = (created_at, slug) of the last org of the previous page."""
        return await self._query_central(
            f"""
            SELECT p.org_slug, p.company_name, p.admin_email, p.status, p.subscription_plan, p.org_dataset,
                   p.created_at, p.suspended_at, p.suspended_reason
            FROM {self._profiles} AS p
            WHERE (@status IS NULL OR p.status = @status)
              AND (@after_at IS NULL OR p.created_at > @after_at
                   OR (p.created_at = @after_at AND p.org_slug > @after_id))
            ORDER BY p.created_at, p.org_slug
            LIMIT @limit OFFSET @offset
            """,
            {
                "after_at": TypedParam("TIMESTAMP", after[0] if after else None),
                "after_id": TypedParam("STRING", after[1] if after else None),
                "status": TypedParam("STRING", status),
                "limit": TypedParam("INT64", limit),
                "offset": TypedParam("INT64", offset),
            },
        )

    async def set_status(self, org_slug: str, *, status: str, reason: str | None) -> int:
        """Guarded: only a change of status counts (suspending a suspended org changes nothing)."""
        return await self._wh.execute(
            f"""
            UPDATE {self._profiles}
            SET status = @status,
                suspended_at = IF(@status = 'SUSPENDED', CURRENT_TIMESTAMP(), NULL),
                suspended_reason = IF(@status = 'SUSPENDED', @reason, NULL),
                updated_at = CURRENT_TIMESTAMP()
            WHERE org_slug = @org_slug AND status != @status
            """,
            {"org_slug": org_slug, "status": status, "reason": TypedParam("STRING", reason)},
        )

    async def change_plan(self, org_slug: str, *, plan: str, daily: int, monthly: int, concurrent: int) -> None:
        """End the active subscription, start the new one, then point the profile at it."""
        now = datetime.now(UTC)
        await self._wh.execute(
            f"UPDATE {self._subs} SET status = 'ENDED', ended_at = @now "
            "WHERE org_slug = @org_slug AND status = 'ACTIVE'",
            {"org_slug": org_slug, "now": TypedParam("TIMESTAMP", now)},
        )
        await self._wh.execute(
            *insert_statement(
                self._cat.ref("org_subscriptions"),
                self._cat.schema("org_subscriptions"),
                {
                    "subscription_id": f"sub_{secrets.token_hex(8)}",
                    "org_slug": org_slug,
                    "plan_name": plan,
                    "status": "ACTIVE",
                    "daily_run_limit": daily,
                    "monthly_run_limit": monthly,
                    "concurrent_run_limit": concurrent,
                    "started_at": now,
                    "created_at": now,
                },
            )
        )
        await self._wh.execute(
            f"UPDATE {self._profiles} SET subscription_plan = @plan, updated_at = CURRENT_TIMESTAMP() "
            "WHERE org_slug = @org_slug",
            {"org_slug": org_slug, "plan": plan},
        )
