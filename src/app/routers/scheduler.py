"""The scheduler's admin routes: what Cloud Scheduler calls, and the queue's state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from src.app.dependencies.auth import AdminDep
from src.app.dependencies.services import ServicesDep
from src.app.schemas.schedules import ProcessQueueRequest

router = APIRouter(prefix="/api/v1/scheduler", tags=["scheduler"])


@router.post("/trigger")
async def trigger(_: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """Enqueue every due schedule once (idempotent per due time; after an outage only the latest
    missed due time of a schedule is enqueued). Call it every few minutes (Cloud Scheduler)."""
    return await services.scheduler.trigger()


@router.post("/process-queue")
async def process_queue(
    _: AdminDep, services: ServicesDep, body: ProcessQueueRequest = Body(default_factory=ProcessQueueRequest)
) -> dict[str, Any]:
    """Claim and run up to ``max_items`` queue items (capped by SCHEDULER_PROCESS_MAX_ITEMS); answers
    when their attempts have ended."""
    settings = services.settings
    wanted = body.max_items or settings.scheduler_process_default_items
    return await services.scheduler.process(min(wanted, settings.scheduler_process_max_items))


@router.get("/status")
async def scheduler_status(_: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """Queue depth by state, age of the oldest waiting item, last trigger, schedules, loop settings."""
    return await services.scheduler.status()
