"""An organization's own GCP service account: stored encrypted, used for that org's tenant queries.

* ``store_gcp_credentials`` / ``get_gcp_credentials`` / ``revoke_gcp_credentials``: the key file is
  encrypted with the configured KMS backend (AAD bound to the org and to ``gcp_credentials``) into
  ``org_cloud_credentials``; only metadata ever comes back. Where the warehouse has per-org
  principals (``capabilities.org_credentials``: BigQuery) storing also grants the account write
  access to the org's own dataset, and revoking takes it back.
* ``OrgWarehouses.for_org(org)``: the warehouse to run an org's tenant queries with — a BigQuery
  client acting as the org's account when it has ACTIVE credentials, else the shared warehouse.
  Where the backend has no principals (DuckDB) it is always the shared warehouse and stored
  credentials are ignored. Clients are cached per org; a change made here drops the org's entry
  at once, other instances notice within ``KEY_CACHE_TTL_SECONDS`` (the cached credential id is
  re-checked against the table after that).

The key file never reaches a log line, a response or an error message.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from src.core.engine.base import Warehouse
from src.core.engine.repositories.credentials import CredentialRepository
from src.core.errors import (
    NotFoundError,
    ServiceError,
    TransientWarehouseError,
    ValidationFailedError,
    WarehouseError,
)
from src.core.security.kms import DecryptionError, decrypt_text, encrypt_text
from src.core.services.locks import KeyedLocks
from src.core.services.orgs import get_org

if TYPE_CHECKING:
    from src.core.services.container import Services

log = logging.getLogger(__name__)

PROVIDER = "GCP"
CREDENTIAL_TYPE = "service_account"
PURPOSE = "gcp_credentials"  # part of the AAD: a ciphertext for another purpose does not decrypt here


def _repo(services: Services) -> CredentialRepository:
    return CredentialRepository(services.warehouse, services.catalog)


def metadata(row: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "org_slug", "credential_id", "provider", "credential_type", "principal", "project_id", "status",
        "created_at", "updated_at", "last_validated_at",
    )  # fmt: skip
    return {k: row.get(k) for k in keys}


async def _org_dataset(services: Services, org_slug: str) -> str:
    org = await get_org(services, org_slug)  # 404 for an unknown org
    return str(org.get("org_dataset") or services.settings.org_dataset(org_slug))


def usable_key_file(services: Services, key_file: dict[str, Any]) -> dict[str, Any]:
    """The key file as the client uses it: in development tests ``SERVICE_ACCOUNT_TOKEN_URI`` points
    its token requests at a local fake (the stored file keeps Google's endpoint)."""
    override = services.settings.service_account_token_uri
    return {**key_file, "token_uri": override} if override and services.settings.is_local else dict(key_file)


async def _check_works(services: Services, key_file: dict[str, str]) -> None:
    """422 unless the account can get a token and run a dry-run query in its own project."""
    try:
        await services.warehouse.check_credentials(usable_key_file(services, key_file))
    except TransientWarehouseError:
        raise
    except WarehouseError as exc:
        log.warning(
            "a service-account key failed its check",
            extra={"principal": key_file["client_email"], "error": exc.message[:300]},
        )
        raise ValidationFailedError(
            "this service account's key does not work: its token was refused or it could not run a dry-run "
            "query in its own project (it needs roles/bigquery.jobUser there); nothing was stored",
            code="credentials_not_working",
        ) from None


async def store_gcp_credentials(services: Services, org_slug: str, key_file: dict[str, str]) -> dict[str, Any]:
    """Store (or replace) the org's service-account key file; returns its metadata.

    Where the warehouse has principals: the key is first checked to work (a dry-run query as it),
    then stored, then granted write access to the org's dataset — the least its loads need (they
    create and replace the org's cost table there) — and if the grant fails the stored row is
    revoked again and any grant taken back, so no half-stored credential keeps access."""
    dataset = await _org_dataset(services, org_slug)
    email = key_file["client_email"]
    wh = services.warehouse
    repo = _repo(services)
    previous = await repo.latest(org_slug, PROVIDER, CREDENTIAL_TYPE, active_only=True)
    if wh.capabilities.org_credentials:
        await _check_works(services, key_file)
    now = datetime.now(UTC)
    credential_id = f"cred_{secrets.token_hex(8)}"
    document = json.dumps(key_file, sort_keys=True, separators=(",", ":"))
    row = {
        "credential_id": credential_id,
        "org_slug": org_slug,
        "provider": PROVIDER,
        "credential_type": CREDENTIAL_TYPE,
        "encrypted_credential": await encrypt_text(services.kms, document, org_slug=org_slug, purpose=PURPOSE),
        "kms_key_name": services.kms.key_name,
        "principal": email,
        "project_id": key_file["project_id"],
        "status": "ACTIVE",
        "last_validated_at": now,
        "created_at": now,
        "updated_at": now,
    }
    await repo.insert(row)
    if wh.capabilities.org_credentials:
        try:
            await wh.set_dataset_writer(dataset, email, granted=True)
        except BaseException:
            await repo.revoke_id(org_slug, credential_id)
            same = previous is not None and str(previous["principal"] or "").lower() == email.lower()
            if not same:  # the grant may have been made before the failure was seen
                await _take_back_write_access(services, dataset, email)
            raise
    await _keep_newest(services, org_slug, dataset, credential_id, email, now)
    log.info("stored GCP credentials", extra={"principal": email, "credential_id": credential_id})
    return metadata(row)


async def _keep_newest(
    services: Services, org_slug: str, dataset: str, credential_id: str, email: str, created_at: datetime
) -> None:
    """The newest stored key wins, on any number of instances at once, without a lock: revoke the
    older ACTIVE rows and take their accounts' write access back; if a newer store won meanwhile,
    this one takes its own account's access back. Every account that loses its row loses its grant
    (either the winner saw its row, or it sees the winner's)."""
    repo = _repo(services)
    older = await repo.active_older(org_slug, PROVIDER, CREDENTIAL_TYPE, keep_id=credential_id, created_at=created_at)
    await repo.revoke_older(org_slug, PROVIDER, CREDENTIAL_TYPE, keep_id=credential_id, created_at=created_at)
    await services.org_warehouses.invalidate(org_slug)
    current = await repo.latest(org_slug, PROVIDER, CREDENTIAL_TYPE, active_only=True)
    winner = str(current["principal"] or "").lower() if current else ""
    if current is not None and current["credential_id"] != credential_id:  # a newer key was stored meanwhile
        if winner != email.lower():
            await _take_back_write_access(services, dataset, email)
        return
    for principal in {str(r["principal"]).lower() for r in older if r["principal"]} - {email.lower()}:
        await _take_back_write_access(services, dataset, principal)


async def get_gcp_credentials(services: Services, org_slug: str) -> dict[str, Any]:
    await get_org(services, org_slug)
    row = await _repo(services).latest(org_slug, PROVIDER, CREDENTIAL_TYPE, active_only=False)
    if row is None:
        raise NotFoundError(f"organization {org_slug!r} has no stored GCP credentials", code="credentials_not_found")
    return metadata(row)


async def active_principal(services: Services, org_slug: str) -> str | None:
    """The org's own service account that its tenant queries run as, if any (None: the service's)."""
    if not services.warehouse.capabilities.org_credentials:
        return None
    row = await _repo(services).latest(org_slug, PROVIDER, CREDENTIAL_TYPE, active_only=True)
    return str(row["principal"]) if row and row["principal"] else None


async def revoke_gcp_credentials(services: Services, org_slug: str) -> dict[str, Any]:
    """REVOKED, ciphertext removed, the org's queries back on the shared warehouse."""
    dataset = await _org_dataset(services, org_slug)
    repo = _repo(services)
    current = await repo.latest(org_slug, PROVIDER, CREDENTIAL_TYPE, active_only=True)
    if current is None:
        raise NotFoundError(f"organization {org_slug!r} has no active GCP credentials", code="credentials_not_found")
    await repo.revoke_all(org_slug, PROVIDER, CREDENTIAL_TYPE)
    await services.org_warehouses.invalidate(org_slug)
    if current["principal"]:
        await _take_back_write_access(services, dataset, str(current["principal"]))
    row = await repo.latest(org_slug, PROVIDER, CREDENTIAL_TYPE, active_only=False)
    log.info("revoked GCP credentials", extra={"principal": current["principal"]})
    return metadata(row or current)


async def _take_back_write_access(services: Services, dataset: str, email: str) -> None:
    wh = services.warehouse
    if not wh.capabilities.org_credentials:
        return
    try:
        await wh.set_dataset_writer(dataset, email, granted=False)
    except WarehouseError as exc:  # the credentials are already unusable by us; an admin can clean up
        log.warning(
            "could not remove a service account's write access to an org dataset",
            extra={"dataset": dataset, "principal": email, "error": exc.message},
        )


@dataclass
class _Entry:
    checked_at: float
    credential_id: str | None  # None: the org has no ACTIVE credentials (shared warehouse)
    warehouse: Warehouse | None


class OrgWarehouses:
    """Per-org selection of the warehouse for tenant queries (see the module docstring)."""

    def __init__(self, services: Services, *, ttl_seconds: float) -> None:
        self._s = services
        self._ttl = ttl_seconds
        self._entries: dict[str, _Entry] = {}
        self._locks = KeyedLocks()

    async def for_org(self, org_slug: str | None) -> Warehouse:
        shared = self._s.warehouse
        if not org_slug or not shared.capabilities.org_credentials:
            return shared
        entry = self._entries.get(org_slug)
        if entry is not None and time.monotonic() - entry.checked_at <= self._ttl:
            return entry.warehouse or shared
        async with self._locks.hold(org_slug):
            return await self._refresh(org_slug)

    async def _refresh(self, org_slug: str) -> Warehouse:
        shared = self._s.warehouse
        entry = self._entries.get(org_slug)
        if entry is not None and time.monotonic() - entry.checked_at <= self._ttl:
            return entry.warehouse or shared  # refreshed while we waited for the lock
        row = await _repo(self._s).latest(org_slug, PROVIDER, CREDENTIAL_TYPE, active_only=True, with_secret=True)
        credential_id = str(row["credential_id"]) if row else None
        if entry is not None and entry.credential_id == credential_id:
            entry.checked_at = time.monotonic()
            return entry.warehouse or shared
        warehouse = await self._open(org_slug, row) if row is not None else None
        await self._drop(org_slug)
        self._entries[org_slug] = _Entry(time.monotonic(), credential_id, warehouse)
        return warehouse or shared

    async def _open(self, org_slug: str, row: dict[str, Any]) -> Warehouse:
        blob = row.get("encrypted_credential")
        if not blob:
            raise ServiceError(f"the stored GCP credentials of {org_slug!r} are incomplete; store them again")
        try:
            info = json.loads(await decrypt_text(self._s.kms, str(blob), org_slug=org_slug, purpose=PURPOSE))
        except DecryptionError:
            raise DecryptionError(
                f"the stored GCP credentials of {org_slug!r} could not be decrypted "
                f"(stored with KMS key {row.get('kms_key_name')!r}?); store them again"
            ) from None
        if not isinstance(info, dict) or info.get("client_email") != row.get("principal"):
            raise DecryptionError(f"the stored GCP credentials of {org_slug!r} do not match their record")
        warehouse = self._s.warehouse.with_credentials(usable_key_file(self._s, info))
        await warehouse.start()
        return warehouse

    async def _drop(self, org_slug: str) -> None:
        entry = self._entries.pop(org_slug, None)
        if entry is not None and entry.warehouse is not None:
            await entry.warehouse.close()

    async def invalidate(self, org_slug: str) -> None:
        """Forget the org's client (after its credentials changed here)."""
        async with self._locks.hold(org_slug):
            await self._drop(org_slug)

    async def close(self) -> None:
        for org_slug in list(self._entries):
            await self._drop(org_slug)
