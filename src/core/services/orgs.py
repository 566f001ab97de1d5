"""Organization reads: the profile with its limits, and where an org's cost tables are."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from src.core.engine.sql import TableRef
from src.core.errors import NotFoundError

if TYPE_CHECKING:
    from src.core.services.container import Services

COST_PIPELINE = "gcp/cost/cost_billing"
COST_PIPELINES = {"gcp": COST_PIPELINE, "aws": "aws/cost/cost_billing"}
Provider = Literal["gcp", "aws", "both"]


async def get_org(services: Services, org_slug: str) -> dict[str, Any]:
    """The org's profile with its limits (cached in-process; changes made here invalidate it)."""
    cached = services.org_cache.get(org_slug)
    if cached is not None:
        return dict(cached)
    found = await services.lookups.run(f"org:{org_slug}", lambda: services.orgs.get(org_slug))
    if found is None:
        raise NotFoundError(f"organization {org_slug!r} not found", code="org_not_found")
    row = dict(found)  # shared by the callers of one lookup: never mutate it
    limits = {k: row.pop(k) for k in ("daily_limit", "monthly_limit", "concurrent_limit")}
    row["limits"] = {
        "daily_run_limit": limits["daily_limit"],
        "monthly_run_limit": limits["monthly_limit"],
        "concurrent_run_limit": limits["concurrent_limit"],
    }
    services.org_cache.put(org_slug, row)
    return dict(row)


async def org_profile_json(services: Services, org_slug: str, render: Callable[[dict[str, Any]], bytes]) -> bytes:
    """The org's profile rendered by ``render`` (the route's response model), cached like the
    profile itself: the hot GET answers from bytes rendered once per TTL."""
    cached = services.org_json.get(org_slug)
    if cached is None:
        cached = render(await get_org(services, org_slug))
        services.org_json.put(org_slug, cached)
    return cached


def cost_table(services: Services, org_slug: str, provider: str = "gcp") -> TableRef:
    """The cost table a provider's cost pipeline writes (its ``destination_table`` variable)."""
    pipeline = COST_PIPELINES[provider]
    table = str(services.store.get(pipeline).spec.variables["destination_table"])
    return TableRef(services.settings.gcp_project_id, services.settings.org_dataset(org_slug), table)
