"""Admin setup flows — bootstrap, dry-run and onboarding — each run through the executor from its
``configs/setup/**/pipeline.yml``. They are synchronous: the caller gets the step's result, or the
step's error with its own status code."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from src.core.errors import PermissionDeniedError, ServiceError
from src.core.pipeline.executor import NullRecorder
from src.core.pipeline.variables import build_variables
from src.core.run_types import RunInfo
from src.core.services.org_checks import missing_central_tables
from src.core.services.table_renames import move_renamed_tables

if TYPE_CHECKING:
    from src.core.services.container import Services

BOOTSTRAP = "setup/bootstrap/pipeline"
DRYRUN = "setup/organizations/dryrun/pipeline"
ONBOARDING = "setup/organizations/onboarding/pipeline"
MANUAL_RECREATE = (
    "the manual procedure in README.md, 'Recreating the central tables': export the dataset "
    "(bq extract), delete it with `bq rm -r -d PROJECT:organizations`, then POST /api/v1/admin/bootstrap"
)


class SetupService:
    def __init__(self, services: Services) -> None:
        self._s = services

    async def _run(
        self, path: str, *, org_slug: str | None, params: dict[str, Any], extra: dict[str, Any]
    ) -> dict[str, Any]:
        s = self._s
        pipeline = s.store.get(path)
        run_id = str(uuid.uuid4())
        builtins = {
            "org_slug": org_slug,
            "org_dataset": s.settings.org_dataset(org_slug) if org_slug else None,
            "project_id": s.settings.gcp_project_id,
            "environment": s.settings.environment,
            "pipeline_logging_id": run_id,
            "trigger_by": "admin",
            "central_dataset": s.catalog.dataset.name,
            "dataset_suffix": s.settings.dataset_suffix,
            **extra,
        }
        pipeline_id, variables = build_variables(pipeline.spec, builtins=builtins, params=params, window=None)
        run = RunInfo(run_id, pipeline_id, pipeline.path, org_slug, "admin", record=False)
        result = await s.executor.run(pipeline, run, variables, NullRecorder())
        if result.status != "COMPLETED":
            failed = next((o for o in result.state.steps.values() if o.status == "FAILED"), None)
            if failed is not None and isinstance(failed.exception, ServiceError):
                raise failed.exception
            raise ServiceError(result.state.error or f"{path} failed")
        merged: dict[str, Any] = {}
        for outcome in result.state.steps.values():
            merged.update({k: v for k, v in outcome.result.items() if k != "status"})
        return merged

    async def bootstrap(
        self, *, force_recreate_dataset: bool, force_recreate_tables: bool, sync: bool = False
    ) -> dict[str, Any]:
        if (force_recreate_dataset or force_recreate_tables) and not self._s.settings.is_local:
            flag = "force_recreate_dataset" if force_recreate_dataset else "force_recreate_tables"
            raise PermissionDeniedError(
                f"{flag} deletes every organization's central rows and is refused in "
                f"{self._s.settings.environment}; to recreate the central tables follow {MANUAL_RECREATE}",
                code="force_recreate_refused",
            )
        self._s.bootstrapped = False  # re-checked after this (force flags drop tables)
        self._s.readiness_result = None  # readiness is measured again
        result = await self._run(
            BOOTSTRAP,
            org_slug=None,
            params={
                "force_recreate_dataset": force_recreate_dataset,
                "force_recreate_tables": force_recreate_tables,
                "sync": sync,
            },
            extra={},
        )
        if sync:
            result["tables_moved"] = await self._move_renamed_tables()
        return result

    async def _move_renamed_tables(self) -> list[dict[str, str]]:
        """Org tables that changed name move to their new name (services/table_renames.py)."""
        moved: list[dict[str, str]] = []
        offset, page = 0, 500
        while True:
            orgs = await self._s.orgs.list_orgs(status=None, limit=page, offset=offset)
            for org in orgs:
                dataset = str(org.get("org_dataset") or self._s.settings.org_dataset(org["org_slug"]))
                moved += await move_renamed_tables(self._s, org["org_slug"], dataset)
            if len(orgs) < page:
                return moved
            offset += page

    async def status(self) -> dict[str, Any]:
        """Missing tables and missing columns of the central dataset (read-only)."""
        s = self._s
        wh = s.warehouse
        dataset = s.catalog.dataset.name
        dataset_exists = await wh.dataset_exists(dataset)
        missing_tables = await missing_central_tables(s, use_cache=False)
        missing_columns: dict[str, list[str]] = {}
        existing = await wh.dataset_columns(dataset) if dataset_exists else {}
        for name, table in s.catalog.tables.items():
            if name in missing_tables:
                continue
            present = {c.lower() for c in existing.get(name, [])}
            absent = [f.name for f in table.schema if f.name.lower() not in present]
            if absent:
                missing_columns[name] = absent
        return {
            "dataset": dataset,
            "dataset_exists": dataset_exists,
            "bootstrapped": dataset_exists and not missing_tables,
            "in_sync": dataset_exists and not missing_tables and not missing_columns,
            "expected_tables": list(s.catalog.tables),
            "missing_tables": missing_tables,
            "missing_columns": missing_columns,
        }

    async def dryrun(self, body: dict[str, Any]) -> dict[str, Any]:
        org_slug, params, extra = _split(body)
        return await self._run(DRYRUN, org_slug=org_slug, params=params, extra=extra)

    async def onboard(self, body: dict[str, Any]) -> dict[str, Any]:
        org_slug, params, extra = _split(body)
        return await self._run(ONBOARDING, org_slug=org_slug, params=params, extra=extra)


def _split(body: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    params = {k: body[k] for k in ("company_name", "admin_email", "subscription_plan")}
    return body["org_slug"], params, {"billing_export_table": body.get("billing_export_table")}
