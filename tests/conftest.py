from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from src.core.engine.duckdb_backend import DuckDBWarehouse
from tests.server import REPO, Api, ServerProcess

PROJECT = "convergence-local"
# The demo export used by acceptance tests: fixed, in the past, small.
DEMO_END = date(2026, 11, 20)
DEMO_DAYS = 6
DEMO_ROWS_PER_DAY = 400

_slugs = itertools.count(1)


def unique_slug(prefix: str = "org") -> str:
    return f"{prefix}_{next(_slugs)}_{id(_slugs) % 1000}"


async def _seed(path: Path, *, include_late: bool) -> None:
    from src.core.demo.seed import seed_demo_billing

    wh = DuckDBWarehouse(path=path, project=PROJECT)
    await wh.start()
    try:
        await seed_demo_billing(
            wh,
            REPO / "configs",
            end_date=DEMO_END,
            days=DEMO_DAYS,
            rows_per_day=DEMO_ROWS_PER_DAY,
            include_late=include_late,
        )
    finally:
        await wh.close()


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB file holding the demo billing export (late corrections included)."""
    path = tmp_path_factory.mktemp("template") / "warehouse.duckdb"
    asyncio.run(_seed(path, include_late=True))
    return path


def start_server(tmp: Path, template: Path | None, **env: str) -> ServerProcess:
    tmp.mkdir(parents=True, exist_ok=True)
    if template is not None:
        shutil.copy(template, tmp / "warehouse.duckdb")
    server = ServerProcess(tmp, env)
    server.start()
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, seeded_template: Path) -> Iterator[ServerProcess]:
    """One shared, bootstrapped service; tests isolate themselves with their own orgs."""
    srv = start_server(tmp_path_factory.mktemp("shared"), seeded_template)
    api = Api(srv)
    assert api.bootstrap().status_code == 200
    yield srv
    srv.stop()


@pytest.fixture
def api(server: ServerProcess) -> Api:
    return Api(server)
