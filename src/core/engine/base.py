"""The warehouse interface: what core code may ask of a backend.

All SQL handed to a backend is BigQuery Standard SQL with ``@name`` parameters; names are
three-part (```project.dataset.table```). Core code branches on ``Capabilities``, never on a
backend's name. Backends raise only ``WarehouseError`` subclasses.
"""

from __future__ import annotations

import asyncio
import logging
import random
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from src.core.engine.exports import ExportFormat
from src.core.engine.schema import Schema, SchemaField, TableOptions
from src.core.engine.sql import TableRef
from src.core.errors import TransientWarehouseError
from src.core.run_types import JobStats

if TYPE_CHECKING:
    from src.core.engine.export_files import FileSet

log = logging.getLogger(__name__)

Row = dict[str, Any]
T = TypeVar("T")


class TypedParam(NamedTuple):
    """A value with an explicit BigQuery type (needed for NULLs and ambiguous values)."""

    type: str  # STRING, INT64, FLOAT64, NUMERIC, BOOL, DATE, TIMESTAMP, JSON, or ARRAY<...>
    value: Any


Params = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Capabilities:
    name: str
    transactions: bool
    partitioning: bool
    clustering: bool
    merge: bool
    dataset_labels: bool
    # One process owns the data: runs left RUNNING when it starts can only be orphans.
    single_process: bool
    # replace_rows can check the written rows before they commit (and roll back): no pre-check needed.
    checks_before_commit: bool
    # Tenant queries can run as an org's own service account (``with_credentials``), which is given
    # write access to the org's dataset (``set_dataset_writer``). Without it: no principals to switch.
    org_credentials: bool
    # The reads and the write of a replace_rows run in one transaction that sees one snapshot of the
    # data (MVCC): a source read inside it needs no copy. Without it, a consistent source is a
    # staging table (create_table_as) that every later read uses.
    snapshot_in_transaction: bool
    # Ingestion-time partitioned tables have the _PARTITIONTIME pseudo-column (BigQuery). Without
    # it, a table that stands for such a table carries a real _PARTITIONTIME column (demo data).
    partition_pseudo_columns: bool


@dataclass(frozen=True, slots=True)
class ReplaceResult:
    inserted: int
    check_rows: list[Row] = field(default_factory=list)
    committed: bool = True
    source_rows: list[Row] = field(default_factory=list)


# (source rows, check rows) -> True if the write may stand.
RowsCheck = Callable[[list[Row], list[Row]], bool]


@dataclass(frozen=True, slots=True)
class Estimate:
    """What a query would read: bytes (a BigQuery dry run) or, where nothing bills bytes, rows."""

    bytes_processed: int | None = None
    rows: int | None = None


@dataclass(frozen=True, slots=True)
class QueryOptions:
    """Per-job settings. ``org_slug`` marks a tenant query (capped by maximum bytes billed)."""

    org_slug: str | None = None
    run_id: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    timeout_seconds: float | None = None
    stats: JobStats | None = None  # the job statistics of these queries are added here (a step's)


