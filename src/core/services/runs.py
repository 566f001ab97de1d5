"""Pipeline runs: admission (validate, refuse overlaps), execution in the background, reads,
heartbeats and recovery of runs whose owner died."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from src.core.engine.repositories.runs import NewRun
from src.core.errors import ConflictError, NotFoundError, PermissionDeniedError, ValidationFailedError
from src.core.pipeline.loader import LoadedPipeline
from src.core.pipeline.variables import Window, build_variables, resolve_window
from src.core.placeholders import placeholders
from src.core.run_types import RunInfo
from src.core.services.aws_source import require_configured
from src.core.services.billing_source import require_owned_source
from src.core.services.notifications import RunNotifier
from src.core.services.orgs import get_org
from src.core.services.quotas import quota_refusal
from src.core.services.run_recorder import CentralRunRecorder, end_run

if TYPE_CHECKING:
    from src.core.services.container import Services

log = logging.getLogger(__name__)
AWS_LOADER = "aws.s3_data_loader"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks: an org key (org_slug set) or the admin key (acting for ``org_slug``)."""

    org_slug: str
    is_admin: bool = False

    @property
    def trigger_by(self) -> str:
        return "admin" if self.is_admin else "api"


def demo_billing_table(project: str) -> str:
    from src.core.demo.billing_export import export_table_name

    return f"{project}.billing_export.{export_table_name()}"


