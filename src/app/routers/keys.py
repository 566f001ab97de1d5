"""The org's own key lifecycle: rotate (new key shown once) and list (never the key or its hash)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Response

from src.app.dependencies.auth import CallerDep, OrgDep
from src.app.dependencies.services import ServicesDep
from src.app.schemas.lifecycle import RotateRequest
from src.core.services import keys
from src.core.services.orgs import get_org
from src.core.services.quotas import usage_report

router = APIRouter(prefix="/api/v1/organizations", tags=["organizations"])


@router.post("/{org_slug}/api-keys/rotate")
async def rotate(
    org: OrgDep,
    identity: CallerDep,
    services: ServicesDep,
    response: Response,
    body: RotateRequest = Body(default_factory=RotateRequest),
) -> dict[str, Any]:
    """A new key, returned once; the old one keeps working for ``grace_period_seconds``."""
    await get_org(services, org)
    response.headers["Cache-Control"] = "no-store"
    created_by = "admin" if identity.is_admin else "org"
    return await keys.rotate_key(services, org, grace_seconds=body.grace_period_seconds, created_by=created_by)


@router.get("/{org_slug}/api-keys")
async def list_api_keys(org: OrgDep, services: ServicesDep) -> dict[str, Any]:
    await get_org(services, org)
    rows = await keys.list_keys(services, org)
    return {"org_slug": org, "keys": rows, "count": len(rows)}


@router.get("/{org_slug}/usage")
async def usage(org: OrgDep, services: ServicesDep) -> dict[str, Any]:
    """Today's and this month's run counts against the plan's limits, and runs in progress."""
    return await usage_report(services, org)
