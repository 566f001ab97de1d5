"""The org's keys — create, rotate, revoke, list (never the key or its hash) — and its usage."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Response, status

from src.app.audit import audited
from src.app.dependencies.auth import Identity, OrgRead, OrgWrite
from src.app.schemas.common import BODY, ORG, PageToken, errors, limit_query
from src.app.schemas.keys import (
    KEY_ID_PATTERN,
    CreateKeyRequest,
    IssuedKeyResponse,
    KeyListResponse,
    RevokedKeyResponse,
    RotatedKeyResponse,
    RotateRequest,
)
from src.app.schemas.organizations import UsageResponse
from src.core.services import keys
from src.core.services.orgs import get_org
from src.core.services.quotas import usage_report

router = APIRouter(prefix="/api/v1/organizations", tags=["api keys"])

KeyId = Annotated[str, Path(pattern=KEY_ID_PATTERN)]


def actor(identity: Identity) -> keys.KeyActor:
    return keys.KeyActor(is_admin=identity.is_admin, key_id=identity.key_id, scopes=identity.scopes)


@router.post(
    "/{org_slug}/api-keys",
    status_code=status.HTTP_201_CREATED,
    response_model=IssuedKeyResponse,
    responses=errors(*ORG, *BODY),
)
async def create_api_key(org: OrgWrite, body: CreateKeyRequest, response: Response) -> dict[str, Any]:
    """A new named key, shown once. Its scopes are the calling key's or fewer; optional expiry. A key
    inside its rotation grace period cannot create keys (403 ``key_superseded``)."""
    await get_org(org.services, org.slug)
    response.headers["Cache-Control"] = "no-store"
    async with audited(org.identity, "api_key.create", org=org.slug) as entry:
        created = await keys.create_key(
            org.services,
            org.slug,
            actor(org.identity),
            name=body.name,
            key_scopes=body.scopes,
            expires_at=body.expires_at,
        )
        entry.target = created["key_id"]
    return created


@router.post("/{org_slug}/api-keys/rotate", response_model=RotatedKeyResponse, responses=errors(*ORG, *BODY))
async def rotate(
    org: OrgWrite,
    response: Response,
    body: RotateRequest = Body(default_factory=RotateRequest),
) -> dict[str, Any]:
    """Replace one key (default: the calling key) by a new one with the same name, shown once; the
    old one keeps working for ``grace_period_seconds`` but can no longer manage keys. The new key
    has the replaced key's scopes, or fewer (``scopes``): a key never grants more than its caller."""
    await get_org(org.services, org.slug)
    response.headers["Cache-Control"] = "no-store"
    async with audited(org.identity, "api_key.rotate", org=org.slug, target=body.key_id) as entry:
        rotated = await keys.rotate_key(
            org.services,
            org.slug,
            actor(org.identity),
            key_id=body.key_id,
            grace_seconds=body.grace_period_seconds,
            key_scopes=body.scopes,
        )
        entry.target = f"{rotated['replaced_key_id']} -> {rotated['key_id']}"
    return rotated


@router.delete("/{org_slug}/api-keys/{key_id:key_id}", response_model=RevokedKeyResponse, responses=errors(*ORG))
async def revoke_api_key(org: OrgWrite, key_id: KeyId) -> dict[str, Any]:
    """Revoke one key without a replacement: 401 on this instance at once, on every instance within
    KEY_CACHE_TTL_SECONDS. The org's last working full-scope key cannot be revoked by the org
    itself (409 ``last_full_key``): only the admin can."""
    await get_org(org.services, org.slug)
    async with audited(org.identity, "api_key.revoke", org=org.slug, target=key_id):
        return await keys.revoke_key(org.services, org.slug, key_id, actor(org.identity))


@router.get("/{org_slug}/api-keys", response_model=KeyListResponse, responses=errors(*ORG))
async def list_api_keys(
    org: OrgRead,
    limit: Annotated[int, limit_query(200)] = 50,
    page_token: PageToken = None,
) -> dict[str, Any]:
    """The org's keys, newest first: name, prefix, scopes, created, last used, expiry, status."""
    await get_org(org.services, org.slug)
    rows, token = await keys.list_keys(org.services, org.slug, limit=limit, page_token=page_token)
    return {"org_slug": org.slug, "keys": rows, "count": len(rows), "next_page_token": token}


@router.get("/{org_slug}/usage", response_model=UsageResponse, responses=errors(*ORG), tags=["organizations"])
async def usage(org: OrgRead) -> dict[str, Any]:
    """Today's and this month's run counts against the plan's limits, and runs in progress."""
    return await usage_report(org.services, org.slug)