class RunService:
    def __init__(self, services: Services) -> None:
        self._s = services
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._notifier = RunNotifier(services)

    # --- start -----------------------------------------------------------------------------
    async def start(
        self,
        pipeline: LoadedPipeline,
        *,
        caller: Caller,
        params: dict[str, Any],
        request_id: str | None = None,
        trigger_by: str | None = None,
        schedule_id: str | None = None,
        queue_item_id: str | None = None,
    ) -> dict[str, Any]:
        s = self._s
        org_slug = caller.org_slug
        run_id, trigger, window, pipeline_id, variables = await self.prepare(pipeline, caller, params, trigger_by)
        accepted = {k: variables[k] for k in (*pipeline.spec.parameters, "start_date", "end_date") if k in variables}
        accepted.update({k: variables[k] for k in ("start_period", "end_period") if variables.get(k)})
        today = datetime.now(UTC).date()
        new_run = NewRun(
            pipeline_logging_id=run_id,
            org_slug=org_slug,
            pipeline_id=pipeline_id,
            pipeline_path=pipeline.path,
            trigger_by=trigger,
            parameters=accepted,
            start_date=window.start_date if window else None,
            end_date=window.end_date if window else None,
            owner_instance=s.settings.instance_id,
            request_id=request_id,
            schedule_id=schedule_id,
            queue_item_id=queue_item_id,
            quota_usage_date=today,
        )
        async with s.locks.hold(f"admit:{org_slug}"):
            await self._admit(new_run, today)
        run = RunInfo(
            pipeline_logging_id=run_id,
            pipeline_id=pipeline_id,
            pipeline_path=pipeline.path,
            org_slug=org_slug,
            trigger_by=trigger,
            record=True,
        )
        s.metrics.run_started(pipeline.path)
        task = asyncio.create_task(self._execute(pipeline, run, variables), name=f"run-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(run_id, None))
        return {"pipeline_logging_id": run_id, "pipeline_id": pipeline_id, "status": "PENDING"}

    async def prepare(
        self, pipeline: LoadedPipeline, caller: Caller, params: dict[str, Any], trigger_by: str | None = None
    ) -> tuple[str, str, Window | None, str, dict[str, Any]]:
        """Everything a run needs before admission, checked: (run id, trigger, window, resolved
        pipeline id, variables). 422 for bad parameters, 404 unknown org, 403 suspended."""
        s = self._s
        org_slug = caller.org_slug
        window = resolve_window(
            pipeline.spec, params, max_days=s.settings.max_run_window_days, today=datetime.now(UTC).date()
        )
        profile = await get_org(s, org_slug)
        if profile["status"] != "ACTIVE":
            raise PermissionDeniedError(
                f"organization {org_slug!r} is suspended; its pipelines cannot run", code="org_suspended"
            )
        run_id = str(uuid.uuid4())
        trigger = trigger_by or caller.trigger_by
        builtins = {
            "org_slug": org_slug,
            "org_dataset": s.settings.org_dataset(org_slug),
            "project_id": s.settings.gcp_project_id,
            "environment": s.settings.environment,
            "pipeline_logging_id": run_id,
            "trigger_by": trigger,
            "central_dataset": s.catalog.dataset.name,
            "dataset_suffix": s.settings.dataset_suffix,
            "billing_export_table": await self._billing_table(pipeline, org_slug, profile),
        }
        if any(step.ps_type == AWS_LOADER for step in pipeline.spec.steps):
            await require_configured(s, org_slug)  # 422 before admission: an unconfigured source costs nothing
        pipeline_id, variables = build_variables(pipeline.spec, builtins=builtins, params=params, window=window)
        return run_id, trigger, window, pipeline_id, variables

    async def _admit(self, new_run: NewRun, today: date) -> None:
        """409 (overlapping run) before 429 (quota); a refused run consumes nothing."""
        s = self._s
        running = await s.runs.find_overlap(new_run)
        if running is not None:
            raise _overlap(new_run, running)
        if not await s.quotas.reserve(new_run.org_slug, today):
            usage = await s.quotas.usage(new_run.org_slug, today)
            if usage is None:
                raise NotFoundError(f"organization {new_run.org_slug!r} not found", code="org_not_found")
            raise quota_refusal(usage, today=today, concurrent_retry_after=s.settings.quota_retry_after_seconds)
        try:
            admission = await s.runs.admit(new_run)
        except BaseException:  # the run was not accepted: it consumes nothing
            await asyncio.shield(s.quotas.unreserve(new_run.org_slug, today))
            raise
        if not admission.admitted:  # another instance admitted an overlapping run in between
            await s.quotas.unreserve(new_run.org_slug, today)
            raise _overlap(new_run, admission.conflicting_run_id)

    async def _billing_table(self, pipeline: LoadedPipeline, org_slug: str, profile: dict[str, Any]) -> str | None:
        needed = any("billing_export_table" in placeholders(step.config) for step in pipeline.spec.steps)
        configured = profile.get("billing_export_table")
        if configured:
            if needed:
                await require_owned_source(self._s, org_slug, profile.get("billing_source_set_by"))
            return str(configured)
        if not needed:
            return None
        if self._s.settings.is_local:
            return self._s.settings.demo_billing_table or demo_billing_table(self._s.settings.gcp_project_id)
        raise ValidationFailedError(
            f"organization {org_slug!r} has no billing export table; set it with "
            f"PUT /api/v1/organizations/{org_slug}/billing-source "
            '{"billing_export_table": "project.dataset.gcp_billing_export_v1_XXXXXX_XXXXXX_XXXXXX"}',
            code="billing_source_not_configured",
        )

    async def _execute(self, pipeline: LoadedPipeline, run: RunInfo, variables: dict[str, Any]) -> None:
        recorder = CentralRunRecorder(self._s.runs, self._s.quotas, self._s.settings.instance_id)
        try:
            result = await self._s.executor.run(pipeline, run, variables, recorder)
            self._s.metrics.run_ended(pipeline.path, result.status)
            log.info(
                "run finished",
                extra={
                    "org_slug": run.org_slug,
                    "pipeline_logging_id": run.pipeline_logging_id,
                    "status": result.status,
                },
            )
            self._notifier.after_run(run, variables, result.state)  # the org's own notifications, in the background
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the executor records step failures itself; this is its own failure
            log.exception("run crashed", extra={"pipeline_logging_id": run.pipeline_logging_id})
            self._s.metrics.run_ended(pipeline.path, "FAILED")
            try:
                await end_run(
                    self._s.runs,
                    self._s.quotas,
                    pipeline_logging_id=run.pipeline_logging_id,
                    org_slug=run.org_slug or "",
                    status="FAILED",
                    error=f"internal error: {type(exc).__name__}",
                    from_states=("PENDING", "RUNNING"),
                )
            except Exception:
                log.exception("could not mark crashed run FAILED")

    # --- reads -----------------------------------------------------------------------------
    async def get(self, run_id: str, caller_org: str | None) -> dict[str, Any]:
        run = await self._s.runs.get(run_id, caller_org)
        if run is None:
            raise NotFoundError(f"run {run_id!r} not found", code="run_not_found")
        org = run["org_slug"]
        result = _public_run(run)
        result["steps"] = [_public_step(s) for s in await self._s.runs.steps(run_id, org)]
        result["dq_results"] = await self._s.runs.dq_results(run_id, org)
        return result

    async def list(
        self, *, caller_org: str | None, status: str | None, pipeline: str | None, on_date: date | None, limit: int
    ) -> list[dict[str, Any]]:
        rows = await self._s.runs.list_runs(
            org_slug=caller_org, status=status, pipeline=pipeline, on_date=on_date, limit=limit
        )
        return [_public_run(r) for r in rows]

    # --- lifecycle -------------------------------------------------------------------------
    async def recover_orphans(self, *, at_start: bool = False) -> int:
        """Mark runs whose owner is gone FAILED ("owner lost") and give back their slots.
        ``at_start``: called by the lifespan before the service takes requests."""
        s = self._s
        if not await s.warehouse.table_exists(s.catalog.ref("org_meta_pipeline_runs")):
            return 0  # not bootstrapped yet
        orphans = await s.runs.orphaned(
            owner=s.settings.instance_id,
            lease_seconds=s.settings.run_lease_seconds,
            all_active=s.warehouse.capabilities.single_process,
            live_ids=list(self._tasks),
        )
        recovered = 0
        for run in orphans:
            lost = run["owner_instance"] != s.settings.instance_id
            reason = (
                f"owner lost: instance {run['owner_instance']} stopped while the run was {run['status']}"
                if lost
                else "the run's task ended without recording an outcome"
            )
            ended = await end_run(
                s.runs,
                s.quotas,
                pipeline_logging_id=run["pipeline_logging_id"],
                org_slug=run["org_slug"],
                status="FAILED",
                error=reason,
                from_states=("PENDING", "RUNNING"),
            )
            if ended:
                recovered += 1
                s.metrics.run_ended(str(run["pipeline_path"]), "FAILED")
        if recovered:
            log.warning("recovered orphaned runs", extra={"count": recovered})
        # Recount slots from the runs table for orgs with no admission in flight. Only
        # at the start of a single-process backend can nothing be in flight; later, an admission
        # sits between its slot reservation and its run row, and a recount then would free its slot.
        quiet = 0.0 if at_start and s.warehouse.capabilities.single_process else s.settings.run_lease_seconds
        await s.quotas.resync_concurrent(quiet_seconds=quiet)
        # Staging tables of runs that died stay no longer than their expiry (where the warehouse
        # does not expire tables itself).
        if await s.warehouse.drop_expired_tables():
            log.info("dropped expired staging tables")
        return recovered

    def start_heartbeat(self) -> None:
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="run-heartbeat")

    async def _heartbeat_loop(self) -> None:
        s = self._s
        while True:
            await asyncio.sleep(s.settings.heartbeat_seconds)
            try:
                if self._tasks:
                    await s.runs.heartbeat(s.settings.instance_id, list(self._tasks))
                await self.recover_orphans()
            except Exception:
                log.exception("heartbeat failed")

    async def shutdown(self) -> None:
        if self._heartbeat:
            self._heartbeat.cancel()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._notifier.close()

    async def wait_finished(self, run_id: str, timeout: float | None = None) -> bool:
        """Wait (without cancelling it) for a run this process started; False if still going after ``timeout``."""
        task = self._tasks.get(run_id)
        if task is None:
            return True
        done, _ = await asyncio.wait({task}, timeout=timeout)
        return bool(done)

    async def wait_idle(self) -> None:
        """Wait for the runs of this process (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)


def _overlap(run: NewRun, running_id: str | None) -> ConflictError:
    return ConflictError(
        f"pipeline {run.pipeline_path} is already running for an overlapping window (run {running_id})",
        code="run_in_progress",
        details={"running_pipeline_logging_id": running_id},
    )


def _public_run(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in {"owner_instance", "heartbeat_at", "quota_released", "request_id"}}
    if isinstance(out.get("parameters"), str):
        out["parameters"] = json.loads(out["parameters"])
    return out


def _public_step(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    if isinstance(out.get("result"), str):
        out["result"] = json.loads(out["result"])
    return out
