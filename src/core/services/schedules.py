"""An organization's pipeline schedules: create, read, change, pause, delete (``org_pipeline_configs``).

A schedule names an org-runnable pipeline (the run route's rules: unknown -> 404), a five-field cron
expression read in an IANA time zone (``services/cron.py``), the pipeline's declared parameters and,
for a pipeline with a date window, a relative ``window``:

* ``"yesterday"``     -> start_date = end_date = the day before the due date;
* ``"last_N_days"``   -> the N days ending the day before the due date (N up to the pipeline's
                         maximum window), so late corrections of the export are reloaded.

The due date is the due time's date in UTC; the window is resolved when the due time is enqueued.
``next_run_time`` is the next due time (``null`` while paused). Pausing or deleting a schedule cancels
its items still waiting in the queue; resuming it (or changing its cron or zone) starts from now:
times missed while paused are not caught up.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from src.core import pagination
from src.core.errors import NotFoundError, ValidationFailedError
from src.core.pipeline.loader import LoadedPipeline
from src.core.pipeline.variables import Window, resolve_window, validate_parameters
from src.core.placeholders import PERIOD_VARIABLES, WINDOW_VARIABLES
from src.core.services.cron import check_cron, check_timezone, first_due_at_or_after
from src.core.services.orgs import get_org

if TYPE_CHECKING:
    from src.core.services.container import Services

WINDOW_KEY = "window"
_LAST_N_DAYS = re.compile(r"^last_([1-9][0-9]{0,3})_days$")


def _invalid(message: str, field: str) -> ValidationFailedError:
    return ValidationFailedError(message, code="invalid_schedule", details={"field": field})


# --- parameters ---------------------------------------------------------------------------------
def relative_window(value: str, due_date: date) -> Window:
    """``yesterday`` or ``last_N_days``, relative to the due date (UTC)."""
    if value == "yesterday":
        days = 1
    else:
        match = _LAST_N_DAYS.fullmatch(value)
        if match is None:
            raise _invalid(f"window must be 'yesterday' or 'last_N_days' (e.g. 'last_3_days'), got {value!r}", "window")
        days = int(match.group(1))
    end = due_date - timedelta(days=1)
    return Window(end - timedelta(days=days - 1), end)


def run_parameters(
    stored: Mapping[str, Any],
    due_time: datetime,
    *,
    first_due: datetime | None = None,
    max_days: int | None = None,
) -> dict[str, Any]:
    """The run request of one due time: declared parameters + the window resolved to dates. With
    ``first_due`` (the first of several missed due times), the window runs from that due date's
    window start to ``due_time``'s window end — one catch-up run covers every missed day — at most
    ``max_days`` long, keeping the latest days."""
    params = {k: v for k, v in stored.items() if k != WINDOW_KEY}
    if stored.get(WINDOW_KEY) is not None:
        relative = str(stored[WINDOW_KEY])
        window = relative_window(relative, due_time.astimezone(UTC).date())
        start = window.start_date
        if first_due is not None and first_due < due_time:
            start = min(start, relative_window(relative, first_due.astimezone(UTC).date()).start_date)
        if max_days is not None:
            start = max(start, window.end_date - timedelta(days=max_days - 1))
        params.update(start_date=start.isoformat(), end_date=window.end_date.isoformat())
    return params


def check_parameters(pipeline: LoadedPipeline, params: Mapping[str, Any], *, max_window_days: int) -> dict[str, Any]:
    """The schedule's parameters as they will be run, checked now with the run route's rules (422)."""
    spec = pipeline.spec
    dates = sorted((WINDOW_VARIABLES | PERIOD_VARIABLES) & set(params))
    if dates:
        raise _invalid(
            f'a schedule takes a relative window ({{"window": "yesterday"}} or "last_N_days"), not {dates[0]}',
            dates[0],
        )
    window = params.get(WINDOW_KEY)
    if window is not None and not isinstance(window, str):
        raise _invalid("window must be a string such as 'yesterday' or 'last_3_days'", "window")
    if spec.window is None and window is not None:
        raise _invalid("this pipeline takes no date window", "window")
    if spec.window is not None and spec.window.required and window is None:
        raise _invalid("window is required for this pipeline: 'yesterday' or 'last_N_days'", "window")
    today = datetime.now(UTC).date()
    resolved = run_parameters(params, datetime.now(UTC))
    validate_parameters(spec, resolved)  # unknown or mistyped declared parameters -> 422
    resolve_window(spec, resolved, max_days=max_window_days, today=today)  # longer than allowed -> 422
    return dict(params)


# --- views --------------------------------------------------------------------------------------
def schedule_view(row: Mapping[str, Any]) -> dict[str, Any]:
    raw = row.get("parameters")
    return {
        "schedule_id": row["schedule_id"],
        "org_slug": row["org_slug"],
        "pipeline": row["pipeline_path"],
        "cron_expression": row["cron_expression"],
        "timezone": row["timezone"],
        "parameters": json.loads(raw) if isinstance(raw, str) else {},
        "is_active": bool(row["is_active"]),
        "max_attempts": row["max_attempts"],
        "description": row.get("description"),
        "next_run_time": row.get("next_run_time"),
        "last_run_time": row.get("last_run_time"),
        "last_run_status": row.get("last_run_status"),
        "last_pipeline_logging_id": row.get("last_pipeline_logging_id"),
        "created_at": row.get("created_at"),
        "updated_at": row.get("updated_at"),
    }


def item_view(row: Mapping[str, Any]) -> dict[str, Any]:
    raw = row.get("parameters")
    hidden = {"lease_owner", "parameters"}
    return {**{k: v for k, v in row.items() if k not in hidden}, "parameters": json.loads(raw) if raw else {}}


# --- the service --------------------------------------------------------------------------------
def _runnable(services: Services, pipeline_path: str) -> LoadedPipeline:
    parts = pipeline_path.split("/")
    if len(parts) != 3:
        raise NotFoundError(f"no runnable pipeline {pipeline_path!r}", code="pipeline_not_found")
    return services.store.runnable(*parts)


def _next_run(cron: str, timezone: str, start: datetime) -> datetime:
    return first_due_at_or_after(cron, check_timezone(timezone), start)


async def _existing(services: Services, org_slug: str, schedule_id: str) -> dict[str, Any]:
    row = await services.scheduler.schedules.get(org_slug, schedule_id)
    if row is None:
        raise NotFoundError(f"schedule {schedule_id!r} not found", code="schedule_not_found")
    return row


async def create_schedule(
    services: Services,
    org_slug: str,
    *,
    pipeline: str,
    cron_expression: str,
    timezone: str,
    parameters: Mapping[str, Any],
    is_active: bool,
    max_attempts: int | None,
    description: str | None,
    starts_at: datetime | None,
) -> dict[str, Any]:
    """``starts_at`` (default now): the first due time is the first cron time at or after it. A past
    ``starts_at`` makes the latest cron time since then due at once (the catch-up rule)."""
    await get_org(services, org_slug)
    loaded = _runnable(services, pipeline)
    cron = check_cron(cron_expression)
    check_timezone(timezone)
    params = check_parameters(loaded, parameters, max_window_days=services.settings.max_run_window_days)
    now = datetime.now(UTC)
    row = {
        "schedule_id": f"sch_{secrets.token_hex(8)}",
        "org_slug": org_slug,
        "pipeline_path": loaded.path,
        "cron_expression": cron,
        "timezone": timezone,
        "parameters": json.dumps(params, sort_keys=True, separators=(",", ":")),
        "is_active": is_active,
        "max_attempts": max_attempts or services.settings.schedule_default_max_attempts,
        "next_run_time": _next_run(cron, timezone, starts_at or now) if is_active else None,
        "description": description,
        "created_at": now,
        "updated_at": now,
    }
    await services.scheduler.schedules.insert(row)
    return schedule_view(row)


async def list_schedules(
    services: Services, org_slug: str, *, limit: int, page_token: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the org's schedules (oldest first) and the token of the next page."""
    await get_org(services, org_slug)
    filters = {"org": org_slug}
    position = pagination.decode(page_token, "schedules", filters, 2)
    after = (pagination.timestamp(position[0]), str(position[1])) if position else None
    rows = await services.scheduler.schedules.list_for_org(org_slug, limit=limit + 1, after=after)
    shown, token = pagination.page(rows, limit, "schedules", filters, lambda r: (r["created_at"], r["schedule_id"]))
    return [schedule_view(r) for r in shown], token


