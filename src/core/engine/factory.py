"""Settings -> warehouse backend. The BigQuery driver is imported only when it is chosen."""

from __future__ import annotations

from src.core.blocking import BlockingCalls
from src.core.engine.base import Warehouse
from src.core.settings import Settings


def build_warehouse(settings: Settings, calls: BlockingCalls | None = None) -> Warehouse:
    if settings.warehouse == "bigquery":
        from src.core.engine.bigquery_backend import BigQueryWarehouse

        return BigQueryWarehouse(
            project=settings.gcp_project_id,
            location=settings.bigquery_location,
            api_endpoint=settings.bigquery_api_endpoint,
            maximum_bytes_billed=settings.maximum_bytes_billed,
            timeout_seconds=settings.query_timeout_seconds,
            retry_deadline_seconds=settings.bigquery_retry_deadline_seconds,
            calls=calls,
            export_page_rows=settings.export_page_rows,
        )
    from src.core.engine.duckdb_backend import DuckDBWarehouse

    return DuckDBWarehouse(
        path=settings.duckdb_path,
        project=settings.gcp_project_id,
        memory_limit=settings.duckdb_memory_limit,
        threads=settings.duckdb_threads,
    )
