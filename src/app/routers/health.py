from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from src.app.dependencies.services import ServicesDep
from src.app.schemas.health import Health, Ready
from src.core.services.readiness import readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get(
    "/health/ready",
    response_model=Ready,
    responses={503: {"model": Ready, "description": "The warehouse is unreachable."}},
)
async def ready(services: ServicesDep) -> Any:
    """Readiness: the warehouse answers; says whether bootstrap is done. Measured at most every
    READY_CACHE_SECONDS (``checked_at`` says when)."""
    body = await readiness(services)
    if not body["warehouse_reachable"]:
        return JSONResponse(body, status_code=503)
    return body
