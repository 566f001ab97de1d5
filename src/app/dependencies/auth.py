"""Authentication (who is calling) and authorization (may they touch this org).

* ``X-Admin-Key``: compared in constant time with ``ADMIN_API_KEY``; never stored.
* ``X-API-Key``: ``{org_slug}_api_{16 chars}``; found by SHA-256 hash, through an in-process
  cache, so a warm request does not touch the warehouse. The organization comes from the key.

Refusals: no or wrong key -> 401; an org key on an admin route, another org's path, or a
suspended org -> 403.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request

from src.app.logging_setup import org_slug_var
from src.core.errors import AuthenticationError, PermissionDeniedError
from src.core.security.api_keys import hash_api_key, key_org
from src.core.security.key_cache import KeyIdentity
from src.core.services.container import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Identity:
    is_admin: bool
    org_slug: str | None = None  # the key's org (None for the admin)
    key_id: str | None = None


ADMIN = Identity(is_admin=True)


def _admin_key_matches(services: Services, presented: str) -> bool:
    expected = services.settings.admin_key_bytes
    return expected is not None and hmac.compare_digest(presented.encode(), expected)


async def _org_identity(services: Services, presented: str) -> Identity:
    if key_org(presented) is None:
        raise AuthenticationError("invalid API key", code="invalid_api_key")
    key_hash = hash_api_key(presented)
    hit, cached = services.key_cache.get(key_hash)
    if not hit:
        row = await services.orgs.find_key(key_hash)
        cached = KeyIdentity(row["org_slug"], row["key_id"], row["expires_at"], row["org_status"]) if row else None
        services.key_cache.put(key_hash, cached)
    if cached is None:
        raise AuthenticationError("invalid API key", code="invalid_api_key")
    if cached.expires_at is not None and cached.expires_at <= datetime.now(UTC):
        raise AuthenticationError("API key expired", code="api_key_expired")
    if cached.org_status != "ACTIVE":
        raise PermissionDeniedError(
            f"organization {cached.org_slug!r} is suspended; contact your platform admin", code="org_suspended"
        )
    return Identity(is_admin=False, org_slug=cached.org_slug, key_id=cached.key_id)


async def authenticate_request(request: Request) -> Identity:
    services: Services = request.app.state.services
    admin_key = request.headers.get("x-admin-key")
    api_key = request.headers.get("x-api-key")
    if admin_key:
        if _admin_key_matches(services, admin_key):
            return ADMIN
        raise AuthenticationError("invalid admin key", code="invalid_admin_key")
    if api_key:
        identity = await _org_identity(services, api_key)
        org_slug_var.set(identity.org_slug)
        return identity
    if services.settings.disable_auth:
        return ADMIN
    raise AuthenticationError("missing X-API-Key or X-Admin-Key header", code="missing_credentials")


async def require_admin(identity: Annotated[Identity, Depends(authenticate_request)]) -> Identity:
    if not identity.is_admin:
        raise PermissionDeniedError("this route needs the admin key (X-Admin-Key)", code="admin_required")
    return identity


def authorize_org(identity: Identity, org_slug: str) -> str:
    """The path's org, if the caller may act on it: the admin, or that org's own key."""
    if identity.is_admin:
        org_slug_var.set(org_slug)
        return org_slug
    if identity.org_slug != org_slug:
        raise PermissionDeniedError("this API key belongs to another organization", code="org_mismatch")
    return org_slug


AdminDep = Annotated[Identity, Depends(require_admin)]
CallerDep = Annotated[Identity, Depends(authenticate_request)]  # admin or any org key
