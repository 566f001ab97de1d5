"""Admin lifecycle of organizations: plans, suspension, listing, key revocation."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query

from src.app.dependencies.auth import AdminDep, AdminOrgDep
from src.app.dependencies.services import ServicesDep
from src.app.schemas.lifecycle import SubscriptionRequest, SuspendRequest
from src.core.services import keys, lifecycle

router = APIRouter(prefix="/api/v1/admin/organizations", tags=["admin"])


@router.get("")
async def list_organizations(
    _: AdminDep,
    services: ServicesDep,
    status: Annotated[Literal["ACTIVE", "SUSPENDED"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Organizations with their status and plan."""
    return await lifecycle.list_orgs(services, status=status, limit=limit, offset=offset)


@router.put("/{org_slug}/subscription")
async def change_subscription(org: AdminOrgDep, body: SubscriptionRequest) -> dict[str, Any]:
    """Change the plan; its limits apply from the next run."""
    return await lifecycle.change_plan(org.services, org.slug, body.subscription_plan)


@router.post("/{org_slug}/suspend")
async def suspend(org: AdminOrgDep, body: SuspendRequest = Body(default_factory=SuspendRequest)) -> dict[str, Any]:
    """The org's keys get 403 and its pipelines cannot run; its data stays."""
    return await lifecycle.set_status(org.services, org.slug, suspend=True, reason=body.reason)


@router.post("/{org_slug}/reactivate")
async def reactivate(org: AdminOrgDep) -> dict[str, Any]:
    return await lifecycle.set_status(org.services, org.slug, suspend=False, reason=None)


@router.delete("/{org_slug}/api-keys/{key_id}")
async def revoke_api_key(
    org: AdminOrgDep, key_id: Annotated[str, Path(pattern=r"^key_[0-9a-f]{16}$")]
) -> dict[str, Any]:
    """Revoke one key without a replacement (effective at once on this instance)."""
    return await keys.revoke_key(org.services, org.slug, key_id)
