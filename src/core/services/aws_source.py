"""Where an organization's AWS Data Export (CUR 2.0) lives: org configuration, never a run field.

``PUT .../aws-source`` (bucket, prefix, export name, region) is checked as the org itself: with its
own stored AWS credentials (never the service's AWS identity) the export's metadata folder is
listed and its newest manifest read, which must be a CUR 2.0 manifest. The ownership rules of the
GCP billing source hold: an org can only point at an export its own credentials can read (so never
at another org's bucket), and one export feeds one organization (409 for a second). The admin may
set it too; it is still checked with the org's credentials.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from src.core.aws.client import AwsExport
from src.core.aws.manifest import MAX_MANIFEST_BYTES, ManifestError, latest_manifest, parse_manifest
from src.core.aws.source import AwsSource
from src.core.engine.repositories.aws_sources import AwsSourceRepository
from src.core.errors import (
    ConflictError,
    ServiceUnavailableError,
    SourceAccessDeniedError,
    SourceError,
    SourceNotFoundError,
    TransientSourceError,
    ValidationFailedError,
)
from src.core.services.aws_credentials import load_aws_credentials
from src.core.services.orgs import get_org

if TYPE_CHECKING:
    from src.core.services.container import Services

CUR2_MARKERS = ("line_item_unblended_cost", "line_item_usage_start_date", "bill_billing_period_start_date")
_PERIOD_FOLDER = "BILLING_PERIOD="


def _repo(services: Services) -> AwsSourceRepository:
    return AwsSourceRepository(services.warehouse, services.catalog)


def _view(source: AwsSource | None, set_by: str | None, org_slug: str, **extra: Any) -> dict[str, Any]:
    return {
        "org_slug": org_slug,
        "bucket": source.bucket if source else None,
        "prefix": source.prefix if source else None,
        "export_name": source.export_name if source else None,
        "region": source.region if source else None,
        "export_uri": source.uri if source else None,
        "set_by": set_by if source else None,
        **extra,
    }


async def stored_source(services: Services, org_slug: str) -> tuple[AwsSource, str | None] | None:
    row = await _repo(services).get(org_slug)
    if row is None:
        return None
    return AwsSource.from_uri(str(row["aws_export_uri"]), str(row["aws_region"])), row.get("aws_source_set_by")


async def get_aws_source(services: Services, org_slug: str) -> dict[str, Any]:
    await get_org(services, org_slug)
    found = await stored_source(services, org_slug)
    return _view(found[0] if found else None, found[1] if found else None, org_slug)


def _not_configured(org_slug: str) -> ValidationFailedError:
    return ValidationFailedError(
        f"organization {org_slug!r} has no AWS credentials; store them first: "
        f"PUT /api/v1/organizations/{org_slug}/credentials/aws",
        code="aws_credentials_not_configured",
    )


async def require_configured(services: Services, org_slug: str) -> AwsSource:
    """The org's AWS source, when it also has AWS credentials (422 otherwise; no call to AWS)."""
    found = await stored_source(services, org_slug)
    if found is None:
        raise ValidationFailedError(
            f"organization {org_slug!r} has no AWS source; set it with PUT /api/v1/organizations/{org_slug}/aws-source "
            '{"bucket": ..., "prefix": ..., "export_name": ..., "region": ...}',
            code="aws_source_not_configured",
        )
    if await load_aws_credentials(services, org_slug) is None:
        raise _not_configured(org_slug)
    return found[0]


async def aws_export_for(services: Services, org_slug: str) -> AwsExport:
    """The org's export and a bucket client with its own credentials (422 when not configured)."""
    source = await require_configured(services, org_slug)
    creds = await load_aws_credentials(services, org_slug)
    if creds is None:
        raise _not_configured(org_slug)
    bucket = await services.aws.bucket(creds[0], bucket=source.bucket, region=source.region, org_slug=org_slug)
    return AwsExport(source, bucket)


