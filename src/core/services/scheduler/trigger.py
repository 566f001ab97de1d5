"""The trigger: due schedules become queue items, once per due time.

``POST /api/v1/scheduler/trigger`` (Cloud Scheduler every few minutes, or the local loop). One call:

1. reads the active schedules whose ``next_run_time`` has come (up to ``TRIGGER_BATCH``);
2. claims them all with ONE guarded UPDATE (``ScheduleRepository.claim``): each moves on to its
   next due time only if it still reads what this call saw, stamped with this call's token — of
   any number of triggers on any number of instances, one claims a due time;
3. reads back what it claimed and appends, in one INSERT each, the due times
   (``org_scheduled_pipeline_runs``) and their queue items, whose ids derive from (schedule, due
   time) — a retried INSERT adds nothing twice;
4. re-enqueues claims whose items never appeared (a trigger that died between 2 and 3), once they
   are older than the queue lease.

Catch-up rule: after an outage, one item covers every due time the schedule missed — the latest
one, and for a relative window (``yesterday``, ``last_N_days``) a window from the first missed due
date's window start to the latest's end (at most ``MAX_RUN_WINDOW_DAYS``, keeping the latest days);
``next_run_time`` becomes the first due time in the future. The window is resolved from the due
times (UTC) at enqueue time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from src.core.engine.repositories.queue import QueueRepository
from src.core.engine.repositories.schedules import Claim, ScheduleRepository
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
        now = datetime.now(UTC)
        due = await self._schedules.due(now, TRIGGER_BATCH)
        claims: list[Claim] = []
        failed = 0
        for schedule in due:
            try:
                claims.append(_claim(schedule, now))
            except ServiceError as exc:  # a stored cron or zone that no longer parses
                failed += 1
                log.error(
                    "could not read a due schedule",
                    extra={"schedule_id": schedule["schedule_id"], "org_slug": schedule["org_slug"],
                           "error": exc.message},
                )  # fmt: skip
        token = f"{self._s.settings.instance_id}/{secrets.token_hex(8)}"
        await self._schedules.claim(claims, token=token, now=now)
        claimed = await self._schedules.claimed(token) if claims else []
        first_missed = {c.schedule_id: c.seen for c in claims}
        items = [self._item(s, s["last_claimed_due"], first_missed.get(s["schedule_id"]), now) for s in claimed]
        lease = timedelta(seconds=self._s.settings.queue_lease_seconds)
        orphans = await self._schedules.unqueued_claims(claimed_before=now - lease, limit=TRIGGER_BATCH)
        recovered = [self._item(s, s["last_claimed_due"], None, now) for s in orphans]
        await self._enqueue([*items, *recovered], now)
        self.last_trigger_at = now
        if items or recovered:
            log.info("scheduler enqueued due schedules", extra={"count": len(items), "recovered": len(recovered)})
        return {
            "due": len(due),
            "enqueued": len(items),
            "recovered": len(recovered),
            "failed": failed,
            "items": [_public(i) for i in items],
            "at": now,
        }

    def _item(
        self, schedule: dict[str, Any], due_time: datetime, first_missed: datetime | None, now: datetime
    ) -> dict[str, Any]:
        stored = json.loads(schedule["parameters"]) if schedule["parameters"] else {}
        params = run_parameters(stored, due_time, first_due=first_missed, max_days=self._s.settings.max_run_window_days)
        key = due_key(schedule["schedule_id"], due_time)
        return {
            "queue_item_id": f"q_{key}",
            "org_slug": schedule["org_slug"],
            "schedule_id": schedule["schedule_id"],
            "pipeline_path": schedule["pipeline_path"],
            "parameters": json.dumps(params, sort_keys=True, separators=(",", ":")),
            "due_time": due_time,
            "state": "QUEUED",
            "priority": 0,
            "attempts": 0,
            "requeues": 0,
            "max_attempts": schedule["max_attempts"] or self._s.settings.schedule_default_max_attempts,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }

    async def _enqueue(self, items: list[dict[str, Any]], now: datetime) -> None:
        if not items:
            return
        await self._schedules.record_due(
            [
                {
                    "scheduled_run_id": f"sr_{item['queue_item_id'][2:]}",
                    "schedule_id": item["schedule_id"],
                    "org_slug": item["org_slug"],
                    "pipeline_path": item["pipeline_path"],
                    "due_time": item["due_time"],
                    "queue_item_id": item["queue_item_id"],
                    "status": "ENQUEUED",
                    "created_at": now,
                    "updated_at": now,
                }
                for item in items
            ]
        )
        await self._queue.enqueue(items)


def _claim(schedule: dict[str, Any], now: datetime) -> Claim:
    cron, zone = check_cron(schedule["cron_expression"]), check_timezone(schedule["timezone"])
    seen: datetime = schedule["next_run_time"]
    return Claim(
        schedule_id=schedule["schedule_id"],
        seen=seen,
        due=latest_due(cron, zone, seen=seen, now=now),
        next_time=next_due(cron, zone, now),
    )


def _public(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "queue_item_id": item["queue_item_id"],
        "schedule_id": item["schedule_id"],
        "org_slug": item["org_slug"],
        "due_time": item["due_time"],
        "parameters": json.loads(item["parameters"]),
    }
