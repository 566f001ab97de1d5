"""Write the demo GCP billing export into the warehouse (``python -m src.core.demo.seed``).

Local development only: ``{GCP_PROJECT_ID}.billing_export.gcp_billing_export_v1_<DEMO ACCOUNT>``,
deterministic per (seed, end date); the window ends yesterday (UTC) unless DEMO_END_DATE says
otherwise. Rows go through a load job (a newline-delimited JSON file), as Google's export would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from src.core.demo.billing_export import export_table_name, write_ndjson
from src.core.engine.base import Warehouse
from src.core.engine.factory import build_warehouse
from src.core.engine.repositories.billing_export import add_ingestion_day, export_schema
from src.core.engine.schema import TableOptions, TimePartitioning
from src.core.settings import Settings

DATASET = "billing_export"


async def seed_demo_billing(
    warehouse: Warehouse,
    configs_dir: Path,
    *,
    end_date: date,
    days: int = 30,
    rows_per_day: int = 5000,
    seed: int = 42,
    include_late: bool = True,
    table: str | None = None,
) -> dict[str, Any]:
    schema = export_schema(configs_dir)
    ref = warehouse.table(DATASET, table or export_table_name())
    await warehouse.create_dataset(DATASET, labels={"purpose": "demo-billing-export"})
    # Google's export table is ingestion-time partitioned by day (no partition column).
    await warehouse.create_table(ref, schema, TableOptions(time_partitioning=TimePartitioning(type="DAY")))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.ndjson"
        started = time.perf_counter()
        stats = write_ndjson(
            path, end_date=end_date, days=days, rows_per_day=rows_per_day, seed=seed, include_late=include_late
        )
        generated = time.perf_counter() - started
        loaded = await warehouse.load_ndjson(ref, schema, path, truncate=True)
    await add_ingestion_day(warehouse, ref)
    return {
        "table": str(ref),
        "rows_loaded": loaded,
        "generate_seconds": round(generated, 2),
        **{k: (v.isoformat() if isinstance(v, date) else v) for k, v in asdict(stats).items()},
    }


def _default_end_date() -> date:
    configured = os.environ.get("DEMO_END_DATE", "").strip()
    return date.fromisoformat(configured) if configured else datetime.now(UTC).date() - timedelta(days=1)


async def _main(args: argparse.Namespace) -> None:
    settings = Settings()
    warehouse = build_warehouse(settings)
    await warehouse.start()
    try:
        result = await seed_demo_billing(
            warehouse,
            settings.configs_dir,
            end_date=args.end_date or _default_end_date(),
            days=args.days,
            rows_per_day=args.rows_per_day,
            seed=args.seed,
        )
    finally:
        await warehouse.close()
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the demo GCP billing export into the warehouse.")
    parser.add_argument("--days", type=int, default=int(os.environ.get("DEMO_DAYS", "30")))
    parser.add_argument("--rows-per-day", type=int, default=int(os.environ.get("DEMO_ROWS_PER_DAY", "5000")))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("DEMO_SEED", "42")))
    parser.add_argument("--end-date", type=date.fromisoformat, default=None)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
