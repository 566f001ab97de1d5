"""The durable work queue (``org_pipeline_execution_queue``): leases, claims and outcomes.

An item is owned by whoever's guarded claim changed it (affected rows == 1): ``claim`` takes a
waiting item whose time has come, or a RUNNING item whose lease has expired (its worker died), and
writes the new owner and lease expiry in the same statement. Every later write of the attempt
(``renew``, ``finish``) is guarded by ``state = 'RUNNING' AND lease_owner = @owner``, so a worker
that lost its lease can no longer change the item. States: see ``src/core/services/scheduler.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from src.core.engine.base import RetryPolicy, TypedParam, Warehouse, with_retries
from src.core.engine.catalog import CentralCatalog
from src.core.engine.rows import merge_row_sql, typed_params

ITEM_COLUMNS = (
    "queue_item_id, org_slug, schedule_id, pipeline_path, parameters, due_time, state, priority, attempts, "
    "max_attempts, lease_owner, lease_expires_at, next_attempt_at, last_error, pipeline_logging_id, created_at, "
    "updated_at, completed_at"
)
WAITING = ("QUEUED", "RETRY")


class QueueRepository:
    def __init__(self, warehouse: Warehouse, catalog: CentralCatalog, *, retry: RetryPolicy) -> None:
        self._wh = warehouse
        self._cat = catalog
        self._ref = catalog.ref("org_pipeline_execution_queue")
        self._queue = self._ref.sql
        self._retry = retry

    async def _execute(self, sql: str, params: dict[str, Any], what: str) -> int:
        return await with_retries(lambda: self._wh.execute(sql, params), what=what, policy=self._retry)

    async def enqueue(self, row: dict[str, Any]) -> bool:
        """Insert the item unless one with its (deterministic) id exists. True if inserted now."""
        sql = merge_row_sql(self._ref, list(row), keys=["queue_item_id"])
        params = typed_params(self._cat.schema("org_pipeline_execution_queue"), row)
        return await self._execute(sql, dict(params), "enqueue") == 1

    async def candidates(self, now: datetime, limit: int) -> list[dict[str, Any]]:
        """Items a worker may try to claim now (a hint only: the claim decides), best first."""
        return await self._wh.query(
            f"""
            SELECT queue_item_id, IFNULL(priority, 0) AS priority FROM {self._queue}
            WHERE (state IN ('QUEUED', 'RETRY') AND IFNULL(next_attempt_at, created_at) <= @now)
               OR (state = 'RUNNING' AND lease_expires_at < @now)
            ORDER BY priority DESC, IFNULL(next_attempt_at, created_at), queue_item_id
            LIMIT @limit
            """,
            {"now": TypedParam("TIMESTAMP", now), "limit": TypedParam("INT64", limit)},
        )

    async def claim(self, queue_item_id: str, *, owner: str, now: datetime, lease_until: datetime) -> bool:
        """One guarded UPDATE: True if this call took the item (and started its next attempt)."""
        changed = await self._execute(
            f"""
            UPDATE {self._queue}
            SET state = 'RUNNING', lease_owner = @owner, lease_expires_at = @lease_until,
                attempts = IFNULL(attempts, 0) + 1, updated_at = @now
            WHERE queue_item_id = @id
              AND ((state IN ('QUEUED', 'RETRY') AND IFNULL(next_attempt_at, created_at) <= @now)
                   OR (state = 'RUNNING' AND lease_expires_at < @now))
            """,
            {
                "id": queue_item_id,
                "owner": owner,
                "now": TypedParam("TIMESTAMP", now),
                "lease_until": TypedParam("TIMESTAMP", lease_until),
            },
            "claim queue item",
        )
        return changed == 1

    async def claimed(self, queue_item_id: str, owner: str) -> dict[str, Any] | None:
        """The item this owner holds, with what decides its attempt: whether its schedule is still
        active (NULL: deleted), and a run of an earlier attempt that COMPLETED or is still active."""
        runs = self._cat.ref("org_meta_pipeline_runs").sql
        configs = self._cat.ref("org_pipeline_configs").sql
        item_runs = f"FROM {runs} AS r WHERE r.org_slug = q.org_slug AND r.queue_item_id = q.queue_item_id"
        rows = await self._wh.query(
            f"""
            SELECT {", ".join(f"q.{c.strip()}" for c in ITEM_COLUMNS.split(","))},
                   (SELECT c.is_active FROM {configs} AS c
                    WHERE c.org_slug = q.org_slug AND c.schedule_id = q.schedule_id) AS schedule_active,
                   (SELECT MAX(r.pipeline_logging_id) {item_runs} AND r.status = 'COMPLETED') AS completed_run_id,
                   (SELECT MAX(r.pipeline_logging_id) {item_runs} AND r.status IN ('PENDING', 'RUNNING'))
                     AS active_run_id
            FROM {self._queue} AS q
            WHERE q.queue_item_id = @id AND q.lease_owner = @owner AND q.state = 'RUNNING'
            """,
            {"id": queue_item_id, "owner": owner},
        )
        return rows[0] if rows else None

    async def renew(self, queue_item_id: str, *, owner: str, lease_until: datetime) -> bool:
        changed = await self._execute(
            f"""
            UPDATE {self._queue} SET lease_expires_at = @lease_until
            WHERE queue_item_id = @id AND state = 'RUNNING' AND lease_owner = @owner
            """,
            {"id": queue_item_id, "owner": owner, "lease_until": TypedParam("TIMESTAMP", lease_until)},
            "renew lease",
        )
        return changed == 1

    async def finish(
        self,
        queue_item_id: str,
        *,
        owner: str,
        state: str,
        error: str | None,
        run_id: str | None,
        next_attempt_at: datetime | None = None,
        refund_attempt: bool = False,
    ) -> bool:
        """End the attempt (RUNNING -> COMPLETED | RETRY | FAILED), only while holding the lease."""
        changed = await self._execute(
            f"""
            UPDATE {self._queue}
            SET state = @state, lease_expires_at = NULL, next_attempt_at = @next_attempt_at,
                attempts = IF(@refund, GREATEST(IFNULL(attempts, 0) - 1, 0), attempts),
                last_error = @error, pipeline_logging_id = IFNULL(@run_id, pipeline_logging_id),
                updated_at = CURRENT_TIMESTAMP(),
                completed_at = IF(@state IN ('COMPLETED', 'FAILED'), CURRENT_TIMESTAMP(), NULL)
            WHERE queue_item_id = @id AND state = 'RUNNING' AND lease_owner = @owner
            """,
            {
                "id": queue_item_id,
                "owner": owner,
                "state": state,
                "error": TypedParam("STRING", error[:4000] if error else None),
                "run_id": TypedParam("STRING", run_id),
                "next_attempt_at": TypedParam("TIMESTAMP", next_attempt_at),
                "refund": TypedParam("BOOL", refund_attempt),
            },
            "finish queue item",
        )
        return changed == 1

    async def cancel_waiting(self, org_slug: str, schedule_id: str, reason: str) -> int:
        """QUEUED | RETRY -> CANCELLED for a schedule that was paused or deleted."""
        return await self._execute(
            f"""
            UPDATE {self._queue}
            SET state = 'CANCELLED', last_error = @reason, updated_at = CURRENT_TIMESTAMP(),
                completed_at = CURRENT_TIMESTAMP()
            WHERE org_slug = @org_slug AND schedule_id = @schedule_id AND state IN ('QUEUED', 'RETRY')
            """,
            {"org_slug": org_slug, "schedule_id": schedule_id, "reason": reason},
            "cancel waiting items",
        )

    async def for_schedule(
        self, org_slug: str, schedule_id: str, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[dict[str, Any]]:
        """Newest due time first; ``after`` = (due_time, id) of the last item of the previous page."""
        return await self._wh.query(
            f"""
            SELECT {ITEM_COLUMNS} FROM {self._queue}
            WHERE org_slug = @org_slug AND schedule_id = @schedule_id
              AND (@after_at IS NULL OR due_time < @after_at OR (due_time = @after_at AND queue_item_id < @after_id))
            ORDER BY due_time DESC, queue_item_id DESC
            LIMIT @limit
            """,
            {
                "org_slug": org_slug,
                "schedule_id": schedule_id,
                "limit": TypedParam("INT64", limit),
                "after_at": TypedParam("TIMESTAMP", after[0] if after else None),
                "after_id": TypedParam("STRING", after[1] if after else None),
            },
        )

    async def depth(self, now: datetime) -> tuple[dict[str, int], float | None]:
        """Items per state, and the age in seconds of the oldest waiting (QUEUED or RETRY) item."""
        rows = await self._wh.query(
            f"""
            SELECT state, COUNT(*) AS n,
                   MIN(IF(state IN ('QUEUED', 'RETRY'), created_at, NULL)) AS oldest_waiting
            FROM {self._queue}
            GROUP BY state
            """,
            {},
        )
        counts = {str(r["state"]): int(r["n"]) for r in rows}
        oldest = [r["oldest_waiting"] for r in rows if r["oldest_waiting"] is not None]
        age = (now - min(oldest)).total_seconds() if oldest else None
        return counts, age
