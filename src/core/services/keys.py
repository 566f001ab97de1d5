"""Key lifecycle: several named keys per org; create, rotate (one named key, with a grace period),
revoke, list (never the key or its hash).

Rules (the org's own calls; the admin key is exempt from the last two):

* A key inside its rotation grace period (``replaced_by_key_id`` set) still reads and runs but
  cannot create, rotate or revoke keys: a leaked key that was rotated away cannot take the org
  back. The caller's key is re-read from the warehouse (not the cache) for these calls, so this
  holds on every instance at once.
* A key never grants more than its caller: new scopes ⊆ the caller's, and a key only manages
  (rotates, revokes) keys whose scopes are within its own.
* The org always keeps a working full-scope key: a *guarantor* is ACTIVE, has every scope, no
  expiry and was not replaced. Revoking (or narrowing by rotation) the last guarantor is refused
  (409 ``last_full_key``); the revocation statement re-checks that another guarantor still exists.

No rule rests on a lock: each is one guarded statement, so it holds across instances. A named key
is inserted by one MERGE that requires its name free and the org under ``MAX_API_KEYS_PER_ORG``
(``KeyRepository.insert_named``); a rotation's new key by one MERGE that requires no replacement of
that key yet (``insert_rotation``: of concurrent rotations of one key, one wins, the others get 409
``key_already_replaced``); the old key is then superseded or revoked with a guarded UPDATE.

Changes made here drop this instance's cached keys of the org at once; other instances drop
theirs within ``KEY_CACHE_TTL_SECONDS``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from src.core import pagination
from src.core.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationFailedError
from src.core.security import scopes
from src.core.security.api_keys import generate_api_key, hash_api_key, key_prefix, new_key_id
from src.core.security.kms import encrypt_text
from src.core.services.container import invalidate_org

if TYPE_CHECKING:
    from src.core.services.container import Services

FULL = frozenset(scopes.ALL)


@dataclass(frozen=True, slots=True)
class KeyActor:
    """Who manages keys: the admin, or one of the org's keys (its id and scopes)."""

    is_admin: bool
    key_id: str | None = None
    scopes: frozenset[str] = FULL

    @property
    def label(self) -> str:
        return "admin" if self.is_admin else "org"


def _ordered(wanted: Iterable[str]) -> list[str]:
    chosen = set(wanted)
    return [s for s in scopes.ALL if s in chosen]  # the catalogue's order


def _effective_status(row: dict[str, Any], now: datetime) -> str:
    status = str(row["status"])
    if status == "ACTIVE" and row.get("expires_at") is not None and row["expires_at"] <= now:
        return "EXPIRED"
    return status


def _is_guarantor(row: dict[str, Any], now: datetime) -> bool:
    return (
        _effective_status(row, now) == "ACTIVE"
        and row.get("expires_at") is None
        and row.get("replaced_by_key_id") is None
        and frozenset(row.get("scopes") or ()) >= FULL
    )


