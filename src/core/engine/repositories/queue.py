"""The durable work queue (``org_pipeline_execution_queue``): leases, claims and outcomes.

Every write is one statement for many items (BigQuery runs 2 mutating DML statements per table at a
time): ``enqueue`` appends a trigger's items in one INSERT; ``claim`` takes up to N items in one
guarded UPDATE — waiting items whose time has come, or RUNNING items whose lease expired (their
worker died) — writing the claimer's owner token and lease expiry, and ``claimed`` reads back what
it got; ``renew`` extends the leases of all the items an instance holds; ``finish`` ends the
attempts of many items. Every write of an attempt is guarded by ``state = 'RUNNING' AND lease_owner
= @owner``, so a worker that lost its lease can no longer change the item. States: see
``src/core/services/scheduler/worker.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from src.core.engine.base import RetryPolicy, TypedParam, Warehouse, with_retries
from src.core.engine.catalog import CentralCatalog
from src.core.engine.rows import insert_rows_sql, rows_params

ITEM_COLUMNS = (
    "queue_item_id, org_slug, schedule_id, pipeline_path, parameters, due_time, state, priority, attempts, "
    "requeues, max_attempts, lease_owner, lease_expires_at, next_attempt_at, last_error, pipeline_logging_id, "
    "created_at, updated_at, completed_at"
)
_CLAIMABLE = """((state IN ('QUEUED', 'RETRY') AND IFNULL(next_attempt_at, created_at) <= @now)
               OR (state = 'RUNNING' AND lease_expires_at < @now))"""


@dataclass(frozen=True, slots=True)
class Finish:
    """How one attempt ended, for ``finish``."""

    queue_item_id: str
    owner: str
    state: str  # COMPLETED | RETRY | FAILED | CANCELLED
    error: str | None = None
    run_id: str | None = None
    next_attempt_at: datetime | None = None
    refund_attempt: bool = False  # the attempt did not count (it never started a run)
    requeued: bool = False  # a quota refused it: one more requeue


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

    async def enqueue(self, rows: list[dict[str, Any]]) -> None:
        """Append items (one INSERT); an item whose (deterministic) id exists is left out."""
        if rows:
            sql = insert_rows_sql(self._ref, list(rows[0]), len(rows), key="queue_item_id")
            params = rows_params(self._cat.schema("org_pipeline_execution_queue"), rows)
            await self._execute(sql, dict(params), "enqueue")

    async def claim(self, *, owner: str, now: datetime, lease_until: datetime, limit: int) -> list[dict[str, Any]]:
        """Take up to ``limit`` claimable items, best first, in one guarded UPDATE (their next
        attempt starts); then the items this owner holds, with what decides each attempt."""
        await self._execute(
            f"""
            UPDATE {self._queue}
            SET state = 'RUNNING', lease_owner = @owner, lease_expires_at = @lease_until,
                attempts = IFNULL(attempts, 0) + 1, updated_at = @now
            WHERE {_CLAIMABLE}
              AND queue_item_id IN (
                SELECT queue_item_id FROM {self._queue}
                WHERE {_CLAIMABLE}
                ORDER BY IFNULL(priority, 0) DESC, IFNULL(next_attempt_at, created_at), queue_item_id
                LIMIT @limit)
            """,
            {
                "owner": owner,
                "now": TypedParam("TIMESTAMP", now),
                "lease_until": TypedParam("TIMESTAMP", lease_until),
                "limit": TypedParam("INT64", limit),
            },
            "claim queue items",
        )
        return await self.claimed(owner)

    async def claimed(self, owner: str) -> list[dict[str, Any]]:
        """The items this owner holds, with what decides their attempts: whether the schedule is
        still active (NULL: deleted), and a run of an earlier attempt that COMPLETED or is active."""
        runs = self._cat.ref("org_meta_pipeline_runs").sql
        configs = self._cat.ref("org_pipeline_configs").sql
        item_runs = f"FROM {runs} AS r WHERE r.org_slug = q.org_slug AND r.queue_item_id = q.queue_item_id"
        return await self._wh.query(
            f"""
            SELECT {", ".join(f"q.{c.strip()}" for c in ITEM_COLUMNS.split(","))},
                   (SELECT c.is_active FROM {configs} AS c
                    WHERE c.org_slug = q.org_slug AND c.schedule_id = q.schedule_id) AS schedule_active,
                   (SELECT MAX(r.pipeline_logging_id) {item_runs} AND r.status = 'COMPLETED') AS completed_run_id,
                   (SELECT MAX(r.pipeline_logging_id) {item_runs} AND r.status IN ('PENDING', 'RUNNING'))
                     AS active_run_id
            FROM {self._queue} AS q
            WHERE q.lease_owner = @owner AND q.state = 'RUNNING'
            ORDER BY IFNULL(q.priority, 0) DESC, q.due_time, q.queue_item_id
            """,
            {"owner": owner},
        )

    async def renew(self, owners: list[str], *, lease_until: datetime) -> int:
        """Extend the lease of every item these owners hold (one UPDATE per instance and interval)."""
        if not owners:
            return 0
        return await self._execute(
            f"""
            UPDATE {self._queue} SET lease_expires_at = @lease_until
            WHERE state = 'RUNNING' AND lease_owner IN UNNEST(@owners)
            """,
            {"owners": TypedParam("ARRAY<STRING>", owners), "lease_until": TypedParam("TIMESTAMP", lease_until)},
            "renew leases",
        )

    async def finish(self, finishes: list[Finish]) -> set[str]:
        """End many attempts in one UPDATE, each only while its owner holds the item; the ids of
        the items that ended (the others changed hands: their lease had expired)."""
        if not finishes:
            return set()
        params: dict[str, Any] = {"ids": TypedParam("ARRAY<STRING>", [f.queue_item_id for f in finishes])}
        for i, f in enumerate(finishes):
            params.update(
                {
                    f"i{i}": f.queue_item_id,
                    f"o{i}": f.owner,
                    f"s{i}": f.state,
                    f"e{i}": TypedParam("STRING", f.error[:4000] if f.error else None),
                    f"r{i}": TypedParam("STRING", f.run_id),
                    f"n{i}": TypedParam("TIMESTAMP", f.next_attempt_at),
                    f"f{i}": TypedParam("BOOL", f.refund_attempt),
                    f"q{i}": TypedParam("BOOL", f.requeued),
                }
            )

        def case(value: str) -> str:
            """Per item: the bound value ``@{value}{i}`` of item ``i``."""
            return (
                "CASE queue_item_id " + " ".join(f"WHEN @i{i} THEN @{value}{i}" for i in range(len(finishes))) + " END"
            )

        new_state = case("s")
        await self._execute(
            f"""
            UPDATE {self._queue}
            SET state = {new_state}, lease_expires_at = NULL, next_attempt_at = {case("n")},
                attempts = IF({case("f")}, GREATEST(IFNULL(attempts, 0) - 1, 0), attempts),
                requeues = IFNULL(requeues, 0) + IF({case("q")}, 1, 0),
                last_error = {case("e")}, pipeline_logging_id = IFNULL({case("r")}, pipeline_logging_id),
                updated_at = CURRENT_TIMESTAMP(),
                completed_at = IF({new_state} IN ('COMPLETED', 'FAILED', 'CANCELLED'), CURRENT_TIMESTAMP(), NULL)
            WHERE queue_item_id IN UNNEST(@ids) AND state = 'RUNNING' AND lease_owner = {case("o")}
            """,
            params,
            "finish queue items",
        )
        rows = await self._wh.query(
            f"SELECT queue_item_id, state, lease_owner FROM {self._queue} WHERE queue_item_id IN UNNEST(@ids)",
            {"ids": params["ids"]},
        )
        wanted = {f.queue_item_id: f for f in finishes}
        return {
            r["queue_item_id"]
            for r in rows
            if r["lease_owner"] == wanted[r["queue_item_id"]].owner and r["state"] == wanted[r["queue_item_id"]].state
        }

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
