from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status

from src.app.dependencies.auth import AdminDep, CallerDep, OrgRead, OrgWrite
from src.app.dependencies.services import ServicesDep
from src.app.logging_setup import org_slug_var
from src.app.schemas.organizations import (
    BillingSourceRequest,
    DailyCostsResponse,
    DryRunResponse,
    OnboardRequest,
    OnboardResponse,
    OrgResponse,
)
from src.core.services.billing_source import set_billing_source
from src.core.services.orgs import daily_costs, get_org
from src.core.services.setup import SetupService

router = APIRouter(prefix="/api/v1/organizations", tags=["organizations"])


@router.post("/dryrun", response_model=DryRunResponse)
async def dryrun(_: AdminDep, services: ServicesDep, body: OnboardRequest) -> dict[str, Any]:
    """Every onboarding check, nothing created. A failed check answers with its own status (409/422)."""
    org_slug_var.set(body.org_slug)
    return await SetupService(services).dryrun(body.model_dump())


@router.post("/onboard", response_model=OnboardResponse, status_code=status.HTTP_201_CREATED)
async def onboard(_: AdminDep, services: ServicesDep, body: OnboardRequest, response: Response) -> dict[str, Any]:
    """Create the organization: dataset, API key (shown once), subscription and quota."""
    org_slug_var.set(body.org_slug)
    response.headers["Cache-Control"] = "no-store"
    return await SetupService(services).onboard(body.model_dump())


@router.get("/{org_slug}", response_model=OrgResponse)
async def organization(org: OrgRead, services: ServicesDep) -> dict[str, Any]:
    """Profile, plan and limits (never key material). Admin key or the org's own key."""
    return await get_org(services, org)


@router.put("/{org_slug}/billing-source")
async def billing_source(
    org: OrgWrite, identity: CallerDep, services: ServicesDep, body: BillingSourceRequest
) -> dict[str, Any]:
    """Set (or clear with null) where the org's GCP billing export lives; the table is checked first.
    Outside development an org key may only choose a table its own stored service account reads."""
    await get_org(services, org)
    return await set_billing_source(services, org, body.billing_export_table, by_admin=identity.is_admin)


@router.get("/{org_slug}/costs/daily", response_model=DailyCostsResponse)
async def costs_daily(
    org: OrgRead,
    services: ServicesDep,
    start_date: date,
    end_date: date,
    group_by: Annotated[Literal["service", "project", "sku"] | None, Query()] = None,
) -> dict[str, Any]:
    """Gross cost, credits and net cost per UTC day (optionally per service, project or SKU)."""
    return await daily_costs(services, org, start=start_date, end=end_date, group_by=group_by)
