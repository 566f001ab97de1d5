"""When a schedule is due: five-field cron expressions read as wall-clock times in an IANA zone.

Due times are computed on the zone's local (naive) wall clock with croniter, then mapped to UTC:

* a wall time that does not exist (the spring-forward gap, e.g. 02:30 in America/New_York on
  2026-03-08) runs at the same offset from the gap's start on the new clock (03:30 EDT) — once,
  never skipped;
* a wall time that exists twice (the fall-back hour) runs at its first occurrence only — once,
  never twice.

Every due time is strictly later than the one before it. Catch-up (``latest_due``): after an
outage, only the latest missed due time is run, once; the next due time is then the first one in
the future.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from src.core.errors import ValidationFailedError

# Enough candidate wall times to step over any repeated hour (fall-back) minute by minute.
_MAX_STEPS = 2000


def _invalid(message: str, field: str) -> ValidationFailedError:
    return ValidationFailedError(message, code="invalid_schedule", details={"field": field})


def check_cron(expression: str) -> str:
    """A valid five-field cron expression that fires at least once (normalized spacing), or 422."""
    fields = expression.split()
    if len(fields) != 5:
        raise _invalid(
            "cron_expression must have five fields: minute hour day-of-month month day-of-week", "cron_expression"
        )
    normalized = " ".join(fields)
    if not croniter.is_valid(normalized):
        raise _invalid(f"cron_expression {expression!r} is not a valid cron expression", "cron_expression")
    try:
        croniter(normalized, datetime(2000, 1, 1)).get_next(datetime)
    except (CroniterError, ValueError, KeyError):  # e.g. "0 0 30 2 *"
        raise _invalid(f"cron_expression {expression!r} never fires", "cron_expression") from None
    return normalized


def check_timezone(name: str) -> ZoneInfo:
    try:
        if name != name.strip() or not name or name.startswith(("/", ".")):
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _invalid(
            f"timezone {name!r} is not an IANA time zone (e.g. 'UTC', 'Europe/Berlin')", "timezone"
        ) from None


def to_utc(wall: datetime, zone: ZoneInfo) -> datetime:
    """A naive wall time in ``zone`` as an aware UTC instant (gap: shifted forward; repeated: first)."""
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def next_due(expression: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The first due time strictly after ``after`` (aware), as an aware UTC datetime."""
    it = croniter(expression, _wall(after, zone))
    for _ in range(_MAX_STEPS):
        candidate = to_utc(it.get_next(datetime), zone)
        if candidate > after:
            return candidate
    raise _invalid(f"cron_expression {expression!r} has no due time after {after.isoformat()}", "cron_expression")


def first_due_at_or_after(expression: str, zone: ZoneInfo, start: datetime) -> datetime:
    return next_due(expression, zone, start - timedelta(microseconds=1))


def latest_due(expression: str, zone: ZoneInfo, *, seen: datetime, now: datetime) -> datetime:
    """The catch-up rule: the latest due time in ``[seen, now]`` (``seen`` itself is one, ``<= now``)."""
    it = croniter(expression, _wall(now, zone) + timedelta(minutes=1))
    for _ in range(_MAX_STEPS):
        candidate = to_utc(it.get_prev(datetime), zone)
        if candidate <= now:
            return max(candidate, seen)
    return seen
