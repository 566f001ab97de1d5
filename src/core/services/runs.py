"""Pipeline runs: admission (validate, refuse overlaps), execution in the background, reads,
heartbeats and recovery of runs whose owner died."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from src.core import pagination
from src.core.engine.repositories.quotas import ActiveRun
from src.core.engine.repositories.runs import NewRun
from src.core.errors import (
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    TransientWarehouseError,
    ValidationFailedError,
)
from src.core.pipeline.loader import LoadedPipeline
from src.core.pipeline.variables import Window, build_variables, resolve_window
from src.core.placeholders import placeholders
from src.core.run_types import ACTIVE_RUN_STATES, RunInfo
from src.core.services.aws_source import require_configured
from src.core.services.billing_source import require_owned_source
from src.core.services.notifications import RunNotifier
from src.core.services.orgs import get_org
from src.core.services.quotas import quota_refusal
from src.core.services.run_recorder import CentralRunRecorder, end_run
from src.core.services.run_recovery import recover_orphans

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
        self._recorders: dict[str, CentralRunRecorder] = {}
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
        """One guarded UPDATE of the org's quota row takes the slot (limits and overlapping windows
        checked in the same statement, so no lock is needed on any instance), then the run row is
        appended. Refused: 409 for an overlapping run before 429 for a quota; a refused run, or one
        whose row could not be written, consumes nothing."""
        s = self._s
        slot = ActiveRun(
            run_id=new_run.pipeline_logging_id,
            pipeline_path=new_run.pipeline_path,
            start_date=new_run.start_date,
            end_date=new_run.end_date,
            owner_instance=new_run.owner_instance,
        )
        for _ in range(3):  # a slot freed between the refusal and the read of why: try again
            if await s.quotas.admit(new_run.org_slug, slot, today):
                break
            usage = await s.quotas.usage(new_run.org_slug, today)
            if usage is None:
                raise NotFoundError(f"organization {new_run.org_slug!r} not found", code="org_not_found")
            window = (slot.pipeline_path, slot.start_date, slot.end_date)
            running = next((a for a in usage.active if a.overlaps(*window)), None)
            if running is not None:
                raise _overlap(new_run, running.run_id)
            if usage.refuses():
                raise quota_refusal(usage, today=today, concurrent_retry_after=s.settings.quota_retry_after_seconds)
        else:
            raise TransientWarehouseError("could not take a run slot: the quota row kept changing; retry")
        try:
            await s.runs.insert(new_run)
        except BaseException:  # the run was not accepted: it consumes nothing
            await asyncio.shield(s.quotas.refund(new_run.org_slug, new_run.pipeline_logging_id, today))
            raise

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
        recorder = CentralRunRecorder(self._s.runs, self._s.quotas)
        self._recorders[run.pipeline_logging_id] = recorder
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
                )
            except Exception:
                log.exception("could not mark crashed run FAILED")
        finally:
            self._recorders.pop(run.pipeline_logging_id, None)

    # --- reads -----------------------------------------------------------------------------
    async def get(self, run_id: str, caller_org: str | None) -> dict[str, Any]:
        run = await self._s.runs.get(run_id, caller_org)
        if run is None:
            raise NotFoundError(f"run {run_id!r} not found", code="run_not_found")
        org = run["org_slug"]
        result = _public_run(run)
        result["steps"] = [_public_step(s) for s in await self._s.runs.steps(run_id, org)]
        if not result["steps"] and run["status"] in ACTIVE_RUN_STATES:  # its steps so far
            live = self._recorders.get(run_id)
            progress = live.progress() if live is not None else run.get("progress")  # else: as of its last heartbeat
            result["steps"] = json.loads(progress) if progress else []
        result["dq_results"] = await self._s.runs.dq_results(run_id, org)
        return result

    async def list(
        self,
        *,
        caller_org: str | None,
        status: str | None,
        pipeline: str | None,
        on_date: date | None,
        limit: int,
        page_token: str | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of runs, newest first, and the token of the next page."""
        filters = {"org": caller_org, "status": status, "pipeline": pipeline, "date": on_date}
        position = pagination.decode(page_token, "runs", filters, 2)
        after = (pagination.timestamp(position[0]), str(position[1])) if position else None
        rows = await self._s.runs.list_runs(
            org_slug=caller_org, status=status, pipeline=pipeline, on_date=on_date, limit=limit + 1, after=after
        )
        shown, token = pagination.page(
            rows, limit, "runs", filters, lambda r: (r["created_at"], r["pipeline_logging_id"])
        )
        return [_public_run(r) for r in shown], token

    # --- cancel ----------------------------------------------------------------------------
    async def cancel(self, run_id: str, caller_org: str | None, *, by: str) -> dict[str, Any]:
        """Ask for an active run to be cancelled. This instance cancels its own run at once; the
        owner of a run elsewhere does at its next heartbeat. The run reads CANCELLED once its
        steps' warehouse jobs are cancelled or done, never before (202 until then)."""
        run = await self._s.runs.get(run_id, caller_org)
        if run is None:
            raise NotFoundError(f"run {run_id!r} not found", code="run_not_found")
        if run["status"] not in ACTIVE_RUN_STATES:
            raise ConflictError(
                f"run {run_id} has already ended ({run['status']})",
                code="run_not_active",
                details={"status": run["status"]},
            )
        task = self._tasks.get(run_id)
        if task is not None:  # ours: cancel it now (its warehouse jobs are cancelled and awaited)
            task.cancel(msg=f"by {by}")
            await self.wait_finished(run_id, timeout=self._s.settings.cancel_wait_seconds)
        else:  # another instance's: it cancels the run at its next heartbeat
            await self._s.runs.request_cancel(run_id, run["org_slug"], by=by)
        current = await self._s.runs.get(run_id, caller_org)
        status = current["status"] if current else run["status"]
        return {"pipeline_logging_id": run_id, "status": status, "cancel_requested": True}

    # --- lifecycle -------------------------------------------------------------------------
    async def recover_orphans(self, *, at_start: bool = False) -> int:
        """Runs whose owner is gone end FAILED, their slots come back (services/run_recovery.py).
        Called every half lease by the heartbeat loop and by the lifespan (``at_start``)."""
        return await recover_orphans(self._s, live_ids=list(self._tasks), at_start=at_start)

    def start_heartbeat(self) -> None:
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="run-heartbeat")

    async def _heartbeat_loop(self) -> None:
        """Every ``HEARTBEAT_SECONDS``: ``beat``. Every half lease (jittered, so instances spread
        out): ``recover_orphans`` — two reads, and writes only for what they find.

        Beats keep a fixed rate: the time a beat takes (a slow warehouse) is not added to the
        interval, and a beat that overran its interval is followed at once, not a full interval later.
        """
        s = self._s
        interval = s.settings.heartbeat_seconds
        sweep_every = max(s.settings.run_lease_seconds / 2, interval)
        next_sweep = time.monotonic() + random.uniform(0.5, 1.0) * sweep_every
        next_beat = time.monotonic() + interval
        while True:
            await asyncio.sleep(max(0.0, next_beat - time.monotonic()))
            next_beat = max(next_beat + interval, time.monotonic())
            try:
                await self.beat()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + random.uniform(0.75, 1.25) * sweep_every
                    await self.recover_orphans()
            except Exception:
                log.exception("heartbeat failed")

    async def beat(self) -> None:
        """One heartbeat of this instance: one UPDATE for all the runs it executes (their
        heartbeat and progress), and one read of which of them someone asked to cancel."""
        s = self._s
        progress = {run_id: r.progress() for run_id, r in list(self._recorders.items()) if run_id in self._tasks}
        if not progress:
            return
        _, cancelled = await asyncio.gather(  # independent: the write and the read go out together
            s.runs.heartbeat(s.settings.instance_id, progress),
            s.runs.cancel_requested(s.settings.instance_id, list(progress)),
        )
        for run_id in cancelled:
            task = self._tasks.get(run_id)
            if task is not None:
                log.info("cancelling a run on request", extra={"pipeline_logging_id": run_id})
                task.cancel(msg="on request")

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
    hidden = {"owner_instance", "heartbeat_at", "quota_released", "request_id", "progress"}
    out = {k: v for k, v in row.items() if k not in hidden}
    if isinstance(out.get("parameters"), str):
        out["parameters"] = json.loads(out["parameters"])
    return out


def _public_step(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    if isinstance(out.get("result"), str):
        out["result"] = json.loads(out["result"])
    return out
