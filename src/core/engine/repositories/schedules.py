"""Pipeline schedules (``org_pipeline_configs``) and their due times (``org_scheduled_pipeline_runs``).

Every statement is scoped by ``org_slug`` (the scheduler's scan of due schedules excepted). The
trigger's two writes are guarded, so any number of instances may trigger at once:

* ``record_due`` — one MERGE keyed by (``schedule_id``, ``due_time``): a due time is recorded once;
* ``advance`` — ``UPDATE … SET next_run_time = @next WHERE next_run_time = @seen``: the schedule
  moves on once, whoever read it first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from src.core.engine.base import RetryPolicy, TypedParam, Warehouse, with_retries
from src.core.engine.catalog import CentralCatalog
from src.core.engine.rows import insert_statement, merge_row_sql, typed_params

SCHEDULE_COLUMNS = (
    "schedule_id, org_slug, pipeline_path, cron_expression, timezone, parameters, is_active, max_attempts, "
    "next_run_time, last_run_time, last_run_status, last_pipeline_logging_id, description, created_at, updated_at"
)
# What a caller may change with ``update`` (values always bound).
UPDATABLE = frozenset(
    {"cron_expression", "timezone", "parameters", "is_active", "max_attempts", "description", "next_run_time"}
)


class ScheduleRepository:
    def __init__(self, warehouse: Warehouse, catalog: CentralCatalog, *, retry: RetryPolicy) -> None:
        self._wh = warehouse
        self._cat = catalog
        self._configs_ref = catalog.ref("org_pipeline_configs")
        self._configs = self._configs_ref.sql
        self._due_ref = catalog.ref("org_scheduled_pipeline_runs")
        self._retry = retry

    async def _execute(self, sql: str, params: dict[str, Any], what: str) -> int:
        return await with_retries(lambda: self._wh.execute(sql, params), what=what, policy=self._retry)

    # --- the org's schedules -------------------------------------------------------------------
    async def insert(self, row: dict[str, Any]) -> None:
        sql, params = insert_statement(self._configs_ref, self._cat.schema("org_pipeline_configs"), row)
        await self._execute(sql, dict(params), "insert schedule")

    async def get(self, org_slug: str, schedule_id: str) -> dict[str, Any] | None:
        rows = await self._wh.query(
            f"SELECT {SCHEDULE_COLUMNS} FROM {self._configs} WHERE org_slug = @org_slug AND schedule_id = @id",
            {"org_slug": org_slug, "id": schedule_id},
        )
        return rows[0] if rows else None

    async def list_for_org(
        self, org_slug: str, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[dict[str, Any]]:
        """Oldest first; ``after`` = (created_at, id) of the last schedule of the previous page."""
        return await self._wh.query(
            f"""
            SELECT {SCHEDULE_COLUMNS} FROM {self._configs}
            WHERE org_slug = @org_slug
              AND (@after_at IS NULL OR created_at > @after_at OR (created_at = @after_at AND schedule_id > @after_id))
            ORDER BY created_at, schedule_id
            LIMIT @limit
            """,
            {
                "org_slug": org_slug,
                "limit": TypedParam("INT64", limit),
                "after_at": TypedParam("TIMESTAMP", after[0] if after else None),
                "after_id": TypedParam("STRING", after[1] if after else None),
            },
        )

    async def update(self, org_slug: str, schedule_id: str, changes: dict[str, Any]) -> int:
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {', '.join(sorted(unknown))}")
        params: dict[str, Any] = dict(typed_params(self._cat.schema("org_pipeline_configs"), changes, prefix="c_"))
        assignments = ", ".join(f"{column} = @c_{column}" for column in changes)
        params.update(org_slug=org_slug, id=schedule_id)
        return await self._execute(
            f"UPDATE {self._configs} SET {assignments}, updated_at = CURRENT_TIMESTAMP() "
            "WHERE org_slug = @org_slug AND schedule_id = @id",
            params,
            "update schedule",
        )

    async def delete(self, org_slug: str, schedule_id: str) -> int:
        return await self._execute(
            f"DELETE FROM {self._configs} WHERE org_slug = @org_slug AND schedule_id = @id",
            {"org_slug": org_slug, "id": schedule_id},
            "delete schedule",
        )

    async def record_outcome(self, org_slug: str, schedule_id: str, *, status: str, run_id: str | None) -> int:
        """What the schedule's latest attempt came to (shown in the org's schedule list)."""
        return await self._execute(
            f"""
            UPDATE {self._configs}
            SET last_run_status = @status, last_pipeline_logging_id = IFNULL(@run_id, last_pipeline_logging_id),
                updated_at = CURRENT_TIMESTAMP()
            WHERE org_slug = @org_slug AND schedule_id = @id
            """,
            {"org_slug": org_slug, "id": schedule_id, "status": status, "run_id": TypedParam("STRING", run_id)},
            "record schedule outcome",
        )

    # --- the trigger ---------------------------------------------------------------------------
    async def due(self, now: datetime, limit: int) -> list[dict[str, Any]]:
        """Active schedules of every org whose next due time has come (oldest first)."""
        return await self._wh.query(
            f"""
            SELECT {SCHEDULE_COLUMNS} FROM {self._configs}
            WHERE is_active AND next_run_time IS NOT NULL AND next_run_time <= @now
            ORDER BY next_run_time, schedule_id
            LIMIT @limit
            """,
            {"now": TypedParam("TIMESTAMP", now), "limit": TypedParam("INT64", limit)},
        )

    async def record_due(self, row: dict[str, Any]) -> bool:
        """Record a due time once: a MERGE keyed by (schedule_id, due_time). True if recorded now."""
        sql = merge_row_sql(self._due_ref, list(row), keys=["schedule_id", "due_time"])
        params = typed_params(self._cat.schema("org_scheduled_pipeline_runs"), row)
        return await self._execute(sql, dict(params), "record due time") == 1

    async def advance(
        self, org_slug: str, schedule_id: str, *, seen: datetime, due: datetime, next_time: datetime
    ) -> bool:
        """Move the schedule to its next due time, only if nobody did since it was read."""
        return (
            await self._execute(
                f"""
                UPDATE {self._configs}
                SET next_run_time = @next, last_run_time = @due, updated_at = CURRENT_TIMESTAMP()
                WHERE org_slug = @org_slug AND schedule_id = @id AND is_active AND next_run_time = @seen
                """,
                {
                    "org_slug": org_slug,
                    "id": schedule_id,
                    "seen": TypedParam("TIMESTAMP", seen),
                    "due": TypedParam("TIMESTAMP", due),
                    "next": TypedParam("TIMESTAMP", next_time),
                },
                "advance schedule",
            )
            == 1
        )

    async def set_due_status(self, org_slug: str, queue_item_id: str, *, status: str, run_id: str | None) -> int:
        return await self._execute(
            f"""
            UPDATE {self._due_ref.sql}
            SET status = @status, pipeline_logging_id = IFNULL(@run_id, pipeline_logging_id),
                updated_at = CURRENT_TIMESTAMP()
            WHERE org_slug = @org_slug AND queue_item_id = @item
            """,
            {"org_slug": org_slug, "item": queue_item_id, "status": status, "run_id": TypedParam("STRING", run_id)},
            "set due status",
        )

    # --- admin -------------------------------------------------------------------------------
    async def counts(self) -> dict[str, Any]:
        rows = await self._wh.query(
            f"""
            SELECT COUNTIF(is_active) AS active, COUNTIF(NOT is_active) AS paused,
                   (SELECT MAX(created_at) FROM {self._due_ref.sql}) AS last_enqueued_at
            FROM {self._configs}
            """,
            {},
        )
        return rows[0] if rows else {"active": 0, "paused": 0, "last_enqueued_at": None}
