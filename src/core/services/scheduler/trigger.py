"""The trigger: due schedules become queue items, once per due time.

``POST /api/v1/scheduler/trigger`` (Cloud Scheduler every few minutes, or the local loop): for each
active schedule whose ``next_run_time`` has come, the due time is recorded once in
``org_scheduled_pipeline_runs`` (a MERGE keyed by schedule and due time), its queue item is inserted
once (a MERGE keyed by an id derived from the same pair) and the schedule moves on with
``UPDATE … WHERE next_run_time = @seen``. Any number of triggers may run at once; a due time is
enqueued once. Catch-up rule: after an outage only the latest missed due time is enqueued (once) and
``next_run_time`` becomes the first due time in the future. The window of the run (``yesterday``,
``last_N_days``) is resolved from the due time (UTC) at enqueue time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from src.core.engine.repositories.queue import QueueRepository
from src.core.engine.repositories.schedules import ScheduleRepository
from src.core.errors import ServiceError
from src.core.services.cron import check_cron, check_timezone, latest_due, next_due
from src.core.services.schedules import run_parameters

if TYPE_CHECKING:
    from src.core.services.container import Services

log = logging.getLogger(__name__)

TRIGGER_BATCH = 500  # due schedules handled per trigger call (the rest on the next call)


def due_key(schedule_id: str, due_time: datetime) -> str:
    """The same id for the same (schedule, due time), on every instance."""
    text = f"{schedule_id}|{due_time.astimezone(UTC).isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class ScheduleTrigger:
    def __init__(self, services: Services, schedules: ScheduleRepository, queue: QueueRepository) -> None:
        self._s = services
        self._schedules = schedules
        self._queue = queue
        self.last_trigger_at: datetime | None = None

    async def trigger(self) -> dict[str, Any]:
        """Enqueue every due schedule once (see the module docstring)."""
        async with self._s.locks.hold("scheduler:trigger"):  # one at a time per instance; others are guarded
            now = datetime.now(UTC)
            due = await self._schedules.due(now, TRIGGER_BATCH)
            enqueued: list[dict[str, Any]] = []
            failed = 0
            for schedule in due:
                try:
                    item = await self._enqueue_due(schedule, now)
                except ServiceError as exc:
                    failed += 1
                    log.error(
                        "could not enqueue a due schedule",
                        extra={"schedule_id": schedule["schedule_id"], "org_slug": schedule["org_slug"],
                               "error": exc.message},
                    )  # fmt: skip
                    continue
                if item is not None:
                    enqueued.append(item)
            self.last_trigger_at = now
        if enqueued:
            log.info("scheduler enqueued due schedules", extra={"count": len(enqueued)})
        return {"due": len(due), "enqueued": len(enqueued), "failed": failed, "items": enqueued, "at": now}

    async def _enqueue_due(self, schedule: dict[str, Any], now: datetime) -> dict[str, Any] | None:
        schedule_id, org_slug = schedule["schedule_id"], schedule["org_slug"]
        cron, zone = check_cron(schedule["cron_expression"]), check_timezone(schedule["timezone"])
        seen: datetime = schedule["next_run_time"]
        due_time = latest_due(cron, zone, seen=seen, now=now)
        stored = json.loads(schedule["parameters"]) if schedule["parameters"] else {}
        params = run_parameters(stored, due_time)
        key = due_key(schedule_id, due_time)
        item_id = f"q_{key}"
        await self._schedules.record_due(
            {
                "scheduled_run_id": f"sr_{key}",
                "schedule_id": schedule_id,
                "org_slug": org_slug,
                "pipeline_path": schedule["pipeline_path"],
                "due_time": due_time,
                "queue_item_id": item_id,
                "status": "ENQUEUED",
                "created_at": now,
                "updated_at": now,
            }
        )
        inserted = await self._queue.enqueue(
            {
                "queue_item_id": item_id,
                "org_slug": org_slug,
                "schedule_id": schedule_id,
                "pipeline_path": schedule["pipeline_path"],
                "parameters": json.dumps(params, sort_keys=True, separators=(",", ":")),
                "due_time": due_time,
                "state": "QUEUED",
                "priority": 0,
                "attempts": 0,
                "max_attempts": schedule["max_attempts"] or self._s.settings.schedule_default_max_attempts,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
        )
        await self._schedules.advance(
            org_slug, schedule_id, seen=seen, due=due_time, next_time=next_due(cron, zone, now)
        )
        if not inserted:
            return None
        return {"queue_item_id": item_id, "schedule_id": schedule_id, "org_slug": org_slug, "due_time": due_time}
