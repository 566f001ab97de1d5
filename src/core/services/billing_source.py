"""Where an organization's GCP billing export lives: org configuration, never a run field."""

from __future__ import annotations

from typing import TYPE_CHECKING

from src.core.engine.repositories.billing_export import BillingExportRepository, export_schema
from src.core.engine.sql import TableRef
from src.core.errors import (
    ConflictError,
    PermissionDeniedError,
    TerminalWarehouseError,
    ValidationFailedError,
    WarehouseAccessDeniedError,
    WarehouseNotFoundError,
)

if TYPE_CHECKING:
    from src.core.services.container import Services

from src.core.services.container import invalidate_org


async def check_billing_table(services: Services, table: str, *, org_slug: str) -> TableRef:
    """The table exists, is readable, has the standard usage cost export's columns, and is not
    already another organization's billing source (one export feeds one tenant)."""
    try:
        ref = TableRef.parse(table)
    except ValidationFailedError as exc:
        raise ValidationFailedError(exc.message, code="invalid_billing_export_table") from None
    if await services.orgs.orgs_using_billing_table(str(ref), other_than=org_slug):
        raise ConflictError(f"{ref} is already the billing export of another organization", code="billing_table_in_use")
    # Checked as whoever will read it: the org's own service account if it stored one, else the service's.
    wh = await services.org_warehouses.for_org(org_slug)
    repo = BillingExportRepository(wh)
    schema = export_schema(services.settings.configs_dir)
    try:
        exists = await wh.table_exists(ref)
    except WarehouseAccessDeniedError:
        raise await _access_denied(services, ref, org_slug) from None
    if not exists:
        raise ValidationFailedError(f"billing export table {ref} does not exist", code="billing_table_not_found")
    try:
        await repo.check_shape(ref, schema)
    except WarehouseAccessDeniedError:
        raise await _access_denied(services, ref, org_slug) from None
    except (WarehouseNotFoundError, TerminalWarehouseError):
        misfits = await repo.misfit_columns(ref, schema)
        raise ValidationFailedError(
            f"{ref} does not have the shape of a GCP standard usage cost export: "
            f"missing or different columns: {', '.join(misfits[:8]) or 'unknown'}",
            code="billing_table_invalid",
        ) from None
    return ref


async def _access_denied(services: Services, ref: TableRef, org_slug: str) -> ValidationFailedError:
    """The exact grant to make, naming the account that reads the export when it is known."""
    from src.core.services.credentials import active_principal

    own = await active_principal(services, org_slug)
    email = own or services.settings.service_account_email
    if own:
        who = f"the organization's service account {own}"
    elif email:
        who = f"the service's account {email}"
    else:
        who = "the service's account (its e-mail: ask the platform admin)"
    member = f"serviceAccount:{email or 'SERVICE_ACCOUNT_EMAIL'}"
    return ValidationFailedError(
        f"the service cannot read {ref} as {who}; grant it roles/bigquery.dataViewer on dataset "
        f"{ref.project}:{ref.dataset}: `bq add-iam-policy-binding --member={member} "
        f"--role=roles/bigquery.dataViewer {ref.project}:{ref.dataset}`, or in SQL: "
        f'GRANT `roles/bigquery.dataViewer` ON SCHEMA `{ref.project}.{ref.dataset}` TO "{member}"',
        code="billing_table_access_denied",
    )


async def reads_as_shared_account(services: Services, org_slug: str) -> bool:
    """True when the org's export would be read with the service's own (shared) account: outside
    development, on a backend with principals, by an org that stored no service account."""
    from src.core.services.credentials import active_principal

    if services.settings.is_local or not services.warehouse.capabilities.org_credentials:
        return False
    return await active_principal(services, org_slug) is None


async def require_owned_source(services: Services, org_slug: str, set_by: str | None) -> None:
    """An export an org chose itself is only read as that org's own service account: through the
    service's shared account (which many customers have granted read access) it could name
    another customer's export. The admin, who checks ownership, may set any table."""
    if set_by == "org" and await reads_as_shared_account(services, org_slug):
        raise PermissionDeniedError(
            "a billing export chosen with an org key is only read with the organization's own service "
            f"account: store it first (PUT /api/v1/organizations/{org_slug}/credentials/gcp), or ask the "
            "platform admin to set the billing source",
            code="billing_source_not_verified",
        )


async def set_billing_source(
    services: Services, org_slug: str, table: str | None, *, by_admin: bool
) -> dict[str, str | None]:
    set_by = "admin" if by_admin else "org"
    if table:
        await require_owned_source(services, org_slug, set_by)
    value = str(await check_billing_table(services, table, org_slug=org_slug)) if table else None
    await services.orgs.set_billing_export_table(org_slug, value, set_by=set_by)
    invalidate_org(services, org_slug)
    return {"org_slug": org_slug, "billing_export_table": value, "set_by": set_by if value else None}
