"""Answers of the pipeline run routes."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from src.app.schemas.common import Page

RunStatus = Literal["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"]


class RunEstimate(BaseModel):
    """The answer to a dry run: what the run would read; nothing started, no quota used."""

    dry_run: Literal[True]
    org_slug: str
    pipeline_id: str
    pipeline_path: str
    start_date: date | None
    end_date: date | None
    warehouse: str = Field(description="bigquery | duckdb")
    statements: list[dict[str, Any]] = Field(
        description="Per statement (step_id, what it reads): bytes_processed on BigQuery, rows on DuckDB."
    )
    total_bytes_processed: int | None = Field(description="Null where the warehouse bills no bytes (DuckDB).")
    total_rows: int | None
    estimated_cost_usd: float | None = Field(description="total_bytes_processed / 2^40 x price_per_tib_usd.")
    price_per_tib_usd: float
    maximum_bytes_billed_per_query: int | None = Field(description="The cap every tenant query runs under.")


class RunStarted(BaseModel):
    pipeline_logging_id: str = Field(description="The run id (UUID4).")
    pipeline_id: str
    status: Literal["PENDING"]


class RunCancelled(BaseModel):
    pipeline_logging_id: str
    status: RunStatus = Field(
        description="CANCELLED once its jobs are cancelled or done; RUNNING while its owner gets there."
    )
    cancel_requested: bool


class Run(BaseModel):
    pipeline_logging_id: str
    org_slug: str
    pipeline_id: str
    pipeline_path: str
    status: RunStatus
    trigger_by: str | None = Field(description="api, admin or scheduler.")
    parameters: dict[str, Any] | None
    start_date: date | None
    end_date: date | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int | None
    rows_processed: int | None
    bytes_processed: int | None = Field(None, description="Bytes its jobs processed (BigQuery; null on DuckDB).")
    bytes_billed: int | None = Field(None, description="Bytes its jobs were billed for (BigQuery; null on DuckDB).")
    slot_ms: int | None = Field(None, description="Slot milliseconds of its jobs (BigQuery; null on DuckDB).")
    error_message: str | None
    failed_step: str | None
    cancel_requested_at: datetime | None = Field(None, description="When a cancel of it was requested.")
    cancel_requested_by: str | None = Field(None, description="admin, or key:<key_id>.")
    quota_usage_date: date | None
    schedule_id: str | None
    queue_item_id: str | None
    created_at: datetime


class Step(BaseModel):
    """A step log; while its run goes on, its steps so far (as of its instance's last heartbeat)."""

    step_id: str
    step_name: str | None = None
    ps_type: str | None = None
    step_index: int | None = None
    status: str
    attempts: int | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: int | None = None
    rows_processed: int | None = None
    bytes_processed: int | None = None
    bytes_billed: int | None = None
    slot_ms: int | None = None
    error_message: str | None = None
    result: dict[str, Any] | None = Field(None, description="What the step's processor returned.")


class DqResult(BaseModel):
    step_id: str | None
    check_name: str
    target_table: str | None
    usage_date: date | None
    currency: str | None = Field(None, description="The billing currency the figures are in.")
    source_rows: int | None
    dest_rows: int | None
    source_cost: float | None
    dest_cost: float | None
    source_credits: float | None
    dest_credits: float | None
    passed: bool | None
    message: str | None
    checked_at: datetime | None


class RunDetail(Run):
    steps: list[Step]
    dq_results: list[DqResult] = Field(description="Reconciliation per day: source vs destination.")


class RunListResponse(Page):
    runs: list[Run]
