"""Request and response bodies of the schedule and scheduler routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

PIPELINE_PATH_PATTERN = r"^[a-z0-9_]{1,64}/[a-z0-9_]{1,64}/[a-z0-9_]{1,64}$"
SCHEDULE_ID_PATTERN = r"^sch_[0-9a-f]{16}$"
MAX_ATTEMPTS = 10

_PARAMETERS = (
    'The pipeline\'s declared parameters; a date window is relative: {"window": "yesterday"} or '
    '{"window": "last_N_days"} (e.g. "last_3_days"), resolved from each due time (UTC).'
)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ScheduleCreateRequest(_Body):
    pipeline: str = Field(
        pattern=PIPELINE_PATH_PATTERN, description="provider/domain/pipeline, e.g. gcp/cost/cost_billing"
    )
    cron_expression: str = Field(min_length=9, max_length=200, description="Five fields, e.g. '0 6 * * *'.")
    timezone: str = Field("UTC", min_length=1, max_length=64, description="IANA zone, e.g. Europe/Berlin.")
    parameters: dict[str, Any] = Field(default_factory=dict, description=_PARAMETERS)
    is_active: bool = True
    max_attempts: int | None = Field(None, ge=1, le=MAX_ATTEMPTS, description="Attempts per due time.")
    description: str | None = Field(None, max_length=500)
    starts_at: AwareDatetime | None = Field(
        None,
        description="First due time = first cron time at or after this (default now). In the past: the latest "
        "cron time since then is due at once (caught up once).",
    )


class ScheduleUpdateRequest(_Body):
    cron_expression: str | None = Field(None, min_length=9, max_length=200)
    timezone: str | None = Field(None, min_length=1, max_length=64)
    parameters: dict[str, Any] | None = Field(None, description=_PARAMETERS)
    is_active: bool | None = Field(None, description="false pauses, true resumes (from now on).")
    max_attempts: int | None = Field(None, ge=1, le=MAX_ATTEMPTS)
    description: str | None = Field(None, max_length=500)


class ScheduleResponse(BaseModel):
    schedule_id: str
    org_slug: str
    pipeline: str
    cron_expression: str
    timezone: str
    parameters: dict[str, Any]
    is_active: bool
    max_attempts: int | None
    description: str | None
    next_run_time: datetime | None = Field(description="Next due time (UTC); null while paused.")
    last_run_time: datetime | None = Field(description="Last due time that was enqueued.")
    last_run_status: str | None = Field(description="State of its item after the last attempt.")
    last_pipeline_logging_id: str | None
    created_at: datetime | None
    updated_at: datetime | None


class ScheduleListResponse(BaseModel):
    schedules: list[ScheduleResponse]
    count: int


class ProcessQueueRequest(_Body):
    max_items: int | None = Field(None, ge=1, description="Default SCHEDULER_PROCESS_DEFAULT_ITEMS.")
