"""Pipeline runs, step logs and data-quality results (central tables).

A run costs at most three mutating statements on the central tables, from admission to end
(BigQuery runs 2 mutating DML statements per table at a time and queues 20): the guarded UPDATE of
the org's quota row that admits it (``QuotaRepository.admit``), the one that releases its slot, and
the guarded final UPDATE of its run row here. The run row itself is INSERTed (append) when the run
is admitted, already RUNNING; step logs and DQ results are append-only facts, INSERTed once per run,
batched, when it ends. The heartbeat is one UPDATE per instance and interval for all its runs.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from src.core.engine.base import RetryPolicy, TypedParam, Warehouse, with_retries
from src.core.engine.catalog import CentralCatalog
from src.core.engine.rows import insert_rows_sql, rows_params
from src.core.run_types import JobStats, RunInfo, StepOutcome, StepRef


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
    async def insert(self, run: NewRun) -> None:
        """The run's row, RUNNING from the start (its slot is already taken: QuotaRepository.admit)."""
        now = datetime.now(UTC)
        row = {
            "pipeline_logging_id": run.pipeline_logging_id,
            "org_slug": run.org_slug,
            "pipeline_id": run.pipeline_id,
            "pipeline_path": run.pipeline_path,
            "status": "RUNNING",
            "trigger_by": run.trigger_by,
            "parameters": _json(run.parameters),
            "start_date": run.start_date,
            "end_date": run.end_date,
            "owner_instance": run.owner_instance,
            "heartbeat_at": now,
            "started_at": now,
            "quota_usage_date": run.quota_usage_date,
            "request_id": run.request_id,
            "schedule_id": run.schedule_id,
            "queue_item_id": run.queue_item_id,
            "created_at": now,
        }
        await self._insert_rows(self._runs_ref, "org_meta_pipeline_runs", [row], "insert run", unless=_OF_RUN)

    async def finish(
        self,
        *,
        pipeline_logging_id: str,
        org_slug: str,
        status: str,
        error: str | None,
        failed_step: str | None,
        rows_processed: int,
        from_states: tuple[str, ...] = ("PENDING", "RUNNING"),
        stats: JobStats | None = None,
    ) -> bool:
        """Final state, guarded: only from an active state. True if this call ended the run."""
        stats = stats or JobStats()
        params = {
            "bytes_processed": TypedParam("INT64", stats.bytes_processed),
            "bytes_billed": TypedParam("INT64", stats.bytes_billed),
            "slot_ms": TypedParam("INT64", stats.slot_ms),
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
                error_message = @error, failed_step = @failed_step, rows_processed = @rows,
                bytes_processed = @bytes_processed, bytes_billed = @bytes_billed, slot_ms = @slot_ms
            WHERE pipeline_logging_id = @id AND org_slug = @org_slug AND status IN UNNEST(@from_states)
        """

        async def finish_run() -> int:
            return await self._wh.execute(final, params)

        return await with_retries(finish_run, what="finish run", policy=self._retry) == 1

    async def warehouse_usage(self, org_slug: str, since: datetime) -> dict[str, Any]:
        """Bytes processed and billed and slot milliseconds of the org's runs created since
        ``since`` (NULL sums where no run reported any: DuckDB)."""
        rows = await self._wh.query(
            f"""
            SELECT COUNT(*) AS runs, SUM(bytes_processed) AS bytes_processed, SUM(bytes_billed) AS bytes_billed,
                   SUM(slot_ms) AS slot_ms
            FROM {self._runs}
            WHERE org_slug = @org_slug AND created_at >= @since
            """,
            {"org_slug": org_slug, "since": TypedParam("TIMESTAMP", since)},
        )
        return rows[0] if rows else {"runs": 0, "bytes_processed": None, "bytes_billed": None, "slot_ms": None}

    async def count_active(self, org_slug: str) -> int:
        rows = await self._wh.query(
            f"SELECT COUNT(*) AS n FROM {self._runs} WHERE org_slug = @org_slug AND status IN ('PENDING', 'RUNNING')",
            {"org_slug": org_slug},
        )
        return int(rows[0]["n"]) if rows else 0

    async def heartbeat(self, owner: str, progress: dict[str, str]) -> int:
        """One UPDATE for every run this instance is executing right now (only those): the
        heartbeat, and each run's ``progress`` (run id -> JSON of its steps so far)."""
        params: dict[str, Any] = {"owner": owner, "ids": TypedParam("ARRAY<STRING>", list(progress))}
        cases = []
        for i, (run_id, value) in enumerate(progress.items()):
            params[f"id{i}"], params[f"p{i}"] = run_id, value
            cases.append(f"WHEN @id{i} THEN @p{i}")
        return await self._wh.execute(
            f"""
            UPDATE {self._runs}
            SET heartbeat_at = CURRENT_TIMESTAMP(),
                progress = CASE pipeline_logging_id {" ".join(cases)} ELSE progress END
            WHERE owner_instance = @owner AND status IN ('PENDING', 'RUNNING')
              AND pipeline_logging_id IN UNNEST(@ids)
            """,
            params,
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
            SELECT pipeline_logging_id, org_slug, pipeline_path, status, owner_instance, quota_usage_date
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

    async def request_cancel(self, pipeline_logging_id: str, org_slug: str, *, by: str) -> bool:
        """Mark an active run for cancellation (guarded: once, only while it is active)."""
        changed = await with_retries(
            lambda: self._wh.execute(
                f"""
                UPDATE {self._runs} SET cancel_requested_at = CURRENT_TIMESTAMP(), cancel_requested_by = @by
                WHERE pipeline_logging_id = @id AND org_slug = @org_slug AND status IN ('PENDING', 'RUNNING')
                  AND cancel_requested_at IS NULL
                """,
                {"id": pipeline_logging_id, "org_slug": org_slug, "by": by},
            ),
            what="request cancel",
            policy=self._retry,
        )
        return changed == 1

    async def cancel_requested(self, owner: str, live_ids: list[str]) -> list[str]:
        """Which of this instance's live runs someone asked to cancel (read by the heartbeat)."""
        rows = await self._wh.query(
            f"""
            SELECT pipeline_logging_id FROM {self._runs}
            WHERE owner_instance = @owner AND pipeline_logging_id IN UNNEST(@ids)
              AND cancel_requested_at IS NOT NULL AND status IN ('PENDING', 'RUNNING')
            """,
            {"owner": owner, "ids": TypedParam("ARRAY<STRING>", live_ids)},
        )
        return [str(r["pipeline_logging_id"]) for r in rows]

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
                   duration_ms, rows_processed, bytes_processed, bytes_billed, slot_ms, error_message, result
            FROM {self._steps}
            WHERE pipeline_logging_id = @id AND org_slug = @org_slug
            ORDER BY step_index, created_at
            """,
            {"id": pipeline_logging_id, "org_slug": org_slug},
        )

    async def dq_results(self, pipeline_logging_id: str, org_slug: str) -> list[dict[str, Any]]:
        return await self._wh.query(
            f"""
            SELECT step_id, check_name, target_table, usage_date, currency, source_rows, dest_rows, source_cost,
                   dest_cost, source_credits, dest_credits, passed, message, checked_at
            FROM {self._dq_ref.sql}
            WHERE pipeline_logging_id = @id AND org_slug = @org_slug
            ORDER BY usage_date, currency, check_name
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
    async def insert_steps(self, run: RunInfo, steps: list[tuple[StepRef, int, StepOutcome]]) -> None:
        """The run's step logs, one INSERT for all of them (written when the run ends)."""
        if not steps:
            return
        now = datetime.now(UTC)
        rows = []
        for step, index, outcome in steps:
            duration = (
                int((outcome.completed_at - outcome.started_at).total_seconds() * 1000)
                if outcome.completed_at and outcome.started_at
                else None
            )
            rows.append(
                {
                    "step_logging_id": f"step_{secrets.token_hex(8)}",
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
                    "duration_ms": duration,
                    "rows_processed": outcome.rows_processed,
                    "bytes_processed": outcome.stats.bytes_processed,
                    "bytes_billed": outcome.stats.bytes_billed,
                    "slot_ms": outcome.stats.slot_ms,
                    "error_message": outcome.error[:4000] if outcome.error else None,
                    "result": _json(outcome.result) if outcome.result else None,
                    "created_at": now,
                }
            )
        await self._insert_rows(self._steps_ref, "org_meta_step_logs", rows, "insert step logs", unless=_OF_RUN)

    async def _insert_rows(
        self, ref: Any, table: str, rows: list[dict[str, Any]], what: str, *, unless: str | None = None
    ) -> None:
        sql = insert_rows_sql(ref, list(rows[0]), len(rows), unless=unless)
        params = rows_params(self._cat.schema(table), rows)
        await with_retries(lambda: self._wh.execute(sql, params), what=what, policy=self._retry)

    # --- data quality --------------------------------------------------------------------------
    async def insert_dq_results(self, rows: list[dict[str, Any]]) -> None:
        """A run's DQ results, one INSERT for all of them (written when the run ends)."""
        if rows:
            await self._insert_rows(self._dq_ref, "org_meta_dq_results", rows, "insert dq results", unless=_OF_RUN)


# The guard of a run's rows (its run row, its step logs, its DQ results): none of them there yet.
_OF_RUN = "pipeline_logging_id = @r0_pipeline_logging_id"
