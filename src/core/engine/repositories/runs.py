"""Pipeline runs, step logs and data-quality results (central tables).

Rows that change later (runs, steps) are written with DML, never streaming inserts, and every
state change is one guarded statement (``... WHERE status = @from``). Admission of a run is one
MERGE that inserts the PENDING row only if no overlapping run of the same pipeline is active:
mutating DML (BigQuery queues mutating DML per table; the service also holds a per-org lock, which
is all DuckDB needs).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from src.core.engine.base import RetryPolicy, TypedParam, Warehouse, with_retries
from src.core.engine.catalog import CentralCatalog
from src.core.engine.rows import insert_statement, typed_params
from src.core.run_types import RunInfo, StepOutcome, StepRef


@dataclass(frozen=True, slots=True)
class NewRun:
    pipeline_logging_id: str
    org_slug: str
    pipeline_id: str
    pipeline_path: str
    trigger_by: str
    parameters: dict[str, Any]
    start_date: date | None
    end_date: date | None
    owner_instance: str
    request_id: str | None = None
    schedule_id: str | None = None
    queue_item_id: str | None = None
    quota_usage_date: date | None = None  # the UTC day its quota slot was taken (None: holds none)


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    conflicting_run_id: str | None = None


def _json(value: Any) -> str:
    return json.dumps(value, default=str, separators=(",", ":"), sort_keys=True)


class RunRepository:
    def __init__(self, warehouse: Warehouse, catalog: CentralCatalog, *, retry: RetryPolicy) -> None:
        self._wh = warehouse
        self._cat = catalog
        self._runs_ref = catalog.ref("org_meta_pipeline_runs")
        self._runs = self._runs_ref.sql
        self._steps_ref = catalog.ref("org_meta_step_logs")
        self._steps = self._steps_ref.sql
        self._dq_ref = catalog.ref("org_meta_dq_results")
        self._quotas = catalog.ref("org_usage_quotas").sql
        self._retry = retry

    # --- admission and transitions ---------------------------------------------------------
    async def admit(self, run: NewRun) -> Admission:
        row = {
            "pipeline_logging_id": run.pipeline_logging_id,
            "org_slug": run.org_slug,
            "pipeline_id": run.pipeline_id,
            "pipeline_path": run.pipeline_path,
            "status": "PENDING",
            "trigger_by": run.trigger_by,
            "parameters": _json(run.parameters),
            "start_date": run.start_date,
            "end_date": run.end_date,
            "owner_instance": run.owner_instance,
            "heartbeat_at": datetime.now(UTC),
            "quota_usage_date": run.quota_usage_date,
            "quota_released": False,
            "request_id": run.request_id,
            "schedule_id": run.schedule_id,
            "queue_item_id": run.queue_item_id,
            "created_at": datetime.now(UTC),
        }
        params: dict[str, Any] = dict(typed_params(self._cat.schema("org_meta_pipeline_runs"), row, prefix="r_"))
        columns = ", ".join(row)
        source = ", ".join(f"@r_{c} AS {c}" for c in row)
        values = ", ".join(f"s.{c}" for c in row)
        # One guarded statement: insert unless an active run of this pipeline overlaps the window.
        guarded_insert = f"""
            MERGE {self._runs} AS t
            USING (SELECT {source}) AS s
            ON t.org_slug = s.org_slug AND t.pipeline_path = s.pipeline_path
               AND t.status IN ('PENDING', 'RUNNING')
               AND IFNULL(t.start_date, DATE '0001-01-01') <= IFNULL(s.end_date, DATE '9999-12-31')
               AND IFNULL(t.end_date, DATE '9999-12-31') >= IFNULL(s.start_date, DATE '0001-01-01')
            WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({values})
        """

        async def attempt() -> int:
            return await self._wh.execute(guarded_insert, params)

        if await with_retries(attempt, what="admit run", policy=self._retry) == 1:
            return Admission(True)
        return Admission(False, await self.find_overlap(run))

    async def mark_running(self, run: RunInfo, owner: str) -> bool:
        sql = f"""
            UPDATE {self._runs}
            SET status = 'RUNNING', started_at = CURRENT_TIMESTAMP(), heartbeat_at = CURRENT_TIMESTAMP(),
                owner_instance = @owner
            WHERE pipeline_logging_id = @id AND org_slug = @org_slug AND status = 'PENDING'
        """
        params = {"id": run.pipeline_logging_id, "org_slug": run.org_slug, "owner": owner}
        # Guarded, so safe to retry after a conflict (e.g. with the heartbeat touching the same row).
        changed = await with_retries(lambda: self._wh.execute(sql, params), what="mark running", policy=self._retry)
        return changed == 1

    async def claim_slot_release(
        self, *, pipeline_logging_id: str, org_slug: str, from_states: tuple[str, ...]
    ) -> bool:
        """Mark an active run's concurrent slot as given back, once: True only for the call that
        flipped the flag (that caller then decrements the counter). Done before the final state, so
        a run that reads as ended never still holds a slot."""
        sql = f"""
            UPDATE {self._runs}
            SET quota_released = TRUE
            WHERE pipeline_logging_id = @id AND org_slug = @org_slug AND status IN UNNEST(@from_states)
              AND quota_usage_date IS NOT NULL AND NOT IFNULL(quota_released, FALSE)
        """
        params = {
            "id": pipeline_logging_id,
            "org_slug": org_slug,
            "from_states": TypedParam("ARRAY<STRING>", list(from_states)),
        }
        return await with_retries(lambda: self._wh.execute(sql, params), what="claim slot", policy=self._retry) == 1

    async def finish(
        self,
        *,
        pipeline_logging_id: str,
        org_slug: str,
        status: str,
        error: str | None,
        failed_step: str | None,
        rows_processed: int,
        from_states: tuple[str, ...] = ("RUNNING",),
    ) -> bool:
        """Final state, guarded: only from an active state. True if this call ended the run."""
        params = {
            "id": pipeline_logging_id,
            "org_slug": org_slug,
            "status": status,
            "error": TypedParam("STRING", error[:4000] if error else None),
            "failed_step": TypedParam("STRING", failed_step),
            "rows": TypedParam("INT64", rows_processed),
            "from_states": TypedParam("ARRAY<STRING>", list(from_states)),
        }
        final = f"""
            UPDATE {self._runs}
            SET status = @status, completed_at = CURRENT_TIMESTAMP(),
                duration_ms = TIMESTAMP_DIFF(CURRENT_TIMESTAMP(), IFNULL(started_at, created_at), MILLISECOND),
                error_message = @error, failed_step = @failed_step, rows_processed = @rows
            WHERE pipeline_logging_id = @id AND org_slug = @org_slug AND status IN UNNEST(@from_states)
        """

        async def finish_run() -> int:
            return await self._wh.execute(final, params)

        return await with_retries(finish_run, what="finish run", policy=self._retry) == 1

    async def find_overlap(self, run: NewRun) -> str | None:
        """The id of an active run of the same pipeline whose window overlaps ``run``'s."""
        rows = await self._wh.query(
            f"""
            SELECT pipeline_logging_id FROM {self._runs}
            WHERE org_slug = @org_slug AND pipeline_path = @path AND status IN ('PENDING', 'RUNNING')
              AND IFNULL(start_date, DATE '0001-01-01') <= IFNULL(@end_date, DATE '9999-12-31')
              AND IFNULL(end_date, DATE '9999-12-31') >= IFNULL(@start_date, DATE '0001-01-01')
            ORDER BY created_at LIMIT 1
            """,
            {
                "org_slug": run.org_slug,
                "path": run.pipeline_path,
                "start_date": TypedParam("DATE", run.start_date),
                "end_date": TypedParam("DATE", run.end_date),
            },
        )
        return str(rows[0]["pipeline_logging_id"]) if rows else None

    async def count_active(self, org_slug: str) -> int:
        rows = await self._wh.query(
            f"SELECT COUNT(*) AS n FROM {self._runs} WHERE org_slug = @org_slug AND status IN ('PENDING', 'RUNNING')",
            {"org_slug": org_slug},
        )
        return int(rows[0]["n"]) if rows else 0

    async def heartbeat(self, owner: str, live_ids: list[str]) -> int:
        """Refresh the heartbeat of the runs this instance is executing right now (only those)."""
        return await self._wh.execute(
            f"UPDATE {self._runs} SET heartbeat_at = CURRENT_TIMESTAMP() "
            "WHERE owner_instance = @owner AND status IN ('PENDING', 'RUNNING') "
            "AND pipeline_logging_id IN UNNEST(@ids)",
            {"owner": owner, "ids": TypedParam("ARRAY<STRING>", live_ids)},
        )

    async def orphaned(
        self, *, owner: str, lease_seconds: float, all_active: bool, live_ids: list[str]
    ) -> list[dict[str, Any]]:
        """Active runs nobody is executing: another owner's whose heartbeat is older than the lease
        (for a single-process backend at start-up: every other owner's), and this instance's own
        that have no live task here (a task that died without recording an outcome)."""
        cutoff = datetime.now(UTC) - timedelta(seconds=lease_seconds)
        return await self._wh.query(
            f"""
            SELECT pipeline_logging_id, org_slug, pipeline_path, status, owner_instance, quota_usage_date,
                   quota_released
            FROM {self._runs}
            WHERE status IN ('PENDING', 'RUNNING')
              AND (
                (IFNULL(owner_instance, '') != @owner
                 AND (@all_active OR heartbeat_at IS NULL OR heartbeat_at < @cutoff))
                OR (owner_instance = @owner AND pipeline_logging_id NOT IN UNNEST(@live)
                    AND created_at < @cutoff))
            """,
            {
                "owner": owner,
                "all_active": TypedParam("BOOL", all_active),
                "cutoff": TypedParam("TIMESTAMP", cutoff),
                "live": TypedParam("ARRAY<STRING>", live_ids),
            },
        )

    # --- reads ---------------------------------------------------------------------------------
    async def get(self, pipeline_logging_id: str, org_slug: str | None) -> dict[str, Any] | None:
        """One run; ``org_slug=None`` only for the admin key."""
        rows = await self._wh.query(
            f"""
            SELECT * FROM {self._runs}
            WHERE pipeline_logging_id = @id AND (@any_org OR org_slug = @org_slug)
            """,
            {"id": pipeline_logging_id, "org_slug": org_slug or "", "any_org": TypedParam("BOOL", org_slug is None)},
        )
        return rows[0] if rows else None

    async def steps(self, pipeline_logging_id: str, org_slug: str) -> list[dict[str, Any]]:
        return await self._wh.query(
            f"""
            SELECT step_id, step_name, ps_type, step_index, status, attempts, started_at, completed_at,
                   duration_ms, rows_processed, error_message, result
            FROM {self._steps}
            WHERE pipeline_logging_id = @id AND org_slug = @org_slug
            ORDER BY step_index, created_at
            """,
            {"id": pipeline_logging_id, "org_slug": org_slug},
        )

    async def dq_results(self, pipeline_logging_id: str, org_slug: str) -> list[dict[str, Any]]:
        return await self._wh.query(
            f"""
            SELECT step_id, check_name, target_table, usage_date, source_rows, dest_rows, source_cost, dest_cost,
                   source_credits, dest_credits, passed, message, checked_at
            FROM {self._dq_ref.sql}
            WHERE pipeline_logging_id = @id AND org_slug = @org_slug
            ORDER BY usage_date, check_name
            """,
            {"id": pipeline_logging_id, "org_slug": org_slug},
        )

    async def list_runs(
        self,
        *,
        org_slug: str | None,
        status: str | None,
        pipeline: str | None,
        on_date: date | None,
        limit: int,
        after: tuple[datetime, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first; ``after`` = (created_at, id) of the last row of the previous page."""
        return await self._wh.query(
            f"""
            SELECT * FROM {self._runs}
            WHERE (@any_org OR org_slug = @org_slug)
              AND (@status IS NULL OR status = @status)
              AND (@pipeline IS NULL OR pipeline_id = @pipeline OR pipeline_path = @pipeline)
              AND (@on_date IS NULL OR (start_date <= @on_date AND end_date >= @on_date))
              AND (@after_at IS NULL OR created_at < @after_at
                   OR (created_at = @after_at AND pipeline_logging_id < @after_id))
            ORDER BY created_at DESC, pipeline_logging_id DESC
            LIMIT @limit
            """,
            {
                "after_at": TypedParam("TIMESTAMP", after[0] if after else None),
                "after_id": TypedParam("STRING", after[1] if after else None),
                "any_org": TypedParam("BOOL", org_slug is None),
                "org_slug": org_slug or "",
                "status": TypedParam("STRING", status),
                "pipeline": TypedParam("STRING", pipeline),
                "on_date": TypedParam("DATE", on_date),
                "limit": TypedParam("INT64", limit),
            },
        )

    # --- step logs -----------------------------------------------------------------------------
    async def insert_step(self, run: RunInfo, step: StepRef, index: int, outcome: StepOutcome) -> str:
        step_log_id = f"step_{secrets.token_hex(8)}"
        now = datetime.now(UTC)
        sql, params = insert_statement(
            self._steps_ref,
            self._cat.schema("org_meta_step_logs"),
            {
                "step_logging_id": step_log_id,
                "pipeline_logging_id": run.pipeline_logging_id,
                "org_slug": run.org_slug or "",
                "step_id": step.step_id,
                "step_name": step.name or step.step_id,
                "ps_type": step.ps_type,
                "step_index": index,
                "status": outcome.status,
                "attempts": outcome.attempts,
                "started_at": outcome.started_at,
                "completed_at": outcome.completed_at,
                "duration_ms": None,
                "rows_processed": outcome.rows_processed,
                "error_message": outcome.error,
                "result": None,
                "created_at": now,
            },
        )
        await self._wh.execute(sql, params)
        return step_log_id

    async def finish_step(self, run: RunInfo, step_log_id: str, outcome: StepOutcome) -> None:
        duration = (
            int((outcome.completed_at - outcome.started_at).total_seconds() * 1000)
            if outcome.completed_at and outcome.started_at
            else None
        )
        await self._wh.execute(
            f"""
            UPDATE {self._steps}
            SET status = @status, attempts = @attempts, completed_at = @completed_at, duration_ms = @duration,
                rows_processed = @rows, error_message = @error, result = @result
            WHERE step_logging_id = @id AND org_slug = @org_slug AND status = 'RUNNING'
            """,
            {
                "id": step_log_id,
                "org_slug": run.org_slug or "",
                "status": outcome.status,
                "attempts": TypedParam("INT64", outcome.attempts),
                "completed_at": TypedParam("TIMESTAMP", outcome.completed_at),
                "duration": TypedParam("INT64", duration),
                "rows": TypedParam("INT64", outcome.rows_processed),
                "error": TypedParam("STRING", outcome.error[:4000] if outcome.error else None),
                "result": TypedParam("STRING", _json(outcome.result) if outcome.result else None),
            },
        )

    # --- data quality --------------------------------------------------------------------------
    async def insert_dq_results(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        schema = self._cat.schema("org_meta_dq_results")
        columns = list(rows[0])
        params: dict[str, Any] = {}
        tuples = []
        for i, row in enumerate(rows):
            params.update(typed_params(schema, row, prefix=f"r{i}_"))
            tuples.append("(" + ", ".join(f"@r{i}_{c}" for c in columns) + ")")
        await self._wh.execute(
            f"INSERT INTO {self._dq_ref.sql} ({', '.join(columns)}) VALUES {', '.join(tuples)}", params
        )
