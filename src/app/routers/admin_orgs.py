"""Admin lifecycle of organizations: plans, suspension, listing, key revocation."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query

from src.app.audit import audited
from src.app.dependencies.auth import AdminDep, AdminOrgDep
from src.app.dependencies.services import ServicesDep
from src.app.schemas.common import AUTH, BODY, ORG, PageToken, errors, limit_query
from src.app.schemas.keys import KEY_ID_PATTERN, RevokedKeyResponse
from src.app.schemas.lifecycle import SubscriptionRequest, SuspendRequest
from src.app.schemas.organizations import OrgDetail, OrgListResponse
from src.core.services import keys, lifecycle

router = APIRouter(prefix="/api/v1/admin/organizations", tags=["admin"])

MAX_OFFSET = 100_000


@router.get("", response_model=OrgListResponse, responses=errors(*AUTH, 422))
async def list_organizations(
    identity: AdminDep,
    services: ServicesDep,
    status: Annotated[Literal["ACTIVE", "SUSPENDED"] | None, Query()] = None,
    limit: Annotated[int, limit_query(1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip (prefer page_token).")] = 0,
    page_token: PageToken = None,
) -> dict[str, Any]:
    """Organizations with their status and plan, oldest first, one page at a time."""
    async with audited(identity, "admin.organizations_list"):
        return await lifecycle.list_orgs(services, status=status, limit=limit, offset=offset, page_token=page_token)


@router.put("/{org_slug}/subscription", response_model=OrgDetail, responses=errors(*ORG, *BODY))
async def change_subscription(org: AdminOrgDep, body: SubscriptionRequest) -> dict[str, Any]:
    """Change the plan; its limits apply from the next run."""
    async with audited(org.identity, "admin.subscription_change", org=org.slug, target=body.subscription_plan):
        return await lifecycle.change_plan(org.services, org.slug, body.subscription_plan)


@router.post("/{org_slug}/suspend", response_model=OrgDetail, responses=errors(*ORG, *BODY))
async def suspend(org: AdminOrgDep, body: SuspendRequest = Body(default_factory=SuspendRequest)) -> dict[str, Any]:
    """The org's keys get 403 and its pipelines cannot run; its data stays."""
    async with audited(org.identity, "admin.organization_suspend", org=org.slug):
        return await lifecycle.set_status(org.services, org.slug, suspend=True, reason=body.reason)


@router.post("/{org_slug}/reactivate", response_model=OrgDetail, responses=errors(*ORG))
async def reactivate(org: AdminOrgDep) -> dict[str, Any]:
    async with audited(org.identity, "admin.organization_reactivate", org=org.slug):
        return await lifecycle.set_status(org.services, org.slug, suspend=False, reason=None)


@router.delete("/{org_slug}/api-keys/{key_id:key_id}", response_model=RevokedKeyResponse, responses=errors(*ORG))
async def revoke_api_key(org: AdminOrgDep, key_id: Annotated[str, Path(pattern=KEY_ID_PATTERN)]) -> dict[str, Any]:
    """Revoke one key without a replacement (even the org's last full key): at once on this
    instance, within KEY_CACHE_TTL_SECONDS on the others."""
    async with audited(org.identity, "admin.api_key_revoke", org=org.slug, target=key_id):
        return await keys.revoke_key(org.services, org.slug, key_id, keys.KeyActor(is_admin=True))
