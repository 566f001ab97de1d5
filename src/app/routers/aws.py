"""An org's AWS account: its credentials (PUT/GET/DELETE, metadata only) and where its Data Export
(CUR 2.0) lives (PUT/GET/DELETE ``aws-source``).

Admin key or the org's own key. The org is authorized before the body is validated, so another
org's key gets 403 whatever it sends. The secret never comes back, in a response or an error.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from src.app.audit import audited
from src.app.dependencies.auth import OrgAccess, OrgRead, OrgWrite
from src.app.schemas.aws import (
    MAX_CREDENTIALS_BYTES,
    AwsCredentialResponse,
    AwsCredentialsRequest,
    AwsSourceRequest,
    AwsSourceResponse,
)
from src.app.schemas.common import BODY, ORG, errors
from src.core.errors import PayloadTooLargeError
from src.core.services.aws_credentials import get_aws_credentials, revoke_aws_credentials, store_aws_credentials
from src.core.services.aws_source import get_aws_source, set_aws_source

router = APIRouter(prefix="/api/v1/organizations", tags=["aws"])


async def _org_and_small_body(org: OrgWrite, request: Request) -> OrgAccess:
    """Authorized first (401/403), then the size (413), then the body's fields (422)."""
    if len(await request.body()) > MAX_CREDENTIALS_BYTES:
        raise PayloadTooLargeError(f"AWS credentials are at most {MAX_CREDENTIALS_BYTES} bytes")
    return org


@router.put("/{org_slug}/credentials/aws", response_model=AwsCredentialResponse, responses=errors(*ORG, *BODY))
async def put_aws_credentials(
    org: Annotated[OrgAccess, Depends(_org_and_small_body)], body: AwsCredentialsRequest, response: Response
) -> dict[str, Any]:
    """Store the org's AWS access key pair, or a role (with external id ``convergence-<org_slug>``),
    after AWS accepted them (STS); encrypted; replaces any earlier. Answers metadata only."""
    response.headers["Cache-Control"] = "no-store"
    async with audited(org.identity, "credentials.aws.store", org=org.slug) as entry:
        stored = await store_aws_credentials(org.services, org.slug, body.document())
        entry.target = f"{stored['principal']} {stored['credential_id']}"
    return stored


@router.get("/{org_slug}/credentials/aws", response_model=AwsCredentialResponse, responses=errors(*ORG))
async def get_credentials(org: OrgRead) -> dict[str, Any]:
    """Metadata of the org's newest stored AWS credentials (ACTIVE or REVOKED); never the secret."""
    return await get_aws_credentials(org.services, org.slug)


@router.delete("/{org_slug}/credentials/aws", response_model=AwsCredentialResponse, responses=errors(*ORG))
async def delete_credentials(org: OrgWrite) -> dict[str, Any]:
    """Revoke: REVOKED, the encrypted secret removed; AWS loads stop until new credentials are stored."""
    async with audited(org.identity, "credentials.aws.revoke", org=org.slug) as entry:
        revoked = await revoke_aws_credentials(org.services, org.slug)
        entry.target = f"{revoked['principal']} {revoked['credential_id']}"
    return revoked


@router.put("/{org_slug}/aws-source", response_model=AwsSourceResponse, responses=errors(*ORG, *BODY))
async def put_aws_source(org: OrgWrite, body: AwsSourceRequest) -> dict[str, Any]:
    """Set where the org's AWS Data Export delivers; checked by reading the export's metadata with
    the org's own credentials (an export another organization uses: 409)."""
    target = f"s3://{body.bucket}/{body.prefix} {body.export_name}"
    async with audited(org.identity, "aws_source.set", org=org.slug, target=target):
        return await set_aws_source(org.services, org.slug, body.model_dump(), by_admin=org.identity.is_admin)


@router.get("/{org_slug}/aws-source", response_model=AwsSourceResponse, responses=errors(*ORG))
async def aws_source(org: OrgRead) -> dict[str, Any]:
    return await get_aws_source(org.services, org.slug)


@router.delete("/{org_slug}/aws-source", response_model=AwsSourceResponse, responses=errors(*ORG))
async def delete_aws_source(org: OrgWrite) -> dict[str, Any]:
    """Clear the org's AWS source (its loaded rows stay)."""
    async with audited(org.identity, "aws_source.clear", org=org.slug):
        return await set_aws_source(org.services, org.slug, None, by_admin=org.identity.is_admin)
