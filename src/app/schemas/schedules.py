"""Request and response bodies of the schedule and scheduler routes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, field_validator

from src.app.schemas.common import NUMBER_NOT_TEXT, Page

PIPELINE_PATH_PATTERN = r"^[a-z0-9_]{1,64}/[a-z0-9_]{1,64}/[a-z0-9_]{1,64}$"
SCHEDULE_ID_PATTERN = r"^sch_[0-9a-f]{16}$"
MAX_ATTEMPTS = 10
Attempts = Annotated[int, Field(ge=1, le=MAX_ATTEMPTS), NUMBER_NOT_TEXT]
MAX_PARAMETERS_BYTES = 4096  # a schedule's parameters, as stored JSON
MAX_STARTS_AT_DAYS = 366  # starts_at within a year of now, either way


def _small_parameters(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(json.dumps(value, separators=(",", ":"))) > MAX_PARAMETERS_BYTES:
        raise ValueError(f"parameters are larger than {MAX_PARAMETERS_BYTES} bytes as JSON")
    return value


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
    is_active: StrictBool = True
    max_attempts: Attempts | None = Field(None, description="Attempts per due time.")
    description: str | None = Field(None, max_length=500)
    starts_at: AwareDatetime | None = Field(
        None,
        description="First due time = first cron time at or after this (default now). In the past: the latest "
        "cron time since then is due at once (caught up once). Within a year of now.",
    )

    _parameters = field_validator("parameters")(_small_parameters)

    @field_validator("starts_at")
    @classmethod
    def _near(cls, value: datetime | None) -> datetime | None:
        if value is not None and abs(value.astimezone(UTC) - datetime.now(UTC)) > timedelta(days=MAX_STARTS_AT_DAYS):
            raise ValueError(f"starts_at must be within {MAX_STARTS_AT_DAYS} days of now")
        return value


class ScheduleUpdateRequest(_Body):
    cron_expression: str | None = Field(None, min_length=9, max_length=200)
    timezone: str | None = Field(None, min_length=1, max_length=64)
    parameters: dict[str, Any] | None = Field(None, description=_PARAMETERS)
    is_active: StrictBool | None = Field(None, description="false pauses, true resumes (from now on).")
    max_attempts: Attempts | None = None
    description: str | None = Field(None, max_length=500)

    _parameters = field_validator("parameters")(_small_parameters)


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


class ScheduleListResponse(Page):
    schedules: list[ScheduleResponse]


QueueState = Literal["QUEUED", "RUNNING", "RETRY", "COMPLETED", "FAILED", "CANCELLED"]


class QueueItem(BaseModel):
    queue_item_id: str
    org_slug: str
    schedule_id: str
    pipeline_path: str
    due_time: datetime
    state: QueueState
    priority: int | None
    attempts: int
    max_attempts: int
    requeues: Annotated[int, BeforeValidator(lambda v: v or 0)] = Field(
        0, description="Times the item waited for the org's quota (bounded by QUEUE_MAX_QUOTA_REQUEUES)."
    )
    lease_expires_at: datetime | None
    next_attempt_at: datetime | None
    last_error: str | None
    pipeline_logging_id: str | None
    created_at: datetime | None
    updated_at: datetime | None
    completed_at: datetime | None
    parameters: dict[str, Any] = Field(description="The run's parameters, the window resolved to dates.")


class ScheduleItemsResponse(Page):
    schedule_id: str
    items: list[QueueItem]


class ScheduleDeleted(BaseModel):
    schedule_id: str
    deleted: bool
    cancelled_queue_items: int


class TriggeredItem(BaseModel):
    queue_item_id: str
    schedule_id: str
    org_slug: str
    due_time: datetime


class TriggerResponse(BaseModel):
    due: int
    enqueued: int
    failed: int
    items: list[TriggeredItem]
    at: datetime


class ProcessedItem(BaseModel):
    queue_item_id: str
    state: QueueState | Literal["LOST"] = Field(
        description="The item's state after this attempt; LOST: its lease changed hands while the run went on."
    )
    attempts: int
    pipeline_logging_id: str | None
    error: str | None


class ProcessQueueResponse(BaseModel):
    processed: int
    by_state: dict[str, int]
    items: list[ProcessedItem]


class SchedulerStatus(BaseModel):
    queue: dict[str, int] = Field(description="Queue items by state.")
    oldest_waiting_age_seconds: float | None
    last_trigger_at: datetime | None = Field(description="Last trigger answered by this instance.")
    last_enqueued_at: datetime | None
    schedules: dict[str, int] = Field(description="active and paused schedules.")
    loop: dict[str, Any] = Field(description="The in-process loop: enabled, interval_seconds.")
    instance_id: str


class ProcessQueueRequest(_Body):
    max_items: Annotated[int, Field(ge=1, le=10_000), NUMBER_NOT_TEXT] | None = Field(
        None,
        description="Default SCHEDULER_PROCESS_DEFAULT_ITEMS, capped by SCHEDULER_PROCESS_MAX_ITEMS.",
    )
