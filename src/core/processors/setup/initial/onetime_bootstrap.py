"""``setup.initial.onetime_bootstrap``: the central dataset and its tables, from configs.

Idempotent: existing tables are left alone and reported. ``sync`` adds missing tables and
missing columns without touching data; the force flags drop and recreate (admin only).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from src.core.engine.catalog import CentralCatalog
from src.core.pipeline.context import StepContext


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    config_file: str
    schemas_dir: str


class BootstrapProcessor:
    async def execute(self, step_config: Config, context: StepContext) -> dict[str, Any]:
        settings = context.services.settings
        wh = context.services.warehouse
        catalog = CentralCatalog(
            settings.configs_dir,
            wh.project,
            config_file=step_config.config_file,
            schemas_dir=step_config.schemas_dir,
        )
        v = context.variables
        dataset = catalog.dataset.name
        if v.get("force_recreate_dataset"):
            await wh.delete_dataset(dataset)
        dataset_created = await wh.create_dataset(
            dataset, labels=catalog.dataset.labels, description=catalog.dataset.description
        )
        tables: dict[str, str] = {}
        columns_added: dict[str, list[str]] = {}
        existing = await wh.dataset_columns(dataset) if v.get("sync") else {}
        for name, table in catalog.tables.items():
            ref = catalog.ref(name)
            if v.get("force_recreate_tables") and not dataset_created:
                await wh.drop_table(ref)
                await wh.create_table(ref, table.schema, table.options)
                tables[name] = "recreated"
            elif await wh.create_table(ref, table.schema, table.options):
                tables[name] = "created"
            else:
                tables[name] = "exists"
                if v.get("sync"):
                    present = {c.lower() for c in existing.get(name, [])}
                    missing = [f for f in table.schema if f.name.lower() not in present]
                    if missing:
                        await wh.add_columns(ref, missing)
                        columns_added[name] = [f.name for f in missing]
        return {
            "status": "COMPLETED",
            "dataset": dataset,
            "dataset_created": dataset_created,
            "tables": tables,
            "tables_created": sorted(t for t, s in tables.items() if s != "exists"),
            "tables_existing": sorted(t for t, s in tables.items() if s == "exists"),
            "columns_added": columns_added,
        }


def get_engine() -> BootstrapProcessor:
    return BootstrapProcessor()
