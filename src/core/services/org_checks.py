"""Checks shared by the onboarding dry-run and onboarding itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from src.core.errors import ConflictError, ServiceError, ValidationFailedError
from src.core.pipeline.ports import CheckReport

if TYPE_CHECKING:
    from src.core.services.container import Services


async def missing_central_tables(services: Services, *, use_cache: bool = True) -> list[str]:
    """Central tables that do not exist. Once all exist, that is remembered in-process (tables are
    only dropped by an admin bootstrap with a force flag, which clears the memory)."""
    if use_cache and services.bootstrapped:
        return []
    wh = services.warehouse
    dataset = services.catalog.dataset.name
    if not await wh.dataset_exists(dataset):
        return list(services.catalog.tables)
    existing = set(await wh.list_tables(dataset))
    missing = [t for t in services.catalog.tables if t not in existing]
    services.bootstrapped = not missing
    return missing


async def check_onboarding(services: Services, variables: Mapping[str, Any]) -> CheckReport:
    """Everything onboarding needs to be true, without writing anything."""
    from src.core.services.billing_source import check_billing_table

    report = CheckReport()
    org_slug = variables["org_slug"]
    plan_error: ServiceError | None = None
    try:
        services.plans.get(variables["subscription_plan"])
    except ValidationFailedError as exc:
        plan_error = exc
    report.add("subscription_plan", plan_error, f"plan {variables['subscription_plan']} exists")
    table = variables.get("billing_export_table")
    if table:
        table_error: ServiceError | None = None
        try:
            await check_billing_table(services, table, org_slug=org_slug)
        except ServiceError as exc:
            table_error = exc
        report.add("billing_export_table", table_error, f"{table} is a billing export table")
    missing = await missing_central_tables(services)
    report.add(
        "bootstrap_done",
        ConflictError(
            f"bootstrap is not done ({len(missing)} central tables missing); run POST /api/v1/admin/bootstrap first",
            code="bootstrap_required",
        )
        if missing
        else None,
        "central tables exist",
    )
    exists = False if missing else await services.orgs.exists(org_slug)
    report.add(
        "org_slug_available",
        ConflictError(f"organization {org_slug!r} already exists", code="org_exists") if exists else None,
        f"{org_slug!r} is available",
    )
    return report
