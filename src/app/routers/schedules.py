"""An organization's pipeline schedules (admin key or the org's key)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, status

from src.app.audit import audited
from src.app.dependencies.auth import PipelinesRead, PipelinesRun
from src.app.schemas.common import BODY, ORG, PageToken, errors, limit_query
from src.app.schemas.schedules import (
    SCHEDULE_ID_PATTERN,
    ScheduleCreateRequest,
    ScheduleDeleted,
    ScheduleItemsResponse,
    ScheduleListResponse,
    ScheduleResponse,
    ScheduleUpdateRequest,
)
from src.core.errors import NotFoundError
from src.core.services import schedules as service

router = APIRouter(prefix="/api/v1/organizations", tags=["schedules"])


# Any other shape cannot be a schedule id: 404, like an id of another org.
ScheduleId = Annotated[str, Path(max_length=64)]

_LINKS = {
    "responses": {
        "201": {
            "links": {
                name: {"operationId": op, "parameters": {"schedule_id": "$response.body#/schedule_id"}}
                for name, op in (
                    ("GetSchedule", "getSchedule"),
                    ("UpdateSchedule", "updateSchedule"),
                    ("ListScheduleRuns", "listScheduleRuns"),
                    ("DeleteSchedule", "deleteSchedule"),
                )
            }
        }
    }
}


def _schedule_id(schedule_id: str) -> str:
    if not re.fullmatch(SCHEDULE_ID_PATTERN, schedule_id):
        raise NotFoundError(f"schedule {schedule_id!r} not found", code="schedule_not_found")
    return schedule_id


@router.post(
    "/{org_slug}/schedules",
    status_code=status.HTTP_201_CREATED,
    response_model=ScheduleResponse,
    responses=errors(*ORG, *BODY),
    operation_id="createSchedule",
    openapi_extra=_LINKS,
)
async def create_schedule(org: PipelinesRun, body: ScheduleCreateRequest) -> dict[str, Any]:
    """Schedule an org-runnable pipeline: cron (five fields) in an IANA time zone, the pipeline's
    parameters with a relative window, attempts per due time. Unknown pipeline -> 404; bad cron,
    zone or parameters -> 422."""
    async with audited(org.identity, "schedule.create", org=org.slug, target=body.pipeline) as entry:
        created = await service.create_schedule(org.services, org.slug, **body.model_dump())
        entry.target = created["schedule_id"]
    return created


@router.get("/{org_slug}/schedules", response_model=ScheduleListResponse, responses=errors(*ORG))
async def list_schedules(
    org: PipelinesRead,
    limit: Annotated[int, limit_query(500)] = 100,
    page_token: PageToken = None,
) -> dict[str, Any]:
    """The org's schedules (oldest first) with their next due time and their last run."""
    schedules, token = await service.list_schedules(org.services, org.slug, limit=limit, page_token=page_token)
    return {"schedules": schedules, "count": len(schedules), "next_page_token": token}


@router.get(
    "/{org_slug}/schedules/{schedule_id}",
    response_model=ScheduleResponse,
    responses=errors(*ORG),
    operation_id="getSchedule",
)
async def get_schedule(org: PipelinesRead, schedule_id: ScheduleId) -> dict[str, Any]:
    return await service.get_schedule(org.services, org.slug, _schedule_id(schedule_id))


@router.patch(
    "/{org_slug}/schedules/{schedule_id}",
    response_model=ScheduleResponse,
    responses=errors(*ORG, *BODY),
    operation_id="updateSchedule",
)
async def update_schedule(org: PipelinesRun, schedule_id: ScheduleId, body: ScheduleUpdateRequest) -> dict[str, Any]:
    """Change fields; ``{"is_active": false}`` pauses (waiting items are cancelled), ``true`` resumes."""
    changes = body.model_dump(exclude_unset=True)
    async with audited(org.identity, "schedule.update", org=org.slug, target=schedule_id):
        return await service.update_schedule(org.services, org.slug, _schedule_id(schedule_id), changes)


@router.delete(
    "/{org_slug}/schedules/{schedule_id}",
    response_model=ScheduleDeleted,
    responses=errors(*ORG),
    operation_id="deleteSchedule",
)
async def delete_schedule(org: PipelinesRun, schedule_id: ScheduleId) -> dict[str, Any]:
    """Delete the schedule; its waiting queue items are cancelled, its history stays."""
    async with audited(org.identity, "schedule.delete", org=org.slug, target=schedule_id):
        return await service.delete_schedule(org.services, org.slug, _schedule_id(schedule_id))


@router.get(
    "/{org_slug}/schedules/{schedule_id}/runs",
    response_model=ScheduleItemsResponse,
    responses=errors(*ORG),
    operation_id="listScheduleRuns",
)
async def schedule_runs(
    org: PipelinesRead,
    schedule_id: ScheduleId,
    limit: Annotated[int, limit_query(500)] = 50,
    page_token: PageToken = None,
) -> dict[str, Any]:
    """The schedule's queue items, newest due time first: state, attempts, last error, run id."""
    return await service.schedule_items(org.services, org.slug, _schedule_id(schedule_id), limit, page_token)
