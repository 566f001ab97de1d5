from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from src.app.dependencies.auth import AdminDep
from src.app.dependencies.services import ServicesDep
from src.app.schemas.admin import BootstrapRequest
from src.core.services.setup import SetupService

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.post("/bootstrap")
async def bootstrap(
    _: AdminDep, services: ServicesDep, body: BootstrapRequest = Body(default_factory=BootstrapRequest)
) -> dict[str, Any]:
    """Create the central dataset and tables. Idempotent: a second call reports every table as existing."""
    return await SetupService(services).bootstrap(
        force_recreate_dataset=body.force_recreate_dataset, force_recreate_tables=body.force_recreate_tables
    )


@router.get("/bootstrap/status")
async def bootstrap_status(_: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """Missing tables and missing columns of the central dataset."""
    return await SetupService(services).status()


@router.post("/bootstrap/sync")
async def bootstrap_sync(_: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """Add missing tables and columns without touching data."""
    return await SetupService(services).bootstrap(force_recreate_dataset=False, force_recreate_tables=False, sync=True)
