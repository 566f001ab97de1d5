from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from src.app.audit import audited
from src.app.dependencies.auth import CallerDep, authorize_org
from src.app.dependencies.services import ServicesDep
from src.app.logging_setup import request_id_var
from src.app.schemas.common import AUTH, BODY, ORG, IsoDate, PageToken, errors, limit_query
from src.app.schemas.organizations import ORG_SLUG_PATTERN
from src.app.schemas.runs import RunCancelled, RunDetail, RunEstimate, RunListResponse, RunStarted, RunStatus
from src.core.errors import BadRequestError, ValidationFailedError
from src.core.security import scopes
from src.core.services.run_estimates import estimate_run
from src.core.services.runs import Caller

router = APIRouter(prefix="/api/v1/pipelines", tags=["pipelines"])

Segment = Annotated[str, Path(max_length=64)]
RunId = Annotated[str, Path(max_length=64)]

_RUN_BODY = {
    "requestBody": {
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": 'The pipeline\'s declared parameters: {"date": "YYYY-MM-DD"} or '
                    '{"start_date": …, "end_date": …} for a window, plus any others it declares; '
                    '"dry_run": true estimates what the run would read and starts nothing.',
                    "additionalProperties": True,
                },
                "example": {"date": "2026-11-26"},
            }
        }
    },
    "responses": {
        "202": {
            "links": {
                "GetRun": {
                    "operationId": "getRun",
                    "parameters": {"pipeline_logging_id": "$response.body#/pipeline_logging_id"},
                }
            }
        }
    },
}


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise BadRequestError("the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ValidationFailedError("the request body must be a JSON object", code="invalid_parameters")
    return body


@router.post(
    "/run/{org_slug}/{provider}/{domain}/{pipeline}",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=_RUN_BODY,
    response_model=RunStarted,
    responses={
        **errors(*ORG, *BODY),
        200: {"model": RunEstimate, "description": "dry_run: what the run would read; nothing ran"},
    },
    operation_id="runPipeline",
)
async def run_pipeline(
    org_slug: Annotated[str, Path(pattern=ORG_SLUG_PATTERN)],
    provider: Segment,
    domain: Segment,
    pipeline: Segment,
    request: Request,
    identity: CallerDep,
    services: ServicesDep,
) -> Any:
    """Start ``configs/{provider}/{domain}/{pipeline}.yml`` for the org; 202 with the run id.
    409: a run of the pipeline with an overlapping window is running; 429: a quota is reached.
    With ``"dry_run": true``: 200 with what the run would read (bytes per statement on BigQuery,
    rows on DuckDB); nothing starts and no quota is used."""
    org = authorize_org(identity, org_slug)
    identity.require(scopes.PIPELINES_RUN)
    loaded = services.store.runnable(provider, domain, pipeline)
    params = await _json_object(request)
    dry_run = params.pop("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ValidationFailedError("dry_run must be true or false", code="invalid_parameters")
    caller = Caller(org_slug=org, is_admin=identity.is_admin)
    if dry_run:
        estimate = RunEstimate.model_validate(await estimate_run(services, loaded, caller=caller, params=params))
        return JSONResponse(jsonable_encoder(estimate))
    async with audited(identity, "pipeline.run", org=org, target=loaded.path) as entry:
        started = await services.run_service.start(
            loaded,
            caller=caller,
            params=params,
            request_id=request_id_var.get(),
        )
        entry.target = f"{loaded.path} {started['pipeline_logging_id']}"
    return started


@router.get(
    "/runs/{pipeline_logging_id}", response_model=RunDetail, responses=errors(*AUTH, 404, 422), operation_id="getRun"
)
async def get_run(pipeline_logging_id: RunId, identity: CallerDep, services: ServicesDep) -> dict[str, Any]:
    """One run with its steps and reconciliation results. Another org's run is 404."""
    identity.require(scopes.PIPELINES_READ)
    return await services.run_service.get(pipeline_logging_id, None if identity.is_admin else identity.org_slug)


@router.get("/runs", response_model=RunListResponse, responses=errors(*AUTH, 409, 422))
async def list_runs(
    identity: CallerDep,
    services: ServicesDep,
    status_filter: Annotated[RunStatus | None, Query(alias="status")] = None,
    pipeline: Annotated[str | None, Query(max_length=200)] = None,
    on_date: Annotated[IsoDate | None, Query(alias="date")] = None,
    org_slug: Annotated[str | None, Query(pattern=ORG_SLUG_PATTERN, description="Admin only")] = None,
    limit: Annotated[int, limit_query(500)] = 50,
    page_token: PageToken = None,
) -> dict[str, Any]:
    """The caller's runs, newest first, one page at a time (the admin sees every org's, or one
    with ``org_slug``)."""
    caller_org = org_slug if identity.is_admin else authorize_org(identity, org_slug or identity.org_slug or "")
    identity.require(scopes.PIPELINES_READ)
    runs, token = await services.run_service.list(
        caller_org=caller_org,
        status=status_filter,
        pipeline=pipeline,
        on_date=on_date,
        limit=limit,
        page_token=page_token,
    )
    return {"runs": runs, "count": len(runs), "next_page_token": token}


@router.post(
    "/runs/{pipeline_logging_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunCancelled,
    responses=errors(*AUTH, 404, 409, 422),
    operation_id="cancelRun",
)
async def cancel_run(pipeline_logging_id: RunId, identity: CallerDep, services: ServicesDep) -> dict[str, Any]:
    """Cancel a PENDING or RUNNING run (the org's key with ``pipelines:run``, or the admin). The
    answer carries the run's status: CANCELLED once its warehouse jobs are cancelled or done,
    still RUNNING while the instance that owns it gets there (at its next heartbeat). 409: the run
    has already ended; another org's run is 404."""
    identity.require(scopes.PIPELINES_RUN)
    by = "admin" if identity.is_admin else f"key:{identity.key_id}"
    caller_org = None if identity.is_admin else identity.org_slug
    async with audited(identity, "pipeline.cancel", org=caller_org, target=pipeline_logging_id):
        return await services.run_service.cancel(pipeline_logging_id, caller_org, by=by)
