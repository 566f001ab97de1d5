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
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from src.core.blocking import BlockingCalls, default_calls
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

POLL_FIRST_SECONDS = 0.05  # a job's state is polled after this, then twice as long each time
POLL_MAX_SECONDS = 2.0
POLL_CALL_TIMEOUT_SECONDS = 10.0  # one jobs.get / jobs.cancel call
CANCEL_WAIT_SECONDS = 60.0  # how long a cancelled job is awaited (then logged, not awaited further)

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
        calls: BlockingCalls | None = None,
        export_page_rows: int = 10_000,
    ) -> None:
        self.project = check_identifier("project", project)
        self._location = location
        self._endpoint = api_endpoint
        self._max_bytes = maximum_bytes_billed
        self._timeout = timeout_seconds
        # API calls (jobs.insert, jobs.get, …) are retried by the client; a FAILED job is not
        # (``job_retry=None``): the statement's caller decides, knowing whether it is safe to re-run.
        self._retry = bigquery.DEFAULT_RETRY.with_deadline(retry_deadline_seconds)
        self._calls = calls or default_calls()
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

        self._client = await self._calls.run(build)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await self._calls.run(client.close)

    @property
    def client(self) -> bigquery.Client:
        if self._client is None:
            raise TransientWarehouseError("warehouse is not open")
        return self._client

    async def _call(self, fn: Callable[[], T]) -> T:
        """One blocking client call on the Google pool (short: an HTTP round trip or a few)."""
        try:
            return await self._calls.run(fn)
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

    async def _job(self, sql: str, config: bigquery.QueryJobConfig, options: QueryOptions | None) -> Any:
        """Run one query job to its end: insert it, then poll its state between ``asyncio.sleep``s
        (no thread is held while it runs). A cancelled caller (step timeout, run cancel, shutdown)
        cancels the job and waits until BigQuery reports it DONE, so nothing it writes can commit
        after its run has ended. Its statistics go to ``options.stats`` when given."""
        job = await self._call(lambda: self.client.query(sql, job_config=config, retry=self._retry, job_retry=None))
        deadline = time.monotonic() + self._timeout_for(options) + 30
        try:
            await self._until_done(job, deadline)
        except asyncio.CancelledError:
            await asyncio.shield(self._cancel(job))
            raise
        if time.monotonic() > deadline and job.state != "DONE":
            await asyncio.shield(self._cancel(job))
            raise TransientWarehouseError(
                f"query timed out after {self._timeout_for(options):g}s; its job was cancelled"
            )
        if job.error_result:  # raises the job's error as Google's exception, translated by _call
            await self._call(lambda: job.result(retry=self._retry, timeout=30, job_retry=None))
        if options is not None and options.stats is not None:
            options.stats.add(**job_statistics(job))
        return job

    async def _until_done(self, job: Any, deadline: float) -> None:
        delay = POLL_FIRST_SECONDS
        while job.state != "DONE" and time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_MAX_SECONDS)
            await self._call(lambda: job.reload(retry=self._retry, timeout=POLL_CALL_TIMEOUT_SECONDS))

    async def _cancel(self, job: Any) -> None:
        """jobs.cancel, then wait (bounded) until the job is DONE."""
        if job.state == "DONE":
            return
        try:
            await self._call(lambda: job.cancel(retry=self._retry, timeout=POLL_CALL_TIMEOUT_SECONDS))
            await self._until_done(job, time.monotonic() + CANCEL_WAIT_SECONDS)
        except WarehouseError as exc:
            log.warning("could not cancel a BigQuery job", extra={"job_id": job.job_id, "error": exc.message})
        if job.state != "DONE":
            log.warning("a cancelled BigQuery job is still running", extra={"job_id": job.job_id})

    async def _run_query(
        self,
        sql: str,
        params: Params | None,
        options: QueryOptions | None,
    ) -> tuple[list[Row], int]:
        config = self._job_config(sql, params, options)
        self._observe(sql)
        job = await self._job(sql, config, options)
        if job.statement_type not in (None, "SELECT", "SCRIPT"):
            return [], int(job.num_dml_affected_rows or 0)

        def rows() -> list[Row]:
            result = job.result(retry=self._retry, timeout=self._timeout_for(options), job_retry=None)
            return [dict(row.items()) for row in result]

        return await self._call(rows), int(job.num_dml_affected_rows or 0)

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

        try:
            job = await self._job(sql, config, options)  # polled to its end; its statistics recorded

            def fetch() -> int:
                result = job.result(
                    page_size=self._page_rows,
                    timeout=self._timeout_for(options) + 30,
                    retry=self._retry,
                    job_retry=None,
                )
                with staged.open("w", encoding="utf-8") as handle:
                    return sum(exports.append_ndjson(handle, (dict(r.items()) for r in page)) for page in result.pages)

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

        await self._job(create, config, options)
        table = await self._call(lambda: self.client.get_table(str(ref), retry=self._retry))
        return int(table.num_rows or 0)

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

        job = await self._job(sql, config, options)
        stats = job.dml_stats
        if stats is not None and stats.inserted_row_count is not None:
            inserted = int(stats.inserted_row_count)
        else:
            inserted = int(job.num_dml_affected_rows or 0)
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
