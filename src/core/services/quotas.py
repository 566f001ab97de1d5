"""Plans and usage: which limit refused a run, and the usage report.

Which runs count: every run the service accepts (202) — from the API, an admin acting for the
org, or the scheduler — whatever its outcome. Refused requests (401, 403, 404, 409, 422, 429)
never count. Days and months are UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from src.core.engine.repositories.quotas import Usage
from src.core.errors import NotFoundError, TooManyRequestsError

if TYPE_CHECKING:
    from src.core.services.container import Services


def _next_day(today: date) -> date:
    return today + timedelta(days=1)


def _next_month(today: date) -> date:
    return (today.replace(day=28) + timedelta(days=4)).replace(day=1)


def _iso(day: date) -> str:
    return f"{day.isoformat()}T00:00:00Z"


def quota_refusal(usage: Usage, *, today: date, concurrent_retry_after: int) -> TooManyRequestsError:
    """The 429 for whichever limit is reached (day, then month, then concurrent)."""
    now = datetime.now(UTC)
    if usage.daily_runs >= usage.daily_limit:
        resets = _next_day(today)
        limit, count, maximum, detail = "daily", usage.daily_runs, usage.daily_limit, "runs today (UTC)"
    elif usage.monthly_runs >= usage.monthly_limit:
        resets = _next_month(today)
        limit, count, maximum, detail = "monthly", usage.monthly_runs, usage.monthly_limit, "runs this month (UTC)"
    else:
        return TooManyRequestsError(
            f"concurrent run limit reached: {usage.concurrent_runs} of {usage.concurrent_limit} running; "
            "retry when a run finishes",
            code="quota_exceeded",
            details={"limit": "concurrent", "count": usage.concurrent_runs, "maximum": usage.concurrent_limit},
            headers={"Retry-After": str(concurrent_retry_after)},
        )
    reset_at = datetime(resets.year, resets.month, resets.day, tzinfo=UTC)
    retry_after = max(1, int((reset_at - now).total_seconds()))
    return TooManyRequestsError(
        f"{limit} run limit reached: {count} of {maximum} {detail}; resets at {_iso(resets)}",
        code="quota_exceeded",
        details={"limit": limit, "count": count, "maximum": maximum, "resets_at": _iso(resets)},
        headers={"Retry-After": str(retry_after)},
    )


async def usage_report(services: Services, org_slug: str) -> dict[str, Any]:
    today = datetime.now(UTC).date()
    usage = await services.quotas.usage(org_slug, today)
    if usage is None:
        raise NotFoundError(f"organization {org_slug!r} not found", code="org_not_found")
    running = await services.runs.count_active(org_slug)
    month_start = datetime(today.year, today.month, 1, tzinfo=UTC)
    warehouse = await services.runs.warehouse_usage(org_slug, month_start)
    billed = warehouse.get("bytes_billed")
    price = services.settings.bigquery_price_per_tib_usd
    return {
        "org_slug": org_slug,
        "today": {
            "date": today,
            "runs": usage.daily_runs,
            "limit": usage.daily_limit,
            "remaining": max(usage.daily_limit - usage.daily_runs, 0),
            "resets_at": _iso(_next_day(today)),
        },
        "month": {
            "month": today.strftime("%Y-%m"),
            "runs": usage.monthly_runs,
            "limit": usage.monthly_limit,
            "remaining": max(usage.monthly_limit - usage.monthly_runs, 0),
            "resets_at": _iso(_next_month(today)),
        },
        "concurrent": {"running": running, "slots_in_use": usage.concurrent_runs, "limit": usage.concurrent_limit},
        "warehouse": {
            "month": today.strftime("%Y-%m"),
            "runs": int(warehouse.get("runs") or 0),
            "bytes_processed": _int_or_none(warehouse.get("bytes_processed")),
            "bytes_billed": _int_or_none(billed),
            "slot_ms": _int_or_none(warehouse.get("slot_ms")),
            "price_per_tib_usd": price,
            # On-demand analysis pricing: bytes billed x the price per TiB (2^40 bytes).
            "estimated_cost_usd": round(int(billed) / 2**40 * price, 6) if billed is not None else None,
        },
    }


def _int_or_none(value: Any) -> int | None:
    return int(value) if value is not None else None
