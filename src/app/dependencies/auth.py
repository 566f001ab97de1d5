"""Authentication (who is calling) and authorization (may they touch this org).

* ``X-Admin-Key``: compared in constant time with ``ADMIN_API_KEY``; never stored.
* ``X-API-Key``: ``{org_slug}_api_{16 chars}``; found by SHA-256 hash, through an in-process
  cache, so a warm request does not touch the warehouse. The organization comes from the key.

Refusals: no, wrong or expired key -> 401; an org key on an admin route, another org's path, a key
without the route's scope (``src/core/security/scopes.py``), or a suspended org -> 403; a client
that keeps failing to authenticate, or calls admin routes too often -> 429 (per-instance limits, see
``src/core/security/rate_limit.py``).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Path, Request

from src.app.client_address import CLIENT_SCOPE_KEY
from src.app.logging_setup import org_slug_var
from src.core.errors import (
    AuthenticationError,
    PermissionDeniedError,
    ServiceUnavailableError,
    TooManyRequestsError,
)
from src.core.security import scopes
from src.core.security.api_keys import ORG_SLUG_PATTERN, hash_api_key, key_org
from src.core.security.key_cache import KeyIdentity
from src.core.services.container import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Identity:
    is_admin: bool
    org_slug: str | None = None  # the key's org (None for the admin)
    key_id: str | None = None
    scopes: frozenset[str] = frozenset(scopes.ALL)
    superseded: bool = False  # a key inside its rotation grace period: reads and runs, manages no keys

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise PermissionDeniedError(f"this API key does not have the {scope!r} scope", code="insufficient_scope")


ADMIN = Identity(is_admin=True)


def _client(request: Request) -> str:
    """The client's address as the middleware derived it (``src/app/client_address.py``)."""
    return request.scope.get(CLIENT_SCOPE_KEY) or "unknown"


def _admin_key_matches(services: Services, presented: str) -> bool:
    expected = services.settings.admin_key_bytes
    return expected is not None and hmac.compare_digest(presented.encode(), expected)


async def _lookup(services: Services, key_hash: str) -> KeyIdentity | None:
    """One warehouse lookup of a key in no cache, within the global budget (503 beyond it)."""
    if not services.key_lookups.take():
        raise ServiceUnavailableError(
            "too many unknown API keys are being checked right now; retry shortly",
            code="auth_lookups_throttled",
            headers={"Retry-After": str(services.key_lookups.wait_seconds())},
        )
    row = await services.keys.find(key_hash)
    if row is None:
        services.unknown_keys.add(key_hash)
        return None
    identity = KeyIdentity(
        row["org_slug"],
        row["key_id"],
        row["expires_at"],
        row["org_status"],
        frozenset(row["scopes"] or ()),
        superseded=row.get("replaced_by_key_id") is not None,
    )
    services.key_cache.put(key_hash, identity)
    return identity


async def _org_identity(services: Services, presented: str) -> Identity:
    if key_org(presented) is None:
        raise AuthenticationError("invalid API key", code="invalid_api_key")
    key_hash = hash_api_key(presented)
    cached = services.key_cache.get(key_hash)
    if cached is None:
        if key_hash in services.unknown_keys:
            raise AuthenticationError("invalid API key", code="invalid_api_key")
        cached = await services.lookups.run(f"key:{key_hash}", lambda: _lookup(services, key_hash))
        if cached is None:
            raise AuthenticationError("invalid API key", code="invalid_api_key")
    if cached.expires_at is not None and cached.expires_at <= datetime.now(UTC):
        raise AuthenticationError("API key expired; use the key that replaced it", code="api_key_expired")
    org_slug_var.set(cached.org_slug)
    if cached.org_status != "ACTIVE":
        raise PermissionDeniedError(
            f"organization {cached.org_slug!r} is suspended; contact your platform admin", code="org_suspended"
        )
    services.key_use.note(cached.org_slug, cached.key_id)  # last use, written in batches
    return Identity(
        is_admin=False,
        org_slug=cached.org_slug,
        key_id=cached.key_id,
        scopes=cached.scopes,
        superseded=cached.superseded,
    )


_IDENTITY = "convergence.identity"  # the request's identity, once established (scope key)


