from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from src.app.audit import audited
from src.app.dependencies.auth import AdminDep
from src.app.dependencies.services import ServicesDep
from src.app.schemas.admin import BootstrapRequest, BootstrapResult, BootstrapStatus
from src.app.schemas.common import AUTH, BODY, errors
from src.core.services.setup import SetupService

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.post("/bootstrap", response_model=BootstrapResult, responses=errors(*AUTH, *BODY))
async def bootstrap(
    identity: AdminDep, services: ServicesDep, body: BootstrapRequest = Body(default_factory=BootstrapRequest)
) -> dict[str, Any]:
    """Create the central dataset and tables. Idempotent: a second call reports every table as existing.
    The force flags work in development only (403 ``force_recreate_refused`` elsewhere)."""
    forced = [name for name, on in body.model_dump().items() if on]
    async with audited(identity, "admin.bootstrap", target=",".join(forced) or None):
        return await SetupService(services).bootstrap(
            force_recreate_dataset=body.force_recreate_dataset, force_recreate_tables=body.force_recreate_tables
        )


@router.get("/bootstrap/status", response_model=BootstrapStatus, responses=errors(*AUTH))
async def bootstrap_status(identity: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """Missing tables and missing columns of the central dataset."""
    async with audited(identity, "admin.bootstrap_status"):
        return await SetupService(services).status()


@router.post("/bootstrap/sync", response_model=BootstrapResult, responses=errors(*AUTH))
async def bootstrap_sync(identity: AdminDep, services: ServicesDep) -> dict[str, Any]:
    """Add missing tables and columns without touching data."""
    async with audited(identity, "admin.bootstrap_sync"):
        return await SetupService(services).bootstrap(
            force_recreate_dataset=False, force_recreate_tables=False, sync=True
        )
