"""Recovery of runs whose owner died: they end FAILED ("owner lost") and the quota slots nobody
holds come back. Reads first; writes only for what it finds (guarded, so instances sweeping at once
end a run and return a slot once)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from src.core.services.run_recorder import end_run

if TYPE_CHECKING:
    from src.core.services.container import Services

log = logging.getLogger(__name__)


async def recover_orphans(s: Services, *, live_ids: list[str], at_start: bool = False) -> int:
    """Mark runs whose owner is gone FAILED ("owner lost") and give back slots nobody holds.
    Reads first; writes only for what it finds (guarded, so instances sweeping at once end a
    run and return a slot once). Called every half lease by each instance's heartbeat loop
    and by the lifespan (``at_start``) before the service takes requests."""
    if not await s.warehouse.table_exists(s.catalog.ref("org_meta_pipeline_runs")):
        return 0  # not bootstrapped yet
    orphans = await s.runs.orphaned(
        owner=s.settings.instance_id,
        lease_seconds=s.settings.run_lease_seconds,
        all_active=at_start and s.warehouse.capabilities.single_process,
        live_ids=live_ids,
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
        )
        if ended:
            recovered += 1
            s.metrics.run_ended(str(run["pipeline_path"]), "FAILED")
    if recovered:
        log.warning("recovered orphaned runs", extra={"count": recovered})
    # Slots held by runs that ended (a process died between ending a run and giving its slot
    # back) or that were never recorded (died between admission and the run row).
    quiet = 0.0 if at_start and s.warehouse.capabilities.single_process else s.settings.run_lease_seconds
    for org_slug, run_id, day, recorded in await s.quotas.stale_slots(older_than_seconds=quiet):
        if recorded:
            await s.quotas.release(org_slug, run_id)
        else:
            await s.quotas.refund(org_slug, run_id, day)
    # Staging tables of runs that died stay no longer than their expiry (where the warehouse
    # does not expire tables itself).
    if await s.warehouse.drop_expired_tables():
        log.info("dropped expired staging tables")
    return recovered