async def _check_export(services: Services, org_slug: str, source: AwsSource) -> dict[str, Any]:
    """List the export's metadata and read its newest manifest, as the org; what was found."""
    creds = await load_aws_credentials(services, org_slug)
    if creds is None:
        raise _not_configured(org_slug)
    arn = creds[1]
    where = f"s3://{source.bucket}/{source.metadata_prefix()}"
    try:
        bucket = await services.aws.bucket(creds[0], bucket=source.bucket, region=source.region, org_slug=org_slug)
        objects = await bucket.list(source.metadata_prefix(), limit=10_000)
        periods = sorted(
            {k.split(_PERIOD_FOLDER, 1)[1][:7] for k in (o.key for o in objects) if _PERIOD_FOLDER in k}, reverse=True
        )
        latest = next((m for p in periods if (m := latest_manifest(source, p, objects)) is not None), None)
        if latest is None:
            raise ValidationFailedError(
                f"no {source.export_name}-Manifest.json under {where}: the export has not delivered yet, or the "
                "prefix or export name is not the export's",
                code="aws_export_not_found",
            )
        period = latest.key.split(_PERIOD_FOLDER, 1)[1][:7]
        manifest = parse_manifest(
            source, period, latest.key, await bucket.read(latest.key, max_bytes=MAX_MANIFEST_BYTES)
        )
    except SourceAccessDeniedError:
        raise ValidationFailedError(
            f"the organization's AWS credentials ({arn}) cannot read {where}: allow them s3:ListBucket on "
            f"arn:aws:s3:::{source.bucket} (prefix {source.root}/) and s3:GetObject on "
            f"arn:aws:s3:::{source.bucket}/{source.root}/*",
            code="aws_source_access_denied",
        ) from None
    except SourceNotFoundError:
        raise ValidationFailedError(f"bucket {source.bucket} does not exist", code="aws_source_not_found") from None
    except TransientSourceError as exc:
        raise ServiceUnavailableError(exc.message, code=exc.code) from None
    except SourceError as exc:
        raise ValidationFailedError(exc.message, code=exc.code if exc.status_code < 500 else "aws_error") from None
    except ManifestError as exc:
        raise ValidationFailedError(str(exc), code="aws_export_invalid") from None
    missing = [c for c in CUR2_MARKERS if c not in manifest.columns]
    if missing:
        raise ValidationFailedError(
            f"s3://{source.bucket}/{latest.key} is not the manifest of a CUR 2.0 export "
            f"(no column {', '.join(missing)}); choose the COST_AND_USAGE_REPORT table in AWS Data Exports",
            code="aws_export_invalid",
        )
    return {"billing_periods": periods, "latest_manifest": f"s3://{source.bucket}/{latest.key}"}


async def set_aws_source(
    services: Services, org_slug: str, fields: Mapping[str, str] | None, *, by_admin: bool
) -> dict[str, Any]:
    """Set (checked, see the module docstring) or clear (``None``) the org's AWS source; ``fields``:
    bucket, prefix, export_name, region."""
    await get_org(services, org_slug)
    source = AwsSource(**fields) if fields is not None else None
    repo = _repo(services)
    if source is None:
        await repo.set(org_slug, export_uri=None, region=None, set_by=None)
        return _view(None, None, org_slug)
    # Read access first: an org that cannot read an export learns nothing about who uses it.
    found = await _check_export(services, org_slug, source)
    set_by = "admin" if by_admin else "org"
    # One statement sets the source only while no other org uses the export (no lock: of two orgs
    # claiming one export at once, the warehouse serializes the UPDATEs and the second finds it used).
    if not await repo.set(org_slug, export_uri=source.uri, region=source.region, set_by=set_by):
        raise ConflictError(f"{source.uri} is already the AWS source of another organization", code="aws_source_in_use")
    return _view(source, set_by, org_slug, **found)
