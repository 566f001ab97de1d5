from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from src.app.audit import audited
from src.app.dependencies.auth import AdminDep, OrgRead, OrgSlugPath, OrgWrite, org_access
from src.app.dependencies.services import ServicesDep
from src.app.logging_setup import org_slug_var
from src.app.schemas.common import AUTH, BODY, ORG, IsoDate, PageToken, errors, limit_query
from src.app.schemas.organizations import (
    BillingSourceRequest,
    BillingSourceResponse,
    DailyCostsResponse,
    DryRunResponse,
    FocusDailyCostsResponse,
    OnboardRequest,
    OnboardResponse,
    OrgResponse,
)
from src.core.security import scopes
from src.core.services.billing_source import set_billing_source
from src.core.services.cost_reads import daily_view
from src.core.services.focus import focus_export
from src.core.services.orgs import get_org, org_profile_json
from src.core.services.setup import SetupService

router = APIRouter(prefix="/api/v1/organizations", tags=["organizations"])

DEFAULT_COST_ROWS, MAX_COST_ROWS = 1000, 5000


@router.post("/dryrun", response_model=DryRunResponse, responses=errors(*AUTH, *BODY, 409))
async def dryrun(identity: AdminDep, services: ServicesDep, body: OnboardRequest) -> dict[str, Any]:
    """Every onboarding check, nothing created. A failed check answers with its own status (409/422)."""
    org_slug_var.set(body.org_slug)
    async with audited(identity, "admin.organization_dryrun", org=body.org_slug):
        return await SetupService(services).dryrun(body.model_dump())


@router.post(
    "/onboard",
    response_model=OnboardResponse,
    status_code=status.HTTP_201_CREATED,
    responses=errors(*AUTH, *BODY, 409),
    openapi_extra={
        "responses": {
            "201": {
                "links": {
                    "GetOrganization": {
                        "operationId": "getOrganization",
                        "parameters": {"org_slug": "$response.body#/org_slug"},
                    },
                    "RunCostBilling": {
                        "operationId": "runPipeline",
                        "parameters": {
                            "org_slug": "$response.body#/org_slug",
                            "provider": "gcp",
                            "domain": "cost",
                            "pipeline": "cost_billing",
                        },
                    },
                    "CreateSchedule": {
                        "operationId": "createSchedule",
                        "parameters": {"org_slug": "$response.body#/org_slug"},
                    },
                }
            }
        }
    },
)
async def onboard(
    identity: AdminDep, services: ServicesDep, body: OnboardRequest, response: Response
) -> dict[str, Any]:
    """Create the organization: dataset, API key (shown once), subscription and quota."""
    org_slug_var.set(body.org_slug)
    response.headers["Cache-Control"] = "no-store"
    async with audited(identity, "admin.organization_onboard", org=body.org_slug) as entry:
        created = await SetupService(services).onboard(body.model_dump())
        entry.target = created.get("key_id")
    return created


def _render_profile(profile: dict[str, Any]) -> bytes:
    return OrgResponse.model_validate(profile).model_dump_json().encode()


@router.get("/{org_slug:org}", response_model=OrgResponse, responses=errors(*ORG), operation_id="getOrganization")
async def organization(request: Request, org_slug: OrgSlugPath) -> Response:
    """Profile, plan and limits (never key material). Admin key or the org's own key.

    The hot path (benchmarks A): authorized inline (no dependency level) and answered with the
    profile as rendered through ``OrgResponse`` once per cache lifetime."""
    org = await org_access(request, org_slug, scopes.ORG_READ)
    body = await org_profile_json(org.services, org.slug, _render_profile)
    return Response(body, media_type="application/json")


@router.put("/{org_slug}/billing-source", response_model=BillingSourceResponse, responses=errors(*ORG, *BODY))
async def billing_source(org: OrgWrite, body: BillingSourceRequest) -> dict[str, Any]:
    """Set (or clear with null) where the org's GCP billing export lives; the table is checked first.
    Outside development an org key may only choose a table its own stored service account reads."""
    await get_org(org.services, org.slug)
    async with audited(org.identity, "billing_source.set", org=org.slug, target=body.billing_export_table):
        return await set_billing_source(
            org.services, org.slug, body.billing_export_table, by_admin=org.identity.is_admin
        )


ProviderGroup = Literal["service", "project", "sku"]
FocusGroup = Literal["service_category", "service_name", "provider", "sub_account"]


@router.get(
    "/{org_slug}/costs/daily",
    response_model=DailyCostsResponse | FocusDailyCostsResponse,
    responses=errors(*ORG),
)
async def costs_daily(
    org: OrgRead,
    start_date: IsoDate,
    end_date: IsoDate,
    group_by: Annotated[ProviderGroup | FocusGroup | None, Query()] = None,
    provider: Annotated[Literal["gcp", "aws", "both"], Query()] = "both",
    view: Annotated[Literal["provider", "focus"], Query()] = "provider",
    limit: Annotated[int, limit_query(MAX_COST_ROWS)] = DEFAULT_COST_ROWS,
    page_token: PageToken = None,
) -> dict[str, Any]:
    """Costs per UTC day and currency, one page of rows at a time, never added across currencies;
    the totals cover the whole window on every page. ``view=provider`` (default): gross cost,
    credits and net cost of the providers' own cost tables (optionally per service, project or SKU;
    for AWS: product code, usage account, usage type). ``view=focus``: BilledCost, EffectiveCost,
    ListCost and ContractedCost of the FOCUS table, optionally per service_category, service_name,
    provider or sub_account. ``provider`` limits either view to gcp or aws."""
    return await daily_view(
        org.services,
        org.slug,
        view=view,
        start=start_date,
        end=end_date,
        group_by=group_by,
        provider=provider,
        limit=limit,
        page_token=page_token,
    )


@router.get(
    "/{org_slug}/costs/focus",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The FOCUS rows as a file (Content-Disposition names it).",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        },
        **errors(*ORG),
    },
)
async def costs_focus(
    org: OrgRead,
    start_date: IsoDate,
    end_date: IsoDate,
    format: Annotated[Literal["csv", "parquet", "jsonl"], Query()] = "csv",
) -> StreamingResponse:
    """The FOCUS 1.2 rows (every provider) of the UTC usage days ``start_date``..``end_date`` as a file
    to import into a FinOps tool: streamed in chunks with bounded memory, named by Content-Disposition."""
    export = await focus_export(org.services, org.slug, start=start_date, end=end_date, fmt=format)
    return StreamingResponse(
        export.chunks,
        media_type=export.media_type,
        headers={"Content-Disposition": f'attachment; filename="{export.filename}"', "Cache-Control": "no-store"},
    )
