"""The FastAPI app: ``create_app()`` wires settings, lifespan, middleware, errors and routers.

Run it with ``python -m src.app``, ``uvicorn --factory src.app.main:create_app``, or the seed's
``uvicorn src.app.main:app``: ``app`` is built on first access (a module ``__getattr__``), so
importing this module reads no settings and builds nothing. Clients are built in the lifespan.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError

from src.app import exception_handlers
from src.app.dependencies.auth import authenticate_request
from src.app.logging_setup import AccessLog, configure_logging
from src.app.middleware import RequestContextMiddleware
from src.app.routers import (
    admin,
    admin_orgs,
    aws,
    credentials,
    health,
    keys,
    metrics,
    notifications,
    organizations,
    pipelines,
    scheduler,
    schedules,
)
from src.core.errors import WarehouseError, WarehouseNotFoundError
from src.core.metrics import Metrics
from src.core.settings import Settings

log = logging.getLogger("convergence")

ROUTERS = (
    health,
    organizations,
    pipelines,
    keys,
    schedules,
    notifications,
    credentials,
    aws,
    admin,
    admin_orgs,
    scheduler,
    metrics,
)
HOT_ROUTES = ("organization", "health")  # endpoint names matched first

VERSION = "0.1.0"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.access_log.start()
    try:
        async with _services(app):
            yield
    finally:
        app.state.access_log.stop()


@asynccontextmanager
async def _services(app: FastAPI) -> AsyncIterator[None]:
    """Build and start the clients; stop them at shutdown."""
    from src.core.services.container import build_services

    settings: Settings = app.state.settings
    services = build_services(settings, metrics=app.state.metrics)
    await services.warehouse.start()
    app.state.services = services
    app.state.authenticate_headers = authenticate_request
    if settings.disable_auth:
        log.warning("DISABLE_AUTH=true: every request is treated as the admin. Development only.")
    try:
        await services.run_service.recover_orphans(at_start=True)
    except WarehouseNotFoundError:
        pass  # not bootstrapped yet: no runs to recover
    except WarehouseError as exc:
        log.error("could not recover orphaned runs at start-up", extra={"error": exc.message})
    services.run_service.start_heartbeat()
    services.scheduler.start_loop()  # SCHEDULER_LOOP_ENABLED (on by default in development)
    # Everything built so far (modules, configs, clients) lives as long as the process: take it out
    # of the garbage collector's scans, which otherwise walk it again and again under load.
    gc.collect()
    gc.freeze()
    log.info(
        "service started",
        extra={
            "warehouse": settings.warehouse,
            "environment": settings.environment,
            "instance_id": settings.instance_id,
        },
    )
    try:
        yield
    finally:
        await services.scheduler.stop()
        await services.run_service.shutdown()
        await services.key_use.close()
        await services.org_warehouses.close()
        await services.aws.close()
        await services.kms.close()
        await services.warehouse.close()
        log.info("service stopped")


def load_settings() -> Settings:
    """Settings from the environment; an invalid one stops the process with one line naming it."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']).upper() or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        sys.stderr.write(f"refusing to start: invalid settings: {problems}\n")
        raise SystemExit(2) from None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    secrets = [settings.admin_api_key.get_secret_value()] if settings.admin_api_key else []
    secrets += [settings.smtp_password.get_secret_value()] if settings.smtp_password else []
    configure_logging(settings.log_level, secrets=secrets)
    reasons = settings.unsafe_reasons()
    if reasons:
        sys.stderr.write(f"refusing to start in {settings.environment}: {'; '.join(reasons)}\n")
        raise SystemExit(2)
    app = FastAPI(
        title="Convergence Data Pipeline",
        version=VERSION,
        description="Multi-tenant pipelines that turn GCP billing exports into exact per-organization cost tables.",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry hooks look up providers on every request; the service has
        # its own request log and Prometheus metrics.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.access_log = AccessLog(level=settings.log_level, secrets=secrets)
    exception_handlers.install(app)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_request_body_bytes,
        access_log=app.state.access_log,
        metrics=app.state.metrics,
        trusted_proxy_hops=settings.trusted_proxy_hops,
    )
    # Routes are matched in order, one linear scan per request: the routes called most come first
    # (the org profile, the probes), then the others router by router, FastAPI's docs routes last.
    # No two routes share a method and path, so the order changes no answer. Routes go on the app's
    # own router rather than through include_router, whose nesting level FastAPI matches twice.
    docs = list(app.router.routes)
    ours = [route for module in ROUTERS for route in module.router.routes]
    hot = [route for route in ours if getattr(route, "name", None) in HOT_ROUTES]
    app.router.routes[:] = hot + [route for route in ours if route not in hot] + docs
    app.openapi = lambda: _openapi_with_security(app)  # type: ignore[method-assign]
    return app


ADMIN_ONLY_PREFIXES = (
    "/api/v1/admin",
    "/api/v1/scheduler",
    "/api/v1/organizations/dryrun",
    "/api/v1/organizations/onboard",
)


def _openapi_with_security(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema plus the two API keys as security schemes, so /docs offers them and each
    operation says which it takes (the keys are read from the raw headers, without a dependency
    level per request, so FastAPI cannot infer this)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schema.setdefault("components", {})["securitySchemes"] = {
        "AdminKey": {"type": "apiKey", "in": "header", "name": "X-Admin-Key", "description": "The platform admin."},
        "OrgKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "An organization's key."},
    }
    schema.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
    schema.get("components", {}).get("schemas", {}).pop("ValidationError", None)
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            # Request validation errors are answered by our handler, in our error shape.
            invalid = operation.get("responses", {}).get("422", {}).get("content", {}).get("application/json", {})
            if invalid.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                invalid["schema"] = {"$ref": "#/components/schemas/ValidationErrorResponse"}
            if path.startswith("/health"):
                continue
            if path == "/metrics" or path.startswith(ADMIN_ONLY_PREFIXES):
                operation["security"] = [{"AdminKey": []}]
            else:
                operation["security"] = [{"AdminKey": []}, {"OrgKey": []}]
    app.openapi_schema = schema
    return schema


def __getattr__(name: str) -> Any:
    """``src.app.main:app`` for plain ``uvicorn`` (no ``--factory``): built once, on first access."""
    if name == "app":
        built = globals().get("_app")
        if built is None:
            built = globals()["_app"] = create_app()
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
