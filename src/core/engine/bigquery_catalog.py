"""The catalog side of the BigQuery backend: datasets, tables, columns, load jobs, renames, and
the dataset access list (an org account's write grant)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import bigquery

from src.core.engine.base import Params, QueryOptions, Row
from src.core.engine.bigquery_mapping import ddl_type, label_value, table_options_of, to_bigquery_table, to_schema_field
from src.core.engine.export_files import FileSet, LocalFiles, staged_schema
from src.core.engine.schema import Schema, SchemaField, TableOptions
from src.core.engine.sql import TableRef, check_identifier
from src.core.errors import TerminalWarehouseError, WarehouseNotFoundError

T = TypeVar("T")


class BigQueryCatalog:
    project: str
    _location: str
    _timeout: float
    _retry: Any

    @property
    def client(self) -> bigquery.Client:
        raise NotImplementedError

    async def _call(self, fn: Callable[[], T]) -> T:
        raise NotImplementedError

    async def query(self, sql: str, params: Params | None = None, *, options: QueryOptions | None = None) -> list[Row]:
        raise NotImplementedError

    async def execute(self, sql: str, params: Params | None = None, *, options: QueryOptions | None = None) -> int:
        raise NotImplementedError

    def _dataset_id(self, dataset: str) -> str:
        return f"{self.project}.{check_identifier('dataset', dataset)}"

    async def dataset_exists(self, dataset: str) -> bool:
        try:
            await self._call(lambda: self.client.get_dataset(self._dataset_id(dataset), retry=self._retry))
        except WarehouseNotFoundError:
            return False
        return True

    async def create_dataset(
        self, dataset: str, *, labels: Mapping[str, str] | None = None, description: str | None = None
    ) -> bool:
        if await self.dataset_exists(dataset):
            return False
        ds = bigquery.Dataset(self._dataset_id(dataset))
        ds.location = self._location
        ds.labels = {label_value(k): label_value(v) for k, v in (labels or {}).items()}
        ds.description = description
        await self._call(lambda: self.client.create_dataset(ds, exists_ok=True, retry=self._retry))
        return True

    async def delete_dataset(self, dataset: str) -> None:
        await self._call(
            lambda: self.client.delete_dataset(
                self._dataset_id(dataset), delete_contents=True, not_found_ok=True, retry=self._retry
            )
        )

    async def list_tables(self, dataset: str) -> list[str]:
        try:
            tables = await self._call(
                lambda: [t.table_id for t in self.client.list_tables(self._dataset_id(dataset), retry=self._retry)]
            )
        except WarehouseNotFoundError:
            return []
        return sorted(tables)

    async def table_exists(self, ref: TableRef) -> bool:
        try:
            await self._call(lambda: self.client.get_table(str(ref), retry=self._retry))
        except WarehouseNotFoundError:
            return False
        return True

    async def create_table(self, ref: TableRef, schema: Schema, options: TableOptions | None = None) -> bool:
        if await self.table_exists(ref):
            return False
        table = to_bigquery_table(str(ref), schema, options)
        await self._call(lambda: self.client.create_table(table, exists_ok=True, retry=self._retry))
        return True

    async def drop_table(self, ref: TableRef) -> None:
        await self._call(lambda: self.client.delete_table(str(ref), not_found_ok=True, retry=self._retry))

    async def dataset_columns(self, dataset: str) -> dict[str, list[str]]:
        rows = await self.query(
            f"SELECT table_name, column_name FROM `{self._dataset_id(dataset)}`.INFORMATION_SCHEMA.COLUMNS "
            "ORDER BY table_name, ordinal_position"
        )
        columns: dict[str, list[str]] = {}
        for row in rows:
            columns.setdefault(str(row["table_name"]), []).append(str(row["column_name"]))
        return columns

    async def add_columns(self, ref: TableRef, fields: Sequence[SchemaField]) -> None:
        for field in fields:
            if field.mode == "REQUIRED":
                raise TerminalWarehouseError(f"cannot add REQUIRED column {field.name!r} to an existing table")
            await self.execute(f"ALTER TABLE {ref.sql} ADD COLUMN IF NOT EXISTS `{field.name}` {ddl_type(field)}")

    async def load_ndjson(self, ref: TableRef, schema: Schema, path: Path, *, truncate: bool) -> int:
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
            schema=[to_schema_field(f) for f in schema],
            write_disposition=(
                bigquery.WriteDisposition.WRITE_TRUNCATE if truncate else bigquery.WriteDisposition.WRITE_APPEND
            ),
            labels={"managed-by": "convergence"},
        )

        def load() -> int:
            with path.open("rb") as handle:  # no size=: a resumable upload (works on the emulator too)
                job = self.client.load_table_from_file(handle, str(ref), job_config=config)
            job.result(timeout=self._timeout)
            return int(job.output_rows or 0)

        return await self._call(load)

    async def stage_files(
        self,
        ref: TableRef,
        files: FileSet,
        schema: Schema,
        *,
        expires_at: datetime,
        options: QueryOptions | None = None,
    ) -> int | None:
        """A staging table (expiring at ``expires_at``) filled by ONE load job: the files are read
        by a local DuckDB into one Parquet file with the staging table's columns, in its order
        (maps already JSON text), which the job loads. No row passes through Python."""
        staged = staged_schema(schema)
        local = LocalFiles(files, schema, ref, threads=2, memory_limit="1GB")
        folder = files.paths[0].parent if files.paths else Path(".")
        path = folder / f"{ref.table}.parquet"
        table = to_bigquery_table(str(ref), staged, TableOptions())
        table.expires = expires_at
        labels = {"managed-by": "convergence"}
        if options and options.org_slug:
            labels["org"] = label_value(options.org_slug)
        if options and options.run_id:
            labels["run_id"] = label_value(options.run_id)
        table.labels = labels
        await self._call(lambda: self.client.delete_table(str(ref), not_found_ok=True, retry=self._retry))
        await self._call(lambda: self.client.create_table(table, retry=self._retry))
        if not files.paths:
            return 0
        await asyncio.to_thread(local.write_parquet, path)
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            labels=labels,
        )

        def load() -> int:
            try:
                with path.open("rb") as handle:  # no size=: a resumable upload (works on the emulator too)
                    job = self.client.load_table_from_file(handle, str(ref), job_config=config)
                job.result(timeout=self._timeout)
                return int(job.output_rows or 0)
            finally:
                path.unlink(missing_ok=True)

        return await self._call(load)

    async def table_options(self, ref: TableRef) -> TableOptions:
        table = await self._call(lambda: self.client.get_table(str(ref), retry=self._retry))
        return table_options_of(table)

    async def rename_table(self, ref: TableRef, new_name: str) -> None:
        """A copy job then a delete (copies are free and keep partitioning and clustering; the
        emulator does not apply ``ALTER TABLE … RENAME TO``). A crash in between leaves both tables,
        which a caller must tolerate (the copy is complete before the old one goes)."""
        target = TableRef(ref.project, ref.dataset, check_identifier("table", new_name))

        def run() -> None:
            self.client.copy_table(str(ref), str(target), retry=self._retry).result(timeout=self._timeout)
            self.client.delete_table(str(ref), not_found_ok=True, retry=self._retry)

        await self._call(run)

    # --- dataset access --------------------------------------------------------------------
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
