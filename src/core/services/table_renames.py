"""Org tables that changed name (``destination.renamed_from`` of a load step): moved to the new name
by ``POST /api/v1/admin/bootstrap/sync`` for every org, or by the first run that writes the new name.

A move never loses or duplicates a row: with only the old table, it is renamed (BigQuery: a copy job
then a delete); with both (a move interrupted between copy and delete, or a run that created the new
table first), the old table's rows for the days the new one lacks are copied, then the old table is
dropped. Repeating a move changes nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from src.core.engine.base import Warehouse
from src.core.engine.repositories.tables import copy_missing_days
from src.core.engine.sql import TableRef
from src.core.errors import ConflictError
from src.core.placeholders import PLACEHOLDER_RE

if TYPE_CHECKING:
    from src.core.services.container import Services

log = logging.getLogger(__name__)


async def move_table(wh: Warehouse, old: TableRef, new: TableRef, *, day_column: str | None) -> bool:
    if old == new or not await wh.table_exists(old):
        return False
    if not await wh.table_exists(new):
        await wh.rename_table(old, new.table)
        log.info("moved a renamed table", extra={"from": str(old), "to": str(new)})
        return True
    if day_column is None:
        raise ConflictError(
            f"both {old} and {new} exist and the table has no day column to merge them by; merge them by hand",
            code="renamed_table_conflict",
        )
    copied = await copy_missing_days(wh, old, new, day_column=day_column)
    await wh.drop_table(old)
    log.info("merged a renamed table", extra={"from": str(old), "to": str(new), "rows": copied})
    return True


def _declared_renames(services: Services) -> list[tuple[str, str, str, str | None, dict[str, Any]]]:
    """(dataset template, old name, table template, day column, pipeline variables) of every load step
    that declares ``renamed_from``."""
    from src.core.processors.gcp.bq_etl import Config as EtlConfig

    found = []
    for pipeline in services.store.all():
        for config in pipeline.step_configs.values():
            if isinstance(config, EtlConfig):
                dest = config.destination
                for old in dest.renamed_from:
                    found.append((dest.dataset, old, dest.table, dest.partition_column, dict(pipeline.spec.variables)))
    return found


def _fill(template: str, names: dict[str, str]) -> str:
    return PLACEHOLDER_RE.sub(lambda m: names.get(m.group(1), m.group(0)), template)


async def move_renamed_tables(services: Services, org_slug: str, org_dataset: str) -> list[dict[str, str]]:
    """Every declared rename, for one org; returns what was moved."""
    values = {"org_slug": org_slug, "org_dataset": org_dataset, "project_id": services.settings.gcp_project_id}
    moved = []
    for dataset_t, old, table_t, day_column, variables in _declared_renames(services):
        names = {**{k: str(v) for k, v in variables.items()}, **values}
        dataset, table = _fill(dataset_t, names), _fill(table_t, names)
        new = services.warehouse.table(dataset, table)
        old_ref = services.warehouse.table(dataset, old)
        if await move_table(services.warehouse, old_ref, new, day_column=day_column):
            moved.append({"org_slug": org_slug, "from": str(old_ref), "to": str(new)})
    return moved
