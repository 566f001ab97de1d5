"""The two warehouse backends the acceptance suite runs on: a DuckDB file, and BigQuery through
the official client against a local emulator. Each test server gets its own data: a copy of a
seeded DuckDB file, or its own project on the emulator."""

from __future__ import annotations

import asyncio
import itertools
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from src.core.demo.billing_export import export_table_name
from src.core.engine.base import Warehouse
from tests.oauth_fake import OAuthFake
from tests.server import REPO, ServerProcess

DUCKDB_PROJECT = "convergence-local"
_projects = itertools.count(1)


@dataclass(frozen=True)
class Seed:
    end_date: date
    days: int
    rows_per_day: int
    include_late: bool = True


async def _seed_with(warehouse: Warehouse, seed: Seed) -> None:
    from src.core.demo.seed import seed_demo_billing

    await warehouse.start()
    try:
        await seed_demo_billing(
            warehouse,
            REPO / "configs",
            end_date=seed.end_date,
            days=seed.days,
            rows_per_day=seed.rows_per_day,
            include_late=seed.include_late,
        )
    finally:
        await warehouse.close()


class Backend(ABC):
    name: str

    @abstractmethod
    def new_server(self, tmp: Path, seed: Seed | None, **env: str) -> ServerProcess:
        """A started server with its own (optionally seeded) data."""

    @abstractmethod
    def seed(self, server: ServerProcess, seed: Seed) -> None:
        """(Re)write the demo export of ``server``'s warehouse (DuckDB: the server must be stopped)."""

    @abstractmethod
    def cost_rows_match_source(self, server: ServerProcess, dataset: str, day: date) -> tuple[list, list, int]:  # type: ignore[type-arg]
        """(source rows missing in the org table, extra rows, distinct run ids) for ``day``."""


def start_busy_server(backend: Backend, tmp: Path, *, days: int, duckdb_rows: int, emulator_rows: int) -> ServerProcess:
    """A bootstrapped server whose days are big enough that runs overlap, crash or time out (the
    emulator is ~20x slower than DuckDB, so it gets fewer rows); short leases for crash recovery."""
    from datetime import date as _date

    rows = duckdb_rows if backend.name == "duckdb" else emulator_rows
    server = backend.new_server(
        tmp,
        Seed(_date(2026, 11, 20), days, rows),
        DUCKDB_THREADS="1",
        RUN_LEASE_SECONDS="3",
        HEARTBEAT_SECONDS="0.5",
    )
    from tests.server import Api

    assert Api(server).bootstrap().status_code == 200
    return server


class DuckDBBackend(Backend):
    name = "duckdb"

    def __init__(self, cache: Path) -> None:
        self._cache = cache
        self._templates: dict[Seed, Path] = {}

    def _template(self, seed: Seed) -> Path:
        if seed not in self._templates:
            path = self._cache / f"template-{len(self._templates)}.duckdb"
            self._write(path, seed)
            self._templates[seed] = path
        return self._templates[seed]

    @staticmethod
    def _write(path: Path, seed: Seed) -> None:
        from src.core.engine.duckdb_backend import DuckDBWarehouse

        asyncio.run(_seed_with(DuckDBWarehouse(path=path, project=DUCKDB_PROJECT), seed))

    def new_server(self, tmp: Path, seed: Seed | None, **env: str) -> ServerProcess:
        tmp.mkdir(parents=True, exist_ok=True)
        if seed is not None:
            shutil.copy(self._template(seed), tmp / "warehouse.duckdb")
        server = ServerProcess(tmp, {"GCP_PROJECT_ID": DUCKDB_PROJECT, **env})
        server.start()
        return server

    def seed(self, server: ServerProcess, seed: Seed) -> None:
        assert server.proc is None, "stop the server first: DuckDB allows one process per file"
        self._write(Path(server.env["DUCKDB_PATH"]), seed)

    def cost_rows_match_source(self, server: ServerProcess, dataset: str, day: date) -> tuple[list, list, int]:  # type: ignore[type-arg]
        assert server.proc is None, "stop the server first"
        con = duckdb.connect()
        con.execute(f"ATTACH '{server.env['DUCKDB_PATH']}' AS w (READ_ONLY)")
        con.execute("SET TimeZone = 'UTC'")
        src = f"w.billing_export.{export_table_name()}"
        dst = f"w.{dataset}.billing_cost_daily"
        cols_src = "sku.id, project.id, usage_start_time, cost, export_time, cost_type, invoice.month"
        cols_dst = "sku_id, project_id, usage_start_time, cost, export_time, cost_type, invoice_month"
        ws, wd = f"CAST(usage_start_time AS DATE) = DATE '{day}'", f"usage_date = DATE '{day}'"
        missing = con.execute(
            f"SELECT {cols_src} FROM {src} WHERE {ws} EXCEPT ALL SELECT {cols_dst} FROM {dst} WHERE {wd}"
        ).fetchall()
        extra = con.execute(
            f"SELECT {cols_dst} FROM {dst} WHERE {wd} EXCEPT ALL SELECT {cols_src} FROM {src} WHERE {ws}"
        ).fetchall()
        (runs,) = con.execute(f"SELECT COUNT(DISTINCT pipeline_logging_id) FROM {dst} WHERE {wd}").fetchone() or (0,)
        return missing, extra, int(runs)


