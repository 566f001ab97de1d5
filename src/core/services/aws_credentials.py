"""An organization's own AWS credentials: an access key pair, or a role with an external id.

Stored like the GCP service account (``services/credentials.py``): encrypted with the KMS backend
(AAD bound to the org and to ``aws_credentials``) into ``org_cloud_credentials`` (provider ``AWS``,
type ``access_key`` or ``assume_role``; ``principal`` = the ARN they act as, ``project_id`` = the
AWS account). They are checked before anything is stored (STS ``GetCallerIdentity``, after
``AssumeRole`` for a role): credentials AWS refuses answer 422. Only metadata ever comes back.

A role is assumed by the service's own AWS identity with the org's external id, which is
``convergence-<org_slug>`` and nothing else: an org cannot make the service assume another org's
role (whose trust policy names that org's external id). That call is the only use of the service's
identity; every read of an org's data is signed with the org's own (temporary) keys.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from src.core.aws.client import AwsCredentials
from src.core.engine.repositories.credentials import CredentialRepository
from src.core.errors import (
    NotFoundError,
    ServiceUnavailableError,
    SourceError,
    TransientSourceError,
    ValidationFailedError,
)
from src.core.security.kms import DecryptionError, decrypt_text, encrypt_text
from src.core.services.credentials import metadata
from src.core.services.orgs import get_org

if TYPE_CHECKING:
    from src.core.services.container import Services

log = logging.getLogger(__name__)

PROVIDER = "AWS"
TYPES = ("access_key", "assume_role")
PURPOSE = "aws_credentials"


def _repo(services: Services) -> CredentialRepository:
    return CredentialRepository(services.warehouse, services.catalog)


def external_id_for(org_slug: str) -> str:
    """The external id an org's role must require in its trust policy."""
    return f"convergence-{org_slug}"


def aws_metadata(row: dict[str, Any]) -> dict[str, Any]:
    found = metadata(row)
    found["account_id"] = found.pop("project_id")
    found["external_id"] = (
        external_id_for(str(row["org_slug"])) if row.get("credential_type") == "assume_role" else None
    )
    return found


async def check_with_aws(services: Services, org_slug: str, creds: AwsCredentials) -> tuple[str, str]:
    """(account, ARN) of working credentials; 422 for credentials AWS refuses, 503 when AWS is unreachable."""
    try:
        who = await services.aws.identity(creds, org_slug=org_slug)
    except TransientSourceError as exc:
        raise ServiceUnavailableError(exc.message, code=exc.code) from None
    except SourceError as exc:
        hint = ""
        if creds.kind == "assume_role":
            hint = (
                f"; the role's trust policy must allow sts:AssumeRole to the service's AWS account with "
                f'"sts:ExternalId": "{external_id_for(org_slug)}"'
            )
        raise ValidationFailedError(
            f"AWS did not accept the credentials: {exc.message}{hint}", code="aws_credentials_invalid"
        ) from None
    return who.account, who.arn


async def store_aws_credentials(services: Services, org_slug: str, document: dict[str, str]) -> dict[str, Any]:
    """Check, then store (replacing any earlier AWS credentials of the org); returns metadata."""
    await get_org(services, org_slug)  # 404 for an unknown org
    kind = "assume_role" if "role_arn" in document else "access_key"
    if kind == "assume_role" and document.get("external_id") != external_id_for(org_slug):
        raise ValidationFailedError(
            f"external_id must be {external_id_for(org_slug)!r}: the service assumes an organization's role only "
            "with the organization's own external id (put it in the role's trust policy)",
            code="aws_external_id_mismatch",
        )
    creds = AwsCredentials(kind=kind, **document)  # type: ignore[arg-type]
    account, arn = await check_with_aws(services, org_slug, creds)
    repo = _repo(services)
    now = datetime.now(UTC)
    credential_id = f"cred_{secrets.token_hex(8)}"
    row = {
        "credential_id": credential_id,
        "org_slug": org_slug,
        "provider": PROVIDER,
        "credential_type": kind,
        "encrypted_credential": await encrypt_text(
            services.kms, json.dumps(document, sort_keys=True), org_slug=org_slug, purpose=PURPOSE
        ),
        "kms_key_name": services.kms.key_name,
        "principal": arn,
        "project_id": account,
        "status": "ACTIVE",
        "last_validated_at": now,
        "created_at": now,
        "updated_at": now,
    }
    # The newest stored credentials win on any number of instances, without a lock: each store
    # revokes every older ACTIVE row of the org's AWS credentials, of either type; of concurrent
    # stores the newest revokes the others (and none revokes a newer one).
    await repo.insert(row)
    await repo.revoke_older(org_slug, PROVIDER, None, keep_id=credential_id, created_at=now)
    log.info("stored AWS credentials", extra={"principal": arn, "credential_id": credential_id, "type": kind})
    return aws_metadata(row)


async def get_aws_credentials(services: Services, org_slug: str) -> dict[str, Any]:
    await get_org(services, org_slug)
    row = await _repo(services).latest(org_slug, PROVIDER, None, active_only=False)
    if row is None:
        raise NotFoundError(f"organization {org_slug!r} has no stored AWS credentials", code="credentials_not_found")
    return aws_metadata(row)


async def revoke_aws_credentials(services: Services, org_slug: str) -> dict[str, Any]:
    """REVOKED, ciphertext removed: the org's AWS loads stop until new credentials are stored."""
    await get_org(services, org_slug)
    repo = _repo(services)
    current = await repo.latest(org_slug, PROVIDER, None, active_only=True)
    if current is None:
        raise NotFoundError(f"organization {org_slug!r} has no active AWS credentials", code="credentials_not_found")
    for kind in TYPES:
        await repo.revoke_all(org_slug, PROVIDER, kind)
    row = await repo.latest(org_slug, PROVIDER, None, active_only=False)
    log.info("revoked AWS credentials", extra={"principal": current["principal"]})
    return aws_metadata(row or current)


async def load_aws_credentials(services: Services, org_slug: str) -> tuple[AwsCredentials, str] | None:
    """The org's ACTIVE credentials, decrypted, and the ARN they act as (None: none stored)."""
    row = await _repo(services).latest(org_slug, PROVIDER, None, active_only=True, with_secret=True)
    if row is None:
        return None
    blob = row.get("encrypted_credential")
    try:
        document = json.loads(await decrypt_text(services.kms, str(blob), org_slug=org_slug, purpose=PURPOSE))
    except (DecryptionError, ValueError, TypeError):
        raise DecryptionError(
            f"the stored AWS credentials of {org_slug!r} could not be decrypted "
            f"(stored with KMS key {row.get('kms_key_name')!r}?); store them again"
        ) from None
    kind = str(row["credential_type"])
    if kind not in TYPES or not isinstance(document, dict):
        raise DecryptionError(f"the stored AWS credentials of {org_slug!r} do not match their record")
    return AwsCredentials(kind=kind, **document), str(row["principal"] or "")  # type: ignore[arg-type]
