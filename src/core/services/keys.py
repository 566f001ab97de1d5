"""Key lifecycle: rotation with a grace period, revocation, listing (never the key or its hash)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from src.core.errors import NotFoundError, ValidationFailedError
from src.core.security import scopes
from src.core.security.api_keys import generate_api_key, hash_api_key, key_prefix, new_key_id
from src.core.security.kms import encrypt_text
from src.core.services.container import invalidate_org

if TYPE_CHECKING:
    from src.core.services.container import Services


async def rotate_key(
    services: Services, org_slug: str, *, grace_seconds: int, created_by: str, key_scopes: Iterable[str] = scopes.ALL
) -> dict[str, Any]:
    """Issue a new key (returned once) with ``key_scopes`` (the router checks they are within the
    caller's); the org's other active keys keep working for ``grace_seconds`` (0 = revoked now).
    The new key is written first: a failure never locks the org out."""
    limit = services.settings.max_key_grace_seconds
    if not 0 <= grace_seconds <= limit:
        raise ValidationFailedError(f"grace_period_seconds must be between 0 and {limit}", code="invalid_grace_period")
    granted = [s for s in scopes.ALL if s in set(key_scopes)]  # in the catalogue's order
    api_key = generate_api_key(org_slug)
    key_id = new_key_id()
    now = datetime.now(UTC)
    await services.keys.insert(
        {
            "key_id": key_id,
            "org_slug": org_slug,
            "key_hash": hash_api_key(api_key),
            "key_prefix": key_prefix(api_key),
            "encrypted_key": await encrypt_text(services.kms, api_key, org_slug=org_slug, purpose="api_key"),
            "kms_key_name": services.kms.key_name,
            "scopes": granted,
            "status": "ACTIVE",
            "created_by": created_by,
            "created_at": now,
        }
    )
    if grace_seconds == 0:
        await services.keys.revoke(org_slug, key_id=None, except_key_id=key_id, reason="rotated")
        old_expire: datetime | None = now
    else:
        old_expire = now + timedelta(seconds=grace_seconds)
        await services.keys.expire_others(org_slug, key_id, old_expire, reason="rotated (grace period)")
    invalidate_org(services, org_slug)
    return {
        "org_slug": org_slug,
        "api_key": api_key,
        "key_id": key_id,
        "scopes": granted,
        "previous_keys_expire_at": old_expire,
        "grace_period_seconds": grace_seconds,
    }


async def revoke_key(services: Services, org_slug: str, key_id: str) -> dict[str, Any]:
    if not await services.keys.exists(org_slug, key_id):
        raise NotFoundError(f"no key {key_id!r} for organization {org_slug!r}", code="key_not_found")
    revoked = await services.keys.revoke(org_slug, key_id=key_id, except_key_id=None, reason="revoked by admin")
    invalidate_org(services, org_slug)
    return {"org_slug": org_slug, "key_id": key_id, "revoked": bool(revoked), "status": "REVOKED"}


async def list_keys(services: Services, org_slug: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    keys = []
    for row in await services.keys.list(org_slug):
        status = row["status"]
        if status == "ACTIVE" and row["expires_at"] is not None and row["expires_at"] <= now:
            status = "EXPIRED"
        keys.append({**row, "status": status, "scopes": list(row.get("scopes") or [])})
    return keys