def view(row: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """A key as the API shows it: never the key, its hash or its ciphertext."""
    shown = {k: row.get(k) for k in LISTED_FIELDS}
    shown["status"] = _effective_status(row, now or datetime.now(UTC))
    shown["scopes"] = _ordered(row.get("scopes") or ())
    return shown


LISTED_FIELDS = (
    "key_id", "name", "key_prefix", "status", "scopes", "created_at", "created_by", "last_used_at", "expires_at",
    "revoked_at", "revoked_reason", "rotated_from_key_id", "replaced_by_key_id",
)  # fmt: skip


async def _check_actor(services: Services, org_slug: str, actor: KeyActor) -> None:
    """The calling key, read fresh: ACTIVE, unexpired, not replaced (the admin always passes)."""
    if actor.is_admin:
        return
    row = await services.keys.get(org_slug, actor.key_id or "")
    if row is None or _effective_status(row, datetime.now(UTC)) != "ACTIVE":
        raise PermissionDeniedError("this API key is no longer active", code="key_inactive")
    if row.get("replaced_by_key_id") is not None:
        raise PermissionDeniedError(
            "this API key was replaced by a rotation and only works until its grace period ends; it cannot "
            "create, rotate or revoke keys — use the key that replaced it",
            code="key_superseded",
        )


def _within_caller(actor: KeyActor, wanted: Iterable[str], what: str) -> None:
    extra = sorted(set(wanted) - actor.scopes)
    if not actor.is_admin and extra:
        raise PermissionDeniedError(f"{what} scopes the calling key lacks: {extra}", code="insufficient_scope")


async def _target(services: Services, org_slug: str, key_id: str) -> dict[str, Any]:
    row = await services.keys.get(org_slug, key_id)
    if row is None:
        raise NotFoundError(f"no key {key_id!r} for organization {org_slug!r}", code="key_not_found")
    return row


async def _issue(
    services: Services,
    org_slug: str,
    *,
    name: str,
    key_scopes: list[str],
    expires_at: datetime | None,
    created_by: str,
    rotated_from: str | None = None,
) -> tuple[str, dict[str, Any], bool]:
    """A new key, written with the guarded statement of its kind (a named key: its name free and
    the org under its key limit; a rotation: no replacement of that key yet). (key, row, inserted)."""
    api_key = generate_api_key(org_slug)
    row = {
        "key_id": new_key_id(),
        "org_slug": org_slug,
        "key_hash": hash_api_key(api_key),
        "key_prefix": key_prefix(api_key),
        "name": name,
        "encrypted_key": await encrypt_text(services.kms, api_key, org_slug=org_slug, purpose="api_key"),
        "kms_key_name": services.kms.key_name,
        "scopes": key_scopes,
        "status": "ACTIVE",
        "expires_at": expires_at,
        "rotated_from_key_id": rotated_from,
        "created_by": created_by,
        "created_at": datetime.now(UTC),
    }
    if rotated_from is not None:
        inserted = await services.keys.insert_rotation(row)
    else:
        inserted = await services.keys.insert_named(row, limit=services.settings.max_api_keys_per_org)
    return api_key, row, inserted


async def create_key(
    services: Services,
    org_slug: str,
    actor: KeyActor,
    *,
    name: str,
    key_scopes: Iterable[str] | None,
    expires_at: datetime | None,
) -> dict[str, Any]:
    """A new named key (returned once) with ``key_scopes`` (default: the caller's)."""
    wanted = _ordered(actor.scopes if key_scopes is None else key_scopes)
    _within_caller(actor, wanted, "a new key cannot have")
    now = datetime.now(UTC)
    if expires_at is not None and expires_at <= now:
        raise ValidationFailedError("expires_at must be in the future", code="invalid_expiry")
    await _check_actor(services, org_slug, actor)
    api_key, row, inserted = await _issue(
        services, org_slug, name=name, key_scopes=wanted, expires_at=expires_at, created_by=actor.label
    )
    if not inserted:  # the guarded insert refused: say why
        active = [r for r in await services.keys.active(org_slug) if _effective_status(r, now) == "ACTIVE"]
        if any(r.get("name") == name for r in active):
            raise ConflictError(f"the organization already has an active key named {name!r}", code="key_name_taken")
        limit = services.settings.max_api_keys_per_org
        raise ConflictError(
            f"the organization has {len(active)} active keys (at most {limit}); revoke one first",
            code="too_many_keys",
        )
    return {"org_slug": org_slug, "api_key": api_key, **view(row, now)}


async def _sole_active_key(services: Services, org_slug: str) -> str:
    now = datetime.now(UTC)
    active = [r for r in await services.keys.active(org_slug) if _effective_status(r, now) == "ACTIVE"]
    current = [r for r in active if r.get("replaced_by_key_id") is None]
    if len(current) != 1:
        raise ValidationFailedError(
            f"the organization has {len(current)} active keys: name the one to rotate with key_id",
            code="key_id_required",
        )
    return str(current[0]["key_id"])


async def rotate_key(
    services: Services,
    org_slug: str,
    actor: KeyActor,
    *,
    key_id: str | None,
    grace_seconds: int,
    key_scopes: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Replace one key (default: the calling key) by a new one with its name (returned once); the
    old one keeps working for ``grace_seconds`` (0 = revoked now). The new key is written first: a
    failure never locks the org out."""
    limit = services.settings.max_key_grace_seconds
    if not 0 <= grace_seconds <= limit:
        raise ValidationFailedError(f"grace_period_seconds must be between 0 and {limit}", code="invalid_grace_period")
    await _check_actor(services, org_slug, actor)
    if key_id is None:
        key_id = actor.key_id if not actor.is_admin else await _sole_active_key(services, org_slug)
    old = await _target(services, org_slug, str(key_id))
    now = datetime.now(UTC)
    if _effective_status(old, now) != "ACTIVE":
        raise ConflictError(f"key {key_id!r} is {_effective_status(old, now)}: nothing to rotate", code="key_inactive")
    if old.get("replaced_by_key_id") is not None:
        raise ConflictError(
            f"key {key_id!r} was already replaced by {old['replaced_by_key_id']!r}", code="key_already_replaced"
        )
    _within_caller(actor, old.get("scopes") or (), "cannot rotate a key that has")
    wanted = _ordered(old.get("scopes") or () if key_scopes is None else key_scopes)
    _within_caller(actor, wanted, "a new key cannot have")
    new_is_full = frozenset(wanted) >= FULL and old.get("expires_at") is None
    others = await _other_guarantors(services, org_slug, str(key_id), now)
    if not actor.is_admin and _is_guarantor(old, now) and not new_is_full and not others:
        raise _last_full_key("narrow")
    api_key, row, inserted = await _issue(
        services,
        org_slug,
        name=str(old.get("name") or "default"),
        key_scopes=wanted,
        expires_at=old.get("expires_at"),
        created_by=actor.label,
        rotated_from=str(key_id),
    )
    if not inserted:  # another rotation of this key (on any instance) got there first
        raise ConflictError(f"key {key_id!r} is being rotated by another request", code="key_already_replaced")
    if grace_seconds == 0:
        old_expire: datetime | None = now
        await services.keys.revoke(org_slug, str(key_id), reason="rotated", replaced_by=row["key_id"])
    else:
        old_expire = now + timedelta(seconds=grace_seconds)
        await services.keys.supersede(org_slug, str(key_id), replaced_by=row["key_id"], expires_at=old_expire)
    invalidate_org(services, org_slug)
    return {
        "org_slug": org_slug,
        "api_key": api_key,
        **view(row, now),
        "replaced_key_id": key_id,
        "previous_key_expires_at": old_expire,
        "grace_period_seconds": grace_seconds,
    }


async def _other_guarantors(services: Services, org_slug: str, key_id: str, now: datetime) -> list[str]:
    return [
        str(r["key_id"])
        for r in await services.keys.active(org_slug)
        if r["key_id"] != key_id and _is_guarantor(r, now)
    ]


def _last_full_key(verb: str) -> ConflictError:
    return ConflictError(
        f"cannot {verb} the organization's last working full-scope key: create another full key first "
        "(or ask the platform admin)",
        code="last_full_key",
    )


async def revoke_key(services: Services, org_slug: str, key_id: str, actor: KeyActor) -> dict[str, Any]:
    """Revoke one key without a replacement. The org's own keys may not revoke its last guarantor."""
    await _check_actor(services, org_slug, actor)
    row = await _target(services, org_slug, key_id)
    _within_caller(actor, row.get("scopes") or (), "cannot revoke a key that has")
    now = datetime.now(UTC)
    reason = "revoked by admin" if actor.is_admin else f"revoked by key {actor.key_id}"
    guard: list[str] | None = None
    if not actor.is_admin and _is_guarantor(row, now):
        guard = await _other_guarantors(services, org_slug, key_id, now)
        if not guard:
            raise _last_full_key("revoke")
    revoked = await services.keys.revoke(org_slug, key_id, reason=reason, require_one_of=guard)
    if not revoked and guard is not None and row["status"] == "ACTIVE":
        raise _last_full_key("revoke")  # the other full key was revoked meanwhile (another instance)
    invalidate_org(services, org_slug)
    after = await services.keys.get(org_slug, key_id) or row
    return {"org_slug": org_slug, "revoked": bool(revoked), **view(after, now)}


async def list_keys(
    services: Services, org_slug: str, *, limit: int, page_token: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """The org's keys, newest first, one page (``limit``) at a time."""
    filters = {"org": org_slug}
    position = pagination.decode(page_token, "keys", filters, 2)
    after = (pagination.timestamp(position[0]), str(position[1])) if position else None
    rows = await services.keys.list(org_slug, limit=limit + 1, after=after)
    shown, token = pagination.page(rows, limit, "keys", filters, lambda r: (r["created_at"], r["key_id"]))
    now = datetime.now(UTC)
    return [view(r, now) for r in shown], token