async def authenticate_request(request: Request) -> Identity:
    """Who is calling; established once per request (the org and admin dependencies call it
    directly rather than through ``Depends``: each dependency level costs per request)."""
    known: Identity | None = request.scope.get(_IDENTITY)
    if known is not None:
        return known
    identity = await _authenticate(request)
    request.scope[_IDENTITY] = identity
    return identity


async def _authenticate(request: Request) -> Identity:
    services: Services = request.app.state.services
    client = _client(request)
    wait = services.auth_failures.retry_after(client)
    if wait is not None:
        raise TooManyRequestsError(
            "too many failed authentication attempts from this client; slow down",
            code="too_many_auth_failures",
            headers={"Retry-After": str(wait)},
        )
    try:
        return await _identify(services, request)
    except AuthenticationError:
        services.auth_failures.hit(client)
        raise


def _presented_keys(request: Request) -> tuple[str | None, str | None]:
    """(X-Admin-Key, X-API-Key) from the raw ASGI headers, in one pass (names arrive lowercase)."""
    admin_key = api_key = None
    for name, value in request.scope["headers"]:
        if name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1")
        elif name == b"x-admin-key" and admin_key is None:
            admin_key = value.decode("latin-1")
    return admin_key, api_key


async def _identify(services: Services, request: Request) -> Identity:
    admin_key, api_key = _presented_keys(request)
    if admin_key is not None:  # presented, even blank: it must match (never fall back to another key)
        if _admin_key_matches(services, admin_key):
            return ADMIN
        raise AuthenticationError("invalid admin key", code="invalid_admin_key")
    if api_key:
        return await _org_identity(services, api_key)
    if services.settings.disable_auth:
        return ADMIN
    raise AuthenticationError("missing X-API-Key or X-Admin-Key header", code="missing_credentials")


async def require_admin(request: Request) -> Identity:
    identity = await authenticate_request(request)
    if not identity.is_admin:
        raise PermissionDeniedError("this route needs the admin key (X-Admin-Key)", code="admin_required")
    services: Services = request.app.state.services
    client = _client(request)
    wait = services.admin_calls.retry_after(client)
    if wait is not None:
        raise TooManyRequestsError(
            "admin rate limit reached for this client", code="admin_rate_limited", headers={"Retry-After": str(wait)}
        )
    services.admin_calls.hit(client)
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


@dataclass(frozen=True, slots=True)
class OrgAccess:
    """The path's organization, authorized for the caller, with the services to act on it: what an
    org route needs, in one dependency (each dependency level costs on every request)."""

    slug: str
    identity: Identity
    services: Services


OrgSlugPath = Annotated[str, Path(pattern=ORG_SLUG_PATTERN)]


async def org_access(request: Request, org_slug: str, scope: str) -> OrgAccess:
    """The path's org for a caller with ``scope``: 401 unauthenticated; 403 for another org's key,
    a key without the scope, or a suspended org."""
    identity = await authenticate_request(request)
    org = authorize_org(identity, org_slug)
    identity.require(scope)
    return OrgAccess(org, identity, request.app.state.services)


def authorized_org_with(scope: str) -> Callable[..., Awaitable[OrgAccess]]:
    """A dependency: ``org_access`` for ``scope`` — so another org's key, or a key without the
    scope, gets 403 before the body is validated (422)."""

    async def authorized_org(request: Request, org_slug: OrgSlugPath) -> OrgAccess:
        return await org_access(request, org_slug, scope)

    return authorized_org


async def authorized_org_admin(request: Request, org_slug: OrgSlugPath) -> OrgAccess:
    """The path's org on an admin-only route."""
    identity = await require_admin(request)
    return OrgAccess(authorize_org(identity, org_slug), identity, request.app.state.services)


# The path's org for a key with the named scope (or the admin).
OrgRead = Annotated[OrgAccess, Depends(authorized_org_with(scopes.ORG_READ))]
OrgWrite = Annotated[OrgAccess, Depends(authorized_org_with(scopes.ORG_WRITE))]
PipelinesRun = Annotated[OrgAccess, Depends(authorized_org_with(scopes.PIPELINES_RUN))]
PipelinesRead = Annotated[OrgAccess, Depends(authorized_org_with(scopes.PIPELINES_READ))]
AdminOrgDep = Annotated[OrgAccess, Depends(authorized_org_admin)]
