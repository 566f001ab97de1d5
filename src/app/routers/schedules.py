"""An organization's pipeline schedules (admin key or the org's key)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status

from src.app.dependencies.auth import PipelinesRead, PipelinesRun
from src.app.schemas.schedules import (
    SCHEDULE_ID_PATTERN,
    ScheduleCreateRequest,
    ScheduleListResponse,
    ScheduleResponse,
    ScheduleUpdateRequest,
)
from src.core.errors import NotFoundError
from src.core.services import schedules as service

router = APIRouter(prefix="/api/v1/organizations", tags=["schedules"])


# Any other shape cannot be a schedule id: 404, like an id of another org.
ScheduleId = Annotated[str, Path(max_length=64)]


def _schedule_id(schedule_id: str) -> str:
    if not re.fullmatch(SCHEDULE_ID_PATTERN, schedule_id):
        raise NotFoundError(f"schedule {schedule_id!r} not found", code="schedule_not_found")
    return schedule_id


@router.post("/{org_slug}/schedules", status_code=status.HTTP_201_CREATED, response_model=ScheduleResponse)
async def create_schedule(org: PipelinesRun, body: ScheduleCreateRequest) -> dict[str, Any]:
    """Schedule an org-runnable pipeline: cron (five fields) in an IANA time zone, the pipeline's
    parameters with a relative window, attempts per due time. Unknown pipeline -> 404; bad cron,
    zone or parameters -> 422."""
    return await service.create_schedule(org.services, org.slug, **body.model_dump())


@router.get("/{org_slug}/schedules", response_model=ScheduleListResponse)
async def list_schedules(org: PipelinesRead) -> dict[str, Any]:
    """The org's schedules with their next due time and their last run."""
    schedules = await service.list_schedules(org.services, org.slug)
    return {"schedules": schedules, "count": len(schedules)}


@router.get("/{org_slug}/schedules/{schedule_id}", response_model=ScheduleResponse)
async def get_schedule(org: PipelinesRead, schedule_id: ScheduleId) -> dict[str, Any]:
    return await service.get_schedule(org.services, org.slug, _schedule_id(schedule_id))


@router.patch("/{org_slug}/schedules/{schedule_id}", response_model=ScheduleResponse)
async def update_schedule(org: PipelinesRun, schedule_id: ScheduleId, body: ScheduleUpdateRequest) -> dict[str, Any]:
    """Change fields; ``{"is_active": false}`` pauses (waiting items are cancelled), ``true`` resumes."""
    changes = body.model_dump(exclude_unset=True)
    return await service.update_schedule(org.services, org.slug, _schedule_id(schedule_id), changes)


@router.delete("/{org_slug}/schedules/{schedule_id}")
async def delete_schedule(org: PipelinesRun, schedule_id: ScheduleId) -> dict[str, Any]:
    """Delete the schedule; its waiting queue items are cancelled, its history stays."""
    return await service.delete_schedule(org.services, org.slug, _schedule_id(schedule_id))


@router.get("/{org_slug}/schedules/{schedule_id}/runs")
async def schedule_runs(
    org: PipelinesRead,
    schedule_id: ScheduleId,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """The schedule's queue items, newest due time first: state, attempts, last error, run id."""
    return await service.schedule_items(org.services, org.slug, _schedule_id(schedule_id), limit)