async def get_schedule(services: Services, org_slug: str, schedule_id: str) -> dict[str, Any]:
    return schedule_view(await _existing(services, org_slug, schedule_id))


async def update_schedule(
    services: Services, org_slug: str, schedule_id: str, changes: Mapping[str, Any]
) -> dict[str, Any]:
    """Change some fields. A new cron, zone, or a resumed schedule runs next at its first cron time
    from now; pausing clears ``next_run_time`` and cancels the schedule's waiting queue items."""
    current = await _existing(services, org_slug, schedule_id)
    updates: dict[str, Any] = {}
    cron, timezone = current["cron_expression"], current["timezone"]
    if changes.get("cron_expression") is not None:
        cron = updates["cron_expression"] = check_cron(changes["cron_expression"])
    if changes.get("timezone") is not None:
        check_timezone(changes["timezone"])
        timezone = updates["timezone"] = changes["timezone"]
    if changes.get("parameters") is not None:
        loaded = _runnable(services, current["pipeline_path"])
        params = check_parameters(loaded, changes["parameters"], max_window_days=services.settings.max_run_window_days)
        updates["parameters"] = json.dumps(params, sort_keys=True, separators=(",", ":"))
    for name in ("max_attempts", "description"):
        if name in changes:
            updates[name] = changes[name]
    if updates.get("max_attempts") is None:
        updates.pop("max_attempts", None)
    active = bool(current["is_active"]) if changes.get("is_active") is None else bool(changes["is_active"])
    updates["is_active"] = active
    if not active:
        updates["next_run_time"] = None
    elif not current["is_active"] or {"cron_expression", "timezone"} & set(updates):
        updates["next_run_time"] = _next_run(cron, timezone, datetime.now(UTC))
    if not await services.scheduler.schedules.update(org_slug, schedule_id, updates):
        raise NotFoundError(f"schedule {schedule_id!r} not found", code="schedule_not_found")
    if not active:
        await services.scheduler.queue.cancel_waiting(org_slug, schedule_id, "schedule paused")
    return await get_schedule(services, org_slug, schedule_id)


