"""Google BigQuery backend, on the official google-cloud-bigquery client.

Imported only when ``WAREHOUSE=bigquery`` (the library costs ~0.3 s and ~65 MiB to import). The
client is built in ``start()`` (the app's lifespan). ``BIGQUERY_API_ENDPOINT`` points it at another
endpoint with anonymous credentials — how the tests reach the local emulator through the same code
path as production.

BigQuery's rules respected here: rows that change later are only ever written with DML or load
jobs (never streaming inserts); a window replace is one MERGE statement (atomic, one job);
every job is labelled with org and run id; tenant queries carry ``maximum_bytes_billed`` and a
timeout; Google exceptions never leave it (``bigquery_mapping.translate_error``).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.cloud.bigquery import retry as bq_retry

from src.core.engine import exports
from src.core.engine.base import (
    Capabilities,
    Estimate,
    Params,
    QueryOptions,
    ReplaceResult,
    Row,
    RowsCheck,
    Warehouse,
)
from src.core.engine.bigquery_catalog import BigQueryCatalog
from src.core.engine.bigquery_mapping import (
    job_statistics,
    label_value,
    to_query_parameter,
    translate_error,
)
from src.core.engine.loads import replace_merge_sql
from src.core.engine.schema import Schema
from src.core.engine.sql import TableRef, check_identifier
from src.core.engine.translate import parameter_names
from src.core.errors import (
    TerminalWarehouseError,
    TransientWarehouseError,
    WarehouseError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

CAPABILITIES = Capabilities(
    name="bigquery",
    transactions=True,
    partitioning=True,
    clustering=True,
    merge=True,
    dataset_labels=True,
    single_process=False,
    checks_before_commit=False,
    org_credentials=True,
    snapshot_in_transaction=False,
    partition_pseudo_columns=True,
)


class BigQueryWarehouse(BigQueryCatalog, Warehouse):
    capabilities = CAPABILITIES

    def __init__(
        self,
        *,
        project: str,
        location: str,
        api_endpoint: str | None,
        maximum_bytes_billed: int,
        timeout_seconds: float,
        retry_deadline_seconds: float = 60.0,
        export_page_rows: int = 10_000,
    ) -> None:
        self.project = check_identifier("project", project)
        self._location = location
        self._endpoint = api_endpoint
        self._max_bytes = maximum_bytes_billed
        self._timeout = timeout_seconds
        self._retry = bigquery.DEFAULT_RETRY.with_deadline(retry_deadline_seconds)
        self._job_retry = bq_retry.DEFAULT_JOB_RETRY.with_deadline(retry_deadline_seconds)
        self._client: bigquery.Client | None = None
        self._credentials: Any = None  # None: the service's own (or anonymous for an endpoint)
        self._job_project = self.project  # where jobs run and are billed
        self._page_rows = export_page_rows

    # --- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        def build() -> bigquery.Client:
            if self._endpoint:
                return bigquery.Client(
                    project=self._job_project,
                    location=self._location,
                    credentials=self._credentials or AnonymousCredentials(),
                    client_options=ClientOptions(api_endpoint=self._endpoint),
                )
            return bigquery.Client(project=self._job_project, location=self._location, credentials=self._credentials)

        self._client = await asyncio.to_thread(build)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    @property
    def client(self) -> bigquery.Client:
        if self._client is None:
            raise TransientWarehouseError("warehouse is not open")
        return self._client

    async def _call(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except WarehouseError:
            raise
        except Exception as exc:  # noqa: BLE001 - every driver error is translated here
            raise translate_error(exc) from None

    # --- queries -----------------------------------------------------------------------------
    def _job_config(
        self,
        sql: str,
        params: Params | None,
        options: QueryOptions | None,
        *,
        dry_run: bool = False,
    ) -> bigquery.QueryJobConfig:
        params = params or {}
        wanted = parameter_names(sql)
        missing = wanted - params.keys()
        if missing:
            raise TerminalWarehouseError(f"missing query parameters: {', '.join(sorted(missing))}")
        labels = {"managed-by": "convergence"}
        if options and options.org_slug:
            labels["org"] = label_value(options.org_slug)
        if options and options.run_id:
            labels["run_id"] = label_value(options.run_id)
        if options:
            labels.update({label_value(k): label_value(v) for k, v in options.labels.items()})
        config = bigquery.QueryJobConfig(
            query_parameters=[to_query_parameter(n, params[n]) for n in sorted(wanted)],
            labels=labels,
            dry_run=dry_run,
            use_query_cache=False,
        )
        if options and options.org_slug:
            config.maximum_bytes_billed = self._max_bytes
        config.job_timeout_ms = int(self._timeout_for(options) * 1000)
        return config

    def _timeout_for(self, options: QueryOptions | None) -> float:
        return (options.timeout_seconds if options and options.timeout_seconds else None) or self._timeout

    def _job(self, sql: str, config: bigquery.QueryJobConfig, options: QueryOptions | None) -> tuple[Any, Any]:
        """Run one query job to its end (blocking; called on a worker thread): (job, result).
        Its statistics go to ``options.stats`` when given."""
        job = self.client.query(sql, job_config=config, retry=self._retry, job_retry=self._job_retry)
        result = job.result(timeout=self._timeout_for(options) + 30, retry=self._retry)
        if options is not None and options.stats is not None:
            options.stats.add(**job_statistics(job))
        return job, result

    async def _run_query(
        self,
        sql: str,
        params: Params | None,
        options: QueryOptions | None,
    ) -> tuple[list[Row], int]:
        config = self._job_config(sql, params, options)
        self._observe(sql)

        def run() -> tuple[list[Row], int]:
            job, result = self._job(sql, config, options)
            rows = [dict(row.items()) for row in result] if job.statement_type in (None, "SELECT", "SCRIPT") else []
            return rows, int(job.num_dml_affected_rows or 0)

        return await self._call(run)

    async def ping(self) -> None:
        await self._run_query("SELECT 1 AS ok", None, None)

    async def query(self, sql: str, params: Params | None = None, *, options: QueryOptions | None = None) -> list[Row]:
        rows, _ = await self._run_query(sql, params, options)
        return rows

    async def execute(self, sql: str, params: Params | None = None, *, options: QueryOptions | None = None) -> int:
        _, affected = await self._run_query(sql, params, options)
        return affected

    async def export(
        self,
        sql: str,
        params: Params | None = None,
        *,
        fmt: exports.ExportFormat,
        schema: Schema,
        json_columns: Iterable[str] = (),
        directory: Path | None = None,
        options: QueryOptions | None = None,
    ) -> AsyncGenerator[bytes]:
        """The query's result read page by page (``export_page_rows`` rows held at a time) into a
        JSON-lines file, copied to ``fmt`` by the same writer as DuckDB's, then streamed."""
        config = self._job_config(sql, params, options)
        self._observe(sql)
        staged = exports.new_file(directory, ".ndjson")
        path = exports.new_file(directory, exports.SUFFIX[fmt])

        def fetch() -> int:
            job = self.client.query(sql, job_config=config, retry=self._retry, job_retry=self._job_retry)
            result = job.result(page_size=self._page_rows, timeout=self._timeout_for(options) + 30, retry=self._retry)
            if options is not None and options.stats is not None:
                options.stats.add(**job_statistics(job))
            with staged.open("w", encoding="utf-8") as handle:
                return sum(exports.append_ndjson(handle, (dict(r.items()) for r in page)) for page in result.pages)

        try:
            await self._call(fetch)
            await asyncio.to_thread(exports.convert_ndjson, staged, path, fmt, schema, tuple(json_columns))
            exports.remove(staged)
            async for chunk in exports.file_chunks(path):
                yield chunk
        finally:
            exports.remove(staged, path)

    async def check_query(self, sql: str, params: Params | None = None) -> None:
        config = self._job_config(sql, params, None, dry_run=True)
        await self._call(lambda: self.client.query(sql, job_config=config, retry=self._retry))

    async def estimate(
        self, sql: str, params: Params | None = None, *, options: QueryOptions | None = None
    ) -> Estimate:
        """A dry-run job: the bytes the query would process (and be billed for, before rounding)."""
        config = self._job_config(sql, params, options, dry_run=True)
        job = await self._call(lambda: self.client.query(sql, job_config=config, retry=self._retry))
        return Estimate(bytes_processed=int(job.total_bytes_processed or 0))

    async def create_table_as(
        self,
        ref: TableRef,
        sql: str,
        params: Params | None = None,
        *,
        options: QueryOptions | None = None,
        expires_at: datetime,
    ) -> int:
        """``CREATE OR REPLACE TABLE … OPTIONS(expiration_timestamp=…) AS``: BigQuery drops it at
        ``expires_at`` whatever happens to the run. Its row count comes from the table's metadata."""
        stamp = expires_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00")
        create = (
            f"CREATE OR REPLACE TABLE {ref.sql} OPTIONS(expiration_timestamp=TIMESTAMP '{stamp}') "
            f"AS {sql.strip().rstrip(';')}"
        )
        config = self._job_config(create, params, options)
        self._observe(create)

        def run() -> int:
            self._job(create, config, options)
            return int(self.client.get_table(str(ref), retry=self._retry).num_rows or 0)

        return await self._call(run)

    async def replace_rows(
        self,
        destination: TableRef,
        columns: Sequence[str],
        source_query: str,
        *,
        replace_where: str,
        params: Params | None = None,
        options: QueryOptions | None = None,
        source_sql: str | None = None,
        check_sql: str | None = None,
        check: RowsCheck | None = None,
    ) -> ReplaceResult:
        """One MERGE statement (BigQuery's atomic partition overwrite): no rows match ``ON FALSE``,
        so the target rows in the window are deleted and every source row is inserted. ``source_sql``
        runs before it and ``check_sql`` after the commit (a script cannot bind parameters on every
        BigQuery-compatible endpoint, so there is no in-transaction check here: callers read a
        staging snapshot and pre-check instead)."""
        source = await self.query(source_sql, params, options=options) if source_sql else []
        sql = replace_merge_sql(destination, columns, source_query, replace_where)
        config = self._job_config(sql, params, options)
        self._observe(sql)

        def run() -> int:
            job, _ = self._job(sql, config, options)
            stats = job.dml_stats
            if stats is not None and stats.inserted_row_count is not None:
                return int(stats.inserted_row_count)
            return int(job.num_dml_affected_rows or 0)

        inserted = await self._call(run)
        rows = await self.query(check_sql, params, options=options) if check_sql else []
        return ReplaceResult(inserted, rows, source_rows=source)

    # --- per-org principals ------------------------------------------------------------------
    def with_credentials(self, service_account_info: Mapping[str, Any]) -> BigQueryWarehouse:
        """This warehouse as an org's own service account (its key file's fields): same project
        for table names, limits and retries; jobs run in (and are billed to) the account's own
        project. Building the credentials parses the key offline; no token is fetched here."""
        from google.oauth2 import service_account

        try:
            credentials = service_account.Credentials.from_service_account_info(dict(service_account_info))
            job_project = check_identifier("project", str(service_account_info["project_id"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise TerminalWarehouseError(f"unusable service-account credentials ({type(exc).__name__})") from None
        clone = copy.copy(self)
        clone._client = None
        clone._credentials = credentials
        clone._job_project = job_project
        return clone

    async def set_dataset_writer(self, dataset: str, member_email: str, *, granted: bool) -> bool:
        """Add (or remove) a WRITER (roles/bigquery.dataEditor) entry for a service account in the
        dataset's access list: a read-modify-write guarded by the dataset's etag, retried on a
        concurrent change. True if the list changed."""
        dataset_id = self._dataset_id(dataset)
        email = member_email.lower()

        def is_writer(entry: bigquery.AccessEntry) -> bool:
            return (
                entry.entity_type in ("userByEmail", "iamMember")
                and str(entry.entity_id).lower().removeprefix("serviceaccount:") == email
                and entry.role in ("WRITER", "roles/bigquery.dataEditor")
            )

        def update() -> bool:
            for attempt in range(5):
                ds = self.client.get_dataset(dataset_id, retry=self._retry)
                entries = list(ds.access_entries)
                if granted == any(is_writer(e) for e in entries):
                    return False
                if granted:
                    entries.append(bigquery.AccessEntry("WRITER", "userByEmail", email))
                else:
                    entries = [e for e in entries if not is_writer(e)]
                ds.access_entries = entries
                try:
                    self.client.update_dataset(ds, ["access_entries"], retry=self._retry)  # If-Match: etag
                    return True
                except gexc.PreconditionFailed:
                    if attempt == 4:
                        raise
            raise AssertionError("unreachable")  # pragma: no cover

        return await self._call(update)
