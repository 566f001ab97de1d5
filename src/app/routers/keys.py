"""The org's own key lifecycle: rotate (new key shown once) and list (never the key or its hash)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Response

from src.app.dependencies.auth import OrgRead, OrgWrite
from src.app.schemas.lifecycle import RotateRequest
from src.core.errors import PermissionDeniedError
from src.core.services import keys
from src.core.services.orgs import get_org
from src.core.services.quotas import usage_report

router = APIRouter(prefix="/api/v1/organizations", tags=["organizations"])


@router.post("/{org_slug}/api-keys/rotate")
async def rotate(
    org: OrgWrite,
    response: Response,
    body: RotateRequest = Body(default_factory=RotateRequest),
) -> dict[str, Any]:
    """A new key, returned once; the old one keeps working for ``grace_period_seconds``. The new
    key has the calling key's scopes, or fewer (``scopes``): a key never grants more than its caller."""
    wanted = frozenset(body.scopes) if body.scopes is not None else org.identity.scopes
    if not wanted <= org.identity.scopes:
        raise PermissionDeniedError(
            f"a new key cannot have scopes the calling key lacks: {sorted(wanted - org.identity.scopes)}",
            code="insufficient_scope",
        )
    await get_org(org.services, org.slug)
    response.headers["Cache-Control"] = "no-store"
    created_by = "admin" if org.identity.is_admin else "org"
    return await keys.rotate_key(
        org.services, org.slug, grace_seconds=body.grace_period_seconds, created_by=created_by, key_scopes=wanted
    )


@router.get("/{org_slug}/api-keys")
async def list_api_keys(org: OrgRead) -> dict[str, Any]:
    await get_org(org.services, org.slug)
    rows = await keys.list_keys(org.services, org.slug)
    return {"org_slug": org.slug, "keys": rows, "count": len(rows)}


@router.get("/{org_slug}/usage")
async def usage(org: OrgRead) -> dict[str, Any]:
    """Today's and this month's run counts against the plan's limits, and runs in progress."""
    return await usage_report(org.services, org.slug)
