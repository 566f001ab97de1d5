from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from src.app.dependencies.services import ServicesDep
from src.core.errors import WarehouseError
from src.core.services.org_checks import missing_central_tables

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/health/ready", responses={503: {"description": "warehouse unreachable"}})
async def ready(services: ServicesDep) -> Any:
    """Readiness: the warehouse answers; says whether bootstrap is done."""
    body: dict[str, Any] = {
        "warehouse": services.warehouse.capabilities.name,
        "environment": services.settings.environment,
    }
    try:
        await services.warehouse.ping()
        missing = await missing_central_tables(services, use_cache=False)
    except WarehouseError:
        return JSONResponse({**body, "status": "unavailable", "warehouse_reachable": False}, status_code=503)
    return {
        **body,
        "status": "ready",
        "warehouse_reachable": True,
        "bootstrapped": not missing,
        "missing_tables": missing,
    }
