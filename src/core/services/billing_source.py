"""Where an organization's GCP billing export lives: org configuration, never a run field."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from src.core.engine.repositories.billing_export import BillingExportRepository
from src.core.engine.schema import Schema, load_schema_file
from src.core.engine.sql import TableRef
from src.core.errors import (
    TerminalWarehouseError,
    ValidationFailedError,
    WarehouseAccessDeniedError,
    WarehouseNotFoundError,
)

if TYPE_CHECKING:
    from src.core.services.container import Services

EXPORT_SCHEMA_FILE = Path("gcp/cost/billing_export_schema.json")


@lru_cache(maxsize=4)
def export_schema(configs_dir: Path) -> Schema:
    return load_schema_file(configs_dir / EXPORT_SCHEMA_FILE, root=configs_dir)


async def check_billing_table(services: Services, table: str, *, org_slug: str) -> TableRef:
    """The table exists, is readable and has the standard usage cost export's columns."""
    try:
        ref = TableRef.parse(table)
    except ValidationFailedError as exc:
        raise ValidationFailedError(exc.message, code="invalid_billing_export_table") from None
    if not await services.warehouse.table_exists(ref):
        raise ValidationFailedError(f"billing export table {ref} does not exist", code="billing_table_not_found")
    try:
        await BillingExportRepository(services.warehouse).check_shape(ref, export_schema(services.settings.configs_dir))
    except WarehouseAccessDeniedError:
        raise ValidationFailedError(
            f"the service cannot read {ref}; grant its service account roles/bigquery.dataViewer on dataset "
            f"{ref.project}:{ref.dataset}",
            code="billing_table_access_denied",
        ) from None
    except (WarehouseNotFoundError, TerminalWarehouseError) as exc:
        raise ValidationFailedError(
            f"{ref} does not have the shape of a GCP standard usage cost export: {exc.message.splitlines()[0]}",
            code="billing_table_invalid",
        ) from None
    return ref


async def set_billing_source(services: Services, org_slug: str, table: str | None) -> dict[str, str | None]:
    value = str(await check_billing_table(services, table, org_slug=org_slug)) if table else None
    await services.orgs.set_billing_export_table(org_slug, value)
    return {"org_slug": org_slug, "billing_export_table": value}