class BigQueryBackend(Backend):
    """Each server gets a project of its own on the shared emulator (``servers_on``: several
    processes on one project)."""

    name = "bigquery"

    def __init__(
        self,
        endpoint: str,
        oauth: OAuthFake | None = None,
        *,
        proxy: Any = None,
        emulator_endpoint: str | None = None,
    ) -> None:
        self.endpoint = endpoint  # what the services use: the limits proxy in front of the emulator
        self.oauth = oauth  # the token endpoint of stored org service-account keys
        self.proxy = proxy
        self.emulator_endpoint = emulator_endpoint or endpoint  # straight to the emulator (test set-up)

    def env(self, project: str) -> dict[str, str]:
        return {
            **({"SERVICE_ACCOUNT_TOKEN_URI": self.oauth.token_uri} if self.oauth else {}),
            "WAREHOUSE": "bigquery",
            "GCP_PROJECT_ID": project,
            "BIGQUERY_API_ENDPOINT": self.endpoint,
            "BIGQUERY_RETRY_DEADLINE_SECONDS": "5",
            "WAREHOUSE_RETRY_BASE_SECONDS": "0.05",
        }

    def _warehouse(self, project: str) -> Warehouse:
        from src.core.engine.bigquery_backend import BigQueryWarehouse

        return BigQueryWarehouse(
            project=project,
            location="US",
            api_endpoint=self.endpoint,
            maximum_bytes_billed=10**12,
            timeout_seconds=120,
            retry_deadline_seconds=5,
        )

    def new_project(self, seed: Seed | None) -> str:
        """A project of its own on the shared emulator (fresh state), with the demo export if asked."""
        project = f"test-proj-{next(_projects)}"
        if seed is not None:
            asyncio.run(_seed_with(self._warehouse(project), seed))
        return project

    def new_server(self, tmp: Path, seed: Seed | None, **env: str) -> ServerProcess:
        tmp.mkdir(parents=True, exist_ok=True)
        settings = {**self.env(self.new_project(seed)), **env}
        if settings.get("ENVIRONMENT", "development") != "development":
            settings.pop("SERVICE_ACCOUNT_TOKEN_URI", None)  # development only: staging refuses it
        server = ServerProcess(tmp, settings)
        server.start()
        return server

    def servers_on(self, project: str, tmp: Path, count: int, **env: str) -> list[ServerProcess]:
        """``count`` started service processes on ONE project: one warehouse, as Cloud Run's instances
        share one. Each has its own port, data dir and ``INSTANCE_ID`` (``<project>-i<n>``); they share
        one local KMS key file, so what one instance encrypts another decrypts (as with Cloud KMS)."""
        import threading

        kms_key = tmp / "local_kms.key"
        servers = []
        for n in range(1, count + 1):
            data = tmp / f"instance-{n}"
            data.mkdir(parents=True, exist_ok=True)
            common = {"INSTANCE_ID": f"{project}-i{n}", "LOCAL_KMS_KEY_PATH": str(kms_key)}
            servers.append(ServerProcess(data, {**self.env(project), **common, **env}))
        servers[0].start()  # the first one writes the KMS key file the others read
        errors: list[BaseException] = []

        def start(server: ServerProcess) -> None:
            try:
                server.start()
            except BaseException as exc:  # reported below, after every thread ended
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(s,)) for s in servers[1:]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            for server in servers:
                server.stop()
            raise errors[0]
        return servers

    def seed(self, server: ServerProcess, seed: Seed) -> None:
        asyncio.run(_seed_with(self._warehouse(server.env["GCP_PROJECT_ID"]), seed))

    def client(self, project: str):  # type: ignore[no-untyped-def]
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.endpoint),
        )

    def cost_rows_match_source(self, server: ServerProcess, dataset: str, day: date) -> tuple[list, list, int]:  # type: ignore[type-arg]
        project = server.env["GCP_PROJECT_ID"]
        client = self.client(project)
        src = f"`{project}.billing_export.{export_table_name()}`"
        dst = f"`{project}.{dataset}.billing_cost_daily`"
        cols_src = "sku.id, project.id, usage_start_time, cost, export_time, cost_type, invoice.month"
        cols_dst = "sku_id, project_id, usage_start_time, cost, export_time, cost_type, invoice_month"
        ws, wd = f"DATE(usage_start_time) = DATE '{day}'", f"usage_date = DATE '{day}'"

        def rows(sql: str) -> list:  # type: ignore[type-arg]
            return [tuple(r.values()) for r in client.query(sql).result()]

        missing = rows(
            f"SELECT {cols_src} FROM {src} WHERE {ws} EXCEPT DISTINCT SELECT {cols_dst} FROM {dst} WHERE {wd}"
        )
        extra = rows(f"SELECT {cols_dst} FROM {dst} WHERE {wd} EXCEPT DISTINCT SELECT {cols_src} FROM {src} WHERE {ws}")
        (runs,) = rows(f"SELECT COUNT(DISTINCT pipeline_logging_id) FROM {dst} WHERE {wd}")[0]
        src_count = rows(f"SELECT COUNT(*) FROM {src} WHERE {ws}")[0][0]
        dst_count = rows(f"SELECT COUNT(*) FROM {dst} WHERE {wd}")[0][0]
        if src_count != dst_count:
            extra.append(("row count", src_count, dst_count))
        return missing, extra, int(runs)
