"""Readiness (``GET /health/ready``): is the warehouse reachable, is bootstrap done.

The answer is measured at most once per ``READY_CACHE_SECONDS`` (concurrent probes share one
measurement), so probes — or a flood of them — cost the warehouse a query every few seconds at most.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from src.core.errors import WarehouseError
from src.core.services.org_checks import missing_central_tables

if TYPE_CHECKING:
    from src.core.services.container import Services

_KEY = "readiness"


async def _measure(services: Services) -> dict[str, Any]:
    body: dict[str, Any] = {
        "warehouse": services.warehouse.capabilities.name,
        "environment": services.settings.environment,
        "checked_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    try:
        await services.warehouse.ping()
        missing = await missing_central_tables(services, use_cache=False)
    except WarehouseError:
        return {**body, "status": "unavailable", "warehouse_reachable": False}
    return {
        **body,
        "status": "ready",
        "warehouse_reachable": True,
        "bootstrapped": not missing,
        "missing_tables": missing,
    }


async def readiness(services: Services) -> dict[str, Any]:
    """The latest readiness result, measured again when older than ``READY_CACHE_SECONDS``."""
    cached = services.readiness_result
    if cached is not None and time.monotonic() - cached[0] <= services.settings.ready_cache_seconds:
        return cached[1]
    result: dict[str, Any] = await services.lookups.run(_KEY, lambda: _measure(services))
    services.readiness_result = (time.monotonic(), result)
    return result
