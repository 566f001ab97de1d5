"""The scheduler's admin routes: what Cloud Scheduler calls, and the queue's state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from src.app.audit import audited
from src.app.dependencies.auth import AdminDep
from src.app.dependencies.services import ServicesDep
from src.app.schemas.common import AUTH, BODY, errors
from src.app.schemas.schedules import ProcessQueueRequest, ProcessQueueResponse, SchedulerStatus, TriggerResponse

router = APIRouter(prefix="/api/v1/scheduler", tags=["scheduler"])


@router.post("/trigger", response_model=TriggerResponse, responses=errors(*AUTH, 409))
async def trigger(identity: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """Enqueue every due schedule once (idempotent per due time; after an outage only the latest
    missed due time of a schedule is enqueued). Call it every few minutes (Cloud Scheduler)."""
    async with audited(identity, "admin.scheduler_trigger"):
        return await services.scheduler.trigger()


@router.post("/process-queue", response_model=ProcessQueueResponse, responses=errors(*AUTH, *BODY, 409))
async def process_queue(
    identity: AdminDep, services: ServicesDep, body: ProcessQueueRequest = Body(default_factory=ProcessQueueRequest)
) -> dict[str, Any]:
    """Claim and run up to ``max_items`` queue items (capped by SCHEDULER_PROCESS_MAX_ITEMS); answers
    when their attempts have ended."""
    settings = services.settings
    wanted = body.max_items or settings.scheduler_process_default_items
    async with audited(identity, "admin.scheduler_process_queue"):
        return await services.scheduler.process(min(wanted, settings.scheduler_process_max_items))


@router.get("/status", response_model=SchedulerStatus, responses=errors(*AUTH, 409))
async def scheduler_status(identity: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """Queue depth by state, age of the oldest waiting item, last trigger, schedules, loop settings."""
    async with audited(identity, "admin.scheduler_status"):
        return await services.scheduler.status()
