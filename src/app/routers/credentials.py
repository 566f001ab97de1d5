"""An organization's own GCP service account: store (PUT), inspect (GET, metadata only), revoke (DELETE).

Admin key or the org's own key. The org is authorized before the body is validated, so another
org's key gets 403 whatever it sends. The key file never comes back, in a response or an error.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from src.app.audit import audited
from src.app.dependencies.auth import OrgAccess, OrgRead, OrgWrite
from src.app.schemas.common import BODY, ORG, errors
from src.app.schemas.credentials import MAX_KEY_FILE_BYTES, CredentialResponse, GcpServiceAccountKey
from src.core.errors import PayloadTooLargeError
from src.core.services.credentials import get_gcp_credentials, revoke_gcp_credentials, store_gcp_credentials

router = APIRouter(prefix="/api/v1/organizations", tags=["credentials"])


async def _org_and_small_body(org: OrgWrite, request: Request) -> OrgAccess:
    """Authorized first (401/403), then the size (413), then the body's fields (422)."""
    if len(await request.body()) > MAX_KEY_FILE_BYTES:
        raise PayloadTooLargeError(f"a service-account key file is at most {MAX_KEY_FILE_BYTES} bytes")
    return org


@router.put("/{org_slug}/credentials/gcp", response_model=CredentialResponse, responses=errors(*ORG, *BODY))
async def put_gcp_credentials(
    org: Annotated[OrgAccess, Depends(_org_and_small_body)],
    body: GcpServiceAccountKey,
    response: Response,
) -> dict[str, Any]:
    """Store the org's GCP service-account key file (encrypted); its cost queries then run as it
    (BigQuery). Replaces any earlier one. Answers metadata only."""
    response.headers["Cache-Control"] = "no-store"
    async with audited(org.identity, "credentials.gcp.store", org=org.slug, target=body.client_email) as entry:
        stored = await store_gcp_credentials(org.services, org.slug, body.document())
        entry.target = f"{body.client_email} {stored['credential_id']}"
    return stored


@router.get("/{org_slug}/credentials/gcp", response_model=CredentialResponse, responses=errors(*ORG))
async def get_credentials(org: OrgRead) -> dict[str, Any]:
    """Metadata of the org's newest stored credentials (ACTIVE or REVOKED); never the key."""
    return await get_gcp_credentials(org.services, org.slug)


@router.delete("/{org_slug}/credentials/gcp", response_model=CredentialResponse, responses=errors(*ORG))
async def delete_credentials(org: OrgWrite) -> dict[str, Any]:
    """Revoke: status REVOKED, the encrypted key file removed, its dataset grant taken back; queries
    go back to the service's account."""
    async with audited(org.identity, "credentials.gcp.revoke", org=org.slug) as entry:
        revoked = await revoke_gcp_credentials(org.services, org.slug)
        entry.target = f"{revoked['principal']} {revoked['credential_id']}"
    return revoked
