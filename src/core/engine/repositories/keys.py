"""API keys of organizations: lookup by hash, issue, supersede (rotation grace), revoke, list.

Never selects the key copy or the hash back out for a listing. Every statement is scoped by
``org_slug`` except the lookup by hash (which is how the org is found).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from src.core.engine.base import TypedParam, Warehouse
from src.core.engine.catalog import CentralCatalog
from src.core.engine.rows import insert_statement, typed_params
from src.core.errors import WarehouseNotFoundError

LISTED = (
    "key_id, name, key_prefix, status, scopes, created_at, created_by, last_used_at, expires_at, revoked_at, "
    "revoked_reason, rotated_from_key_id, replaced_by_key_id"
)


# A key that still authenticates: not expired (a key in its rotation grace period still counts).
_USABLE = "AND ({t}.expires_at IS NULL OR {t}.expires_at > CURRENT_TIMESTAMP())"


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
                SELECT k.key_id, k.org_slug, k.expires_at, k.scopes, k.replaced_by_key_id, p.status AS org_status
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

    async def insert_named(self, row: dict[str, Any], *, limit: int) -> bool:
        """Insert a new named key only if no usable key of the org has its name and the org holds
        fewer than ``limit`` usable keys: ONE MERGE (mutating DML: concurrent ones on the table
        conflict and the loser's retry sees the winner's row), so two instances creating keys at once
        can neither both take a name nor both take the last place. True if inserted."""
        return await self._merge_new_key(
            row,
            on="t.org_slug = s.org_slug AND t.name = s.name",
            extra_guard=f"""(SELECT COUNT(*) FROM {self._keys} AS k
                 WHERE k.org_slug = @r_org_slug AND k.status = 'ACTIVE' {_USABLE.format(t="k")}) < @limit""",
            params={"limit": TypedParam("INT64", limit)},
        )

    async def insert_rotation(self, row: dict[str, Any]) -> bool:
        """Insert the replacement of ``row['rotated_from_key_id']`` only if that key has no usable
        replacement yet: ONE MERGE, so of concurrent rotations of one key exactly one gets a new key."""
        return await self._merge_new_key(
            row, on="t.org_slug = s.org_slug AND t.rotated_from_key_id = s.rotated_from_key_id"
        )

    async def _merge_new_key(
        self, row: dict[str, Any], *, on: str, extra_guard: str = "TRUE", params: dict[str, Any] | None = None
    ) -> bool:
        schema = self._cat.schema("org_api_keys")
        bound: dict[str, Any] = {**typed_params(schema, row, prefix="r_"), **(params or {})}
        columns = list(row)
        source = ", ".join(f"@r_{c} AS {c}" for c in columns)
        sql = f"""
            MERGE {self._keys} AS t
            USING (SELECT {source} FROM (SELECT 1) WHERE {extra_guard}) AS s
            ON {on} AND t.status = 'ACTIVE' {_USABLE.format(t="t")}
            WHEN NOT MATCHED THEN INSERT ({", ".join(columns)}) VALUES ({", ".join(f"s.{c}" for c in columns)})
        """
        return await self._wh.execute(sql, bound) == 1

    async def get(self, org_slug: str, key_id: str) -> dict[str, Any] | None:
        rows = await self._wh.query(
            f"SELECT {LISTED} FROM {self._keys} WHERE org_slug = @org_slug AND key_id = @key_id",
            {"org_slug": org_slug, "key_id": key_id},
        )
        return rows[0] if rows else None

    async def active(self, org_slug: str) -> list[dict[str, Any]]:
        """The org's ACTIVE rows (expired ones included: they are still rows to count and name)."""
        return await self._wh.query(
            f"SELECT {LISTED} FROM {self._keys} WHERE org_slug = @org_slug AND status = 'ACTIVE' "
            "ORDER BY created_at, key_id",
            {"org_slug": org_slug},
        )

    async def supersede(self, org_slug: str, key_id: str, *, replaced_by: str, expires_at: datetime) -> int:
        """A rotation's grace period: the key works until ``expires_at`` (never later than an expiry
        it already had) and is marked replaced. Guarded: only an ACTIVE, not yet replaced key."""
        return await self._wh.execute(
            f"""
            UPDATE {self._keys}
            SET expires_at = IF(expires_at IS NULL OR expires_at > @at, @at, expires_at),
                replaced_by_key_id = @replaced_by, revoked_reason = 'rotated (grace period)'
            WHERE org_slug = @org_slug AND key_id = @key_id AND status = 'ACTIVE' AND replaced_by_key_id IS NULL
            """,
            {
                "org_slug": org_slug,
                "key_id": key_id,
                "replaced_by": replaced_by,
                "at": TypedParam("TIMESTAMP", expires_at),
            },
        )

    async def revoke(
        self,
        org_slug: str,
        key_id: str,
        *,
        reason: str,
        replaced_by: str | None = None,
        require_one_of: list[str] | None = None,
    ) -> int:
        """Revoke one ACTIVE key. With ``require_one_of``, only while at least one of those other keys
        is still ACTIVE, unexpiring and not replaced (so the org keeps a working full key even when
        two revocations race: the second re-checks in the same statement)."""
        guard = ""
        params: dict[str, Any] = {
            "org_slug": org_slug,
            "key_id": key_id,
            "reason": reason,
            "replaced_by": TypedParam("STRING", replaced_by),
        }
        if require_one_of is not None:
            guard = f"""
              AND EXISTS (
                SELECT 1 FROM {self._keys} AS other
                WHERE other.org_slug = @org_slug AND other.key_id IN UNNEST(@others) AND other.status = 'ACTIVE'
                  AND other.expires_at IS NULL AND other.replaced_by_key_id IS NULL)"""
            params["others"] = TypedParam("ARRAY<STRING>", require_one_of)
        return await self._wh.execute(
            f"""
            UPDATE {self._keys}
            SET status = 'REVOKED', revoked_at = CURRENT_TIMESTAMP(), revoked_reason = @reason,
                replaced_by_key_id = IFNULL(@replaced_by, replaced_by_key_id)
            WHERE org_slug = @org_slug AND key_id = @key_id AND status = 'ACTIVE'{guard}
            """,
            params,
        )

    async def list(
        self, org_slug: str, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; ``after`` = (created_at, key_id) of the last row of the previous page."""
        params: dict[str, Any] = {"org_slug": org_slug, "limit": TypedParam("INT64", limit)}
        where = ""
        if after is not None:
            where = "AND (created_at < @after_at OR (created_at = @after_at AND key_id < @after_id))"
            params.update(after_at=TypedParam("TIMESTAMP", after[0]), after_id=after[1])
        return await self._wh.query(
            f"""
            SELECT {LISTED}
            FROM {self._keys}
            WHERE org_slug = @org_slug {where}
            ORDER BY created_at DESC, key_id DESC
            LIMIT @limit
            """,
            params,
        )

    async def touch_many(self, keys: Sequence[tuple[str, str]]) -> int:
        """``last_used_at`` = now for these (org, key id) pairs: one UPDATE for all of them."""
        if not keys:
            return 0
        return await self._wh.execute(
            f"""
            UPDATE {self._keys} SET last_used_at = @now
            WHERE CONCAT(org_slug, '/', key_id) IN UNNEST(@keys)
            """,
            {
                "keys": TypedParam("ARRAY<STRING>", [f"{org}/{key}" for org, key in keys]),
                "now": TypedParam("TIMESTAMP", datetime.now(UTC)),
            },
        )