async def delete_schedule(services: Services, org_slug: str, schedule_id: str) -> dict[str, Any]:
    await _existing(services, org_slug, schedule_id)
    if not await services.scheduler.schedules.delete(org_slug, schedule_id):
        raise NotFoundError(f"schedule {schedule_id!r} not found", code="schedule_not_found")
    cancelled = await services.scheduler.queue.cancel_waiting(org_slug, schedule_id, "schedule deleted")
    return {"schedule_id": schedule_id, "deleted": True, "cancelled_queue_items": cancelled}


async def schedule_items(
    services: Services, org_slug: str, schedule_id: str, limit: int, page_token: str | None = None
) -> dict[str, Any]:
    """The schedule's queue items, newest due time first (state, attempts, last error, run id)."""
    await _existing(services, org_slug, schedule_id)
    filters = {"org": org_slug, "schedule": schedule_id}
    position = pagination.decode(page_token, "schedule_items", filters, 2)
    after = (pagination.timestamp(position[0]), str(position[1])) if position else None
    rows = await services.scheduler.queue.for_schedule(org_slug, schedule_id, limit + 1, after)
    shown, token = pagination.page(
        rows, limit, "schedule_items", filters, lambda r: (r["due_time"], r["queue_item_id"])
    )
    return {
        "schedule_id": schedule_id,
        "items": [item_view(r) for r in shown],
        "count": len(shown),
        "next_page_token": token,
    }
