"""Organization lifecycle (admin): plan changes, suspension, reactivation, listing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from src.core import pagination
from src.core.services.container import invalidate_org
from src.core.services.orgs import get_org

if TYPE_CHECKING:
    from src.core.services.container import Services


async def change_plan(services: Services, org_slug: str, plan_name: str) -> dict[str, Any]:
    """New limits apply to the next run (the quota row carries them)."""
    org = await get_org(services, org_slug)
    plan = services.plans.get(plan_name)
    if org["subscription_plan"] != plan_name:
        await services.orgs.change_plan(
            org_slug,
            plan=plan_name,
            daily=plan.daily_run_limit,
            monthly=plan.monthly_run_limit,
            concurrent=plan.concurrent_run_limit,
        )
    await services.quotas.set_limits(
        org_slug, daily=plan.daily_run_limit, monthly=plan.monthly_run_limit, concurrent=plan.concurrent_run_limit
    )
    invalidate_org(services, org_slug)
    return await get_org(services, org_slug)


async def set_status(services: Services, org_slug: str, *, suspend: bool, reason: str | None) -> dict[str, Any]:
    await get_org(services, org_slug)
    await services.orgs.set_status(org_slug, status="SUSPENDED" if suspend else "ACTIVE", reason=reason)
    invalidate_org(services, org_slug)
    return await get_org(services, org_slug)


async def list_orgs(
    services: Services, *, status: str | None, limit: int, offset: int, page_token: str | None
) -> dict[str, Any]:
    """One page of organizations (oldest first): by ``page_token`` (preferred) or ``offset``."""
    filters = {"status": status}
    position = pagination.decode(page_token, "orgs", filters, 2)
    after = (pagination.timestamp(position[0]), str(position[1])) if position else None
    rows = await services.orgs.list_orgs(status=status, limit=limit + 1, offset=0 if after else offset, after=after)
    shown, token = pagination.page(rows, limit, "orgs", filters, lambda r: (r["created_at"], r["org_slug"]))
    return {"organizations": shown, "count": len(shown), "limit": limit, "offset": offset, "next_page_token": token}
