"""``GET /metrics``: Prometheus text format. Behind the admin key unless ``METRICS_PUBLIC=true``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from src.app.dependencies.auth import require_admin
from src.app.dependencies.services import ServicesDep
from src.app.schemas.common import AUTH, errors
from src.core.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}, "description": "Prometheus text format."},
        **errors(*AUTH),
    },
)
async def metrics(request: Request, services: ServicesDep) -> Response:
    """Requests by route template and status (latency histogram), runs started and ended by pipeline
    and state, warehouse statements by kind, work-queue items by state."""
    if not services.settings.metrics_public:
        await require_admin(request)
    await services.scheduler.refresh_queue_metrics()
    return Response(services.metrics.render(), media_type=CONTENT_TYPE)
