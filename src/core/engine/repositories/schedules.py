"""Pipeline schedules (``org_pipeline_configs``) and their due times (``org_scheduled_pipeline_runs``).

Every statement is scoped by ``org_slug`` (the trigger's scans of every org excepted). A trigger
call writes one mutating statement for all the schedules it found due, whatever their number:

* ``claim`` — one guarded UPDATE moves each schedule on (``next_run_time``) only where it still
  reads what the trigger saw, and stamps it with the trigger's token; ``claimed`` reads back which
  ones this trigger got. Any number of triggers may run at once: a due time is claimed once;
* ``record_due`` — the claimed due times, appended (one INSERT, rows keyed by a deterministic id);
* ``unqueued_claims`` — claims whose queue item never appeared (the claimer died in between), for
  the next trigger to enqueue.

What a schedule's latest due time came to (``last_run_status``) is read from its queue items, not
written back here: an outcome costs no statement on this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from src.core.engine.base import RetryPolicy, TypedParam, Warehouse, with_retries
from src.core.engine.catalog import CentralCatalog
from src.core.engine.rows import insert_rows_sql, insert_statement, rows_params, typed_params

SCHEDULE_COLUMNS = (
    "schedule_id, org_slug, pipeline_path, cron_expression, timezone, parameters, is_active, max_attempts, "
    "next_run_time, last_run_time, description, created_at, updated_at"
)
# What a caller may change with ``update`` (values always bound).
UPDATABLE = frozenset(
    {"cron_expression", "timezone", "parameters", "is_active", "max_attempts", "description", "next_run_time"}
)


@dataclass(frozen=True, slots=True)
class Claim:
    """A due schedule as the trigger read it, and where it moves on to."""

    schedule_id: str
    seen: datetime  # its next_run_time when read
    due: datetime  # the due time enqueued (the latest one that has come)
    next_time: datetime


class ScheduleRepository:
    def __init__(self, warehouse: Warehouse, catalog: CentralCatalog, *, retry: RetryPolicy) -> None:
        self._wh = warehouse
        self._cat = catalog
        self._configs_ref = catalog.ref("org_pipeline_configs")
        self._configs = self._configs_ref.sql
        self._due_ref = catalog.ref("org_scheduled_pipeline_runs")
        self._queue = catalog.ref("org_pipeline_execution_queue").sql
        self._retry = retry

    async def _execute(self, sql: str, params: dict[str, Any], what: str) -> int:
        return await with_retries(lambda: self._wh.execute(sql, params), what=what, policy=self._retry)

    # --- the org's schedules -------------------------------------------------------------------
    async def insert(self, row: dict[str, Any]) -> None:
        sql, params = insert_statement(self._configs_ref, self._cat.schema("org_pipeline_configs"), row)
        await self._execute(sql, dict(params), "insert schedule")

    async def get(self, org_slug: str, schedule_id: str) -> dict[str, Any] | None:
        rows = await self._with_latest(
            org_slug,
            f"SELECT {SCHEDULE_COLUMNS} FROM {self._configs} WHERE org_slug = @org_slug AND schedule_id = @id",
            {"org_slug": org_slug, "id": schedule_id},
        )
        return rows[0] if rows else None

    async def list_for_org(
        self, org_slug: str, *, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[dict[str, Any]]:
        """Oldest first; ``after`` = (created_at, id) of the last schedule of the previous page."""
        return await self._with_latest(
            org_slug,
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

    async def _with_latest(self, org_slug: str, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The schedules, each with what its latest due time came to: its queue item's state and run."""
        rows = await self._wh.query(sql, params)
        if not rows:
            return rows
        latest = await self._wh.query(
            f"""
            SELECT q.schedule_id, q.state, q.pipeline_logging_id
            FROM {self._queue} AS q
            JOIN (SELECT schedule_id, MAX(due_time) AS due_time FROM {self._queue}
                  WHERE org_slug = @org_slug AND schedule_id IN UNNEST(@ids) GROUP BY schedule_id) AS m
              ON q.schedule_id = m.schedule_id AND q.due_time = m.due_time
            WHERE q.org_slug = @org_slug
            """,
            {"org_slug": org_slug, "ids": TypedParam("ARRAY<STRING>", [r["schedule_id"] for r in rows])},
        )
        by_id = {r["schedule_id"]: r for r in latest}
        for row in rows:
            item = by_id.get(row["schedule_id"], {})
            row["last_run_status"] = item.get("state")
            row["last_pipeline_logging_id"] = item.get("pipeline_logging_id")
        return rows

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

    async def claim(self, claims: list[Claim], *, token: str, now: datetime) -> int:
        """One guarded UPDATE for every schedule the trigger found due: each moves on to its next
        due time only if its ``next_run_time`` is still what the trigger read, stamped with
        ``token``. Concurrent triggers conflict on the table and the loser's retry matches none."""
        if not claims:
            return 0
        params: dict[str, Any] = {
            "ids": TypedParam("ARRAY<STRING>", [c.schedule_id for c in claims]),
            "token": token,
            "now": TypedParam("TIMESTAMP", now),
        }
        seen, due, nxt = [], [], []
        for i, c in enumerate(claims):
            params[f"s{i}"] = c.schedule_id
            params[f"seen{i}"] = TypedParam("TIMESTAMP", c.seen)
            params[f"due{i}"] = TypedParam("TIMESTAMP", c.due)
            params[f"next{i}"] = TypedParam("TIMESTAMP", c.next_time)
            seen.append(f"WHEN @s{i} THEN next_run_time = @seen{i}")
            due.append(f"WHEN @s{i} THEN @due{i}")
            nxt.append(f"WHEN @s{i} THEN @next{i}")
        return await self._execute(
            f"""
            UPDATE {self._configs}
            SET next_run_time = CASE schedule_id {" ".join(nxt)} END,
                last_run_time = CASE schedule_id {" ".join(due)} END,
                last_claimed_due = CASE schedule_id {" ".join(due)} END,
                claim_token = @token, last_claimed_at = @now, updated_at = @now
            WHERE is_active AND schedule_id IN UNNEST(@ids)
              AND CASE schedule_id {" ".join(seen)} ELSE FALSE END
            """,
            params,
            "claim due schedules",
        )

    async def claimed(self, token: str) -> list[dict[str, Any]]:
        """The schedules a trigger's ``claim`` got, with the due time it claimed for each."""
        return await self._wh.query(
            f"SELECT {SCHEDULE_COLUMNS}, last_claimed_due FROM {self._configs} WHERE claim_token = @token",
            {"token": token},
        )

    async def unqueued_claims(self, *, claimed_before: datetime, limit: int) -> list[dict[str, Any]]:
        """Claimed due times with no queue item: their trigger died between its claim and its
        INSERT. Only claims older than ``claimed_before`` (a live trigger is done with them)."""
        return await self._wh.query(
            f"""
            SELECT {", ".join(f"c.{col.strip()}" for col in SCHEDULE_COLUMNS.split(","))}, c.last_claimed_due
            FROM {self._configs} AS c
            WHERE c.is_active AND c.last_claimed_due IS NOT NULL AND c.last_claimed_at < @before
              AND NOT EXISTS (SELECT 1 FROM {self._queue} AS q
                              WHERE q.schedule_id = c.schedule_id AND q.due_time = c.last_claimed_due)
            ORDER BY c.last_claimed_at
            LIMIT @limit
            """,
            {"before": TypedParam("TIMESTAMP", claimed_before), "limit": TypedParam("INT64", limit)},
        )

    async def record_due(self, rows: list[dict[str, Any]]) -> None:
        """Append the claimed due times (one INSERT; a row whose id exists is left out)."""
        if rows:
            sql = insert_rows_sql(self._due_ref, list(rows[0]), len(rows), key="scheduled_run_id")
            params = rows_params(self._cat.schema("org_scheduled_pipeline_runs"), rows)
            await self._execute(sql, dict(params), "record due times")

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
