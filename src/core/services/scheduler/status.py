"""The scheduler's status report: queue depth by state, the oldest waiting item, schedules, loop."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from src.core.engine.repositories.queue import QueueRepository
from src.core.engine.repositories.schedules import ScheduleRepository

if TYPE_CHECKING:
    from src.core.services.container import Services

STATES = ("QUEUED", "RUNNING", "RETRY", "COMPLETED", "FAILED", "CANCELLED")


async def scheduler_status(
    services: Services,
    schedules: ScheduleRepository,
    queue: QueueRepository,
    *,
    last_trigger_at: datetime | None,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    counts, oldest_age = await queue.depth(now)
    schedule_counts = await schedules.counts()
    s = services.settings
    return {
        "queue": {state: counts.get(state, 0) for state in STATES},
        "oldest_waiting_age_seconds": round(oldest_age, 3) if oldest_age is not None else None,
        "last_trigger_at": last_trigger_at,
        "last_enqueued_at": schedule_counts.get("last_enqueued_at"),
        "schedules": {
            "active": int(schedule_counts.get("active") or 0),
            "paused": int(schedule_counts.get("paused") or 0),
        },
        "loop": {"enabled": s.scheduler_loop_on, "interval_seconds": s.scheduler_loop_interval_seconds},
        "instance_id": s.instance_id,
    }