class Warehouse(ABC):
    capabilities: Capabilities
    project: str
    # Called with the text of every SQL statement sent (metrics); set by the services container.
    observe_statement: Callable[[str], None] | None = None

    def _observe(self, sql: str) -> None:
        if self.observe_statement is not None:
            self.observe_statement(sql)

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections (called once, from the app's lifespan)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (called once, at shutdown)."""

    def table(self, dataset: str, table: str) -> TableRef:
        return TableRef(self.project, dataset, table)

    # --- queries ------------------------------------------------------------------------------
    @abstractmethod
    async def ping(self) -> None: ...

    @abstractmethod
    async def query(self, sql: str, params: Params | None = None, *, options: QueryOptions | None = None) -> list[Row]:
        """Run a SELECT (or a script ending in one); return its rows as dicts."""

    @abstractmethod
    async def execute(self, sql: str, params: Params | None = None, *, options: QueryOptions | None = None) -> int:
        """Run DML; return the number of affected rows."""

    @abstractmethod
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
        """Atomically delete the destination rows matching ``replace_where`` (a condition on the
        destination's columns with ``{t}.`` before them, e.g. ``{t}.usage_date BETWEEN @start_date
        AND @end_date``) and insert the rows of ``source_query`` that match it too. Readers see the
        old rows or the new ones, never neither.

        ``source_sql`` (e.g. the source's totals) runs first — where
        ``capabilities.snapshot_in_transaction``, inside the write's transaction, so it sees what
        the write reads — and ``check_sql`` after the write; both results are returned. Where
        ``capabilities.checks_before_commit``, the check runs before the commit and a False
        ``check(source_rows, check_rows)`` rolls the write back (``committed=False``)."""

    @abstractmethod
    def export(
        self,
        sql: str,
        params: Params | None = None,
        *,
        fmt: ExportFormat,
        schema: Schema,
        json_columns: Iterable[str] = (),
        directory: Path | None = None,
        options: QueryOptions | None = None,
    ) -> AsyncGenerator[bytes]:
        """The rows of the SELECT ``sql`` as a ``fmt`` file with the columns of ``schema``, in chunks,
        with bounded memory whatever the row count (``engine/exports.py``). The file is staged in
        ``directory`` (the system's temp directory when None) and deleted once streamed."""

    @abstractmethod
    async def check_query(self, sql: str, params: Params | None = None) -> None:
        """Validate a query against the live catalog without reading data (dry run)."""

    @abstractmethod
    async def estimate(
        self, sql: str, params: Params | None = None, *, options: QueryOptions | None = None
    ) -> Estimate:
        """What ``sql`` would read, without running it: bytes (BigQuery dry run) or rows (DuckDB)."""

    @abstractmethod
    async def create_table_as(
        self,
        ref: TableRef,
        sql: str,
        params: Params | None = None,
        *,
        options: QueryOptions | None = None,
        expires_at: datetime,
    ) -> int:
        """A table of ``sql``'s rows (replacing one of that name) that the warehouse drops after
        ``expires_at`` (BigQuery's table expiration; DuckDB: ``drop_expired_tables``); its row count."""

    @abstractmethod
    async def stage_files(
        self,
        ref: TableRef,
        files: FileSet,
        schema: Schema,
        *,
        expires_at: datetime,
        options: QueryOptions | None = None,
    ) -> int | None:
        """Make ``ref`` stand for the rows of local export files (``export_files.relation_sql``
        over ``schema``; maps as JSON text): where the warehouse reads local files itself (DuckDB) a
        view over them (no copy; None: not counted), else a staging table filled by one load job,
        expiring at ``expires_at`` (BigQuery; its row count). Removed with ``drop_staged``."""

    async def drop_staged(self, ref: TableRef) -> None:
        """Remove what ``stage_files`` made."""
        await self.drop_table(ref)

    async def drop_expired_tables(self) -> int:
        """Drop tables whose expiry has passed, where the warehouse does not do it itself."""
        return 0

    @abstractmethod
    async def rename_table(self, ref: TableRef, new_name: str) -> None:
        """Rename a table within its dataset (atomic)."""

    # --- catalog ------------------------------------------------------------------------------
    @abstractmethod
    async def dataset_exists(self, dataset: str) -> bool: ...

    @abstractmethod
    async def create_dataset(
        self, dataset: str, *, labels: Mapping[str, str] | None = None, description: str | None = None
    ) -> bool:
        """Create if missing; True if it was created now."""

    @abstractmethod
    async def delete_dataset(self, dataset: str) -> None:
        """Drop the dataset and everything in it (no error if missing)."""

    @abstractmethod
    async def list_tables(self, dataset: str) -> list[str]: ...

    @abstractmethod
    async def table_exists(self, ref: TableRef) -> bool: ...

    @abstractmethod
    async def create_table(self, ref: TableRef, schema: Schema, options: TableOptions | None = None) -> bool:
        """Create if missing; True if it was created now."""

    @abstractmethod
    async def drop_table(self, ref: TableRef) -> None: ...

    @abstractmethod
    async def dataset_columns(self, dataset: str) -> dict[str, list[str]]:
        """Top-level column names of every table in ``dataset``, in order (one catalog query)."""

    async def table_columns(self, ref: TableRef) -> list[str]:
        """Top-level column names, in order."""
        return (await self.dataset_columns(ref.dataset)).get(ref.table, [])

    @abstractmethod
    async def add_columns(self, ref: TableRef, fields: Sequence[SchemaField]) -> None:
        """Append NULLABLE/REPEATED columns to an existing table (data untouched)."""

    @abstractmethod
    async def load_ndjson(self, ref: TableRef, schema: Schema, path: Path, *, truncate: bool) -> int:
        """Load a newline-delimited JSON file (a load job, not a query); returns rows loaded."""

    @abstractmethod
    async def table_options(self, ref: TableRef) -> TableOptions:
        """Partitioning and clustering as the backend reports them (empty where it has none)."""

    # --- per-org principals (only where ``capabilities.org_credentials``) ---------------------
    def with_credentials(self, service_account_info: Mapping[str, Any]) -> Warehouse:
        """This warehouse acting as the given service account (a key file's fields); not started:
        the caller starts and closes it."""
        raise NotImplementedError(f"{self.capabilities.name} has no per-org credentials")

    async def check_credentials(self, service_account_info: Mapping[str, Any]) -> None:
        """Prove a service account's key works before anything is granted to it: a dry-run query
        as that account (a token is fetched, a job is validated; no data is read, nothing billed)."""
        probe = self.with_credentials(service_account_info)
        await probe.start()
        try:
            await probe.check_query("SELECT 1")
        finally:
            await probe.close()

    async def set_dataset_writer(self, dataset: str, member_email: str, *, granted: bool) -> bool:
        """Grant (or take back) write access on a dataset to a service account; True if changed."""
        raise NotImplementedError(f"{self.capabilities.name} has no dataset access control")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 4
    base_seconds: float = 0.2


async def with_retries(operation: Callable[[], Awaitable[T]], *, policy: RetryPolicy, what: str) -> T:
    """Retry ``operation`` on transient warehouse errors with bounded exponential backoff."""
    attempts, base_seconds = policy.attempts, policy.base_seconds
    for attempt in range(1, attempts + 1):
        try:
            return await operation()
        except TransientWarehouseError as exc:
            if attempt == attempts:
                raise
            delay = base_seconds * (2 ** (attempt - 1)) * (0.5 + random.random())
            log.warning(
                "transient warehouse error, retrying", extra={"what": what, "attempt": attempt, "error": exc.message}
            )
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
