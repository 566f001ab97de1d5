from __future__ import annotations

import itertools
import os
import re
from collections import Counter
from collections.abc import Iterator
from datetime import date

import pytest

from tests.backends import Backend, BigQueryBackend, DuckDBBackend, Seed
from tests.kms_fake import KMS_KEY, KmsFake
from tests.s3_peer import MotoServer
from tests.server import Api, ServerProcess

# The demo export used by acceptance tests: fixed, in the past, small.
DEMO_END = date(2026, 11, 20)
DEMO_DAYS = 6
DEMO_ROWS_PER_DAY = 400
DEMO = Seed(DEMO_END, DEMO_DAYS, DEMO_ROWS_PER_DAY)

# The documented central tables, written out here (not read from the code under test).
CENTRAL_TABLES = [
    "org_profiles",
    "org_api_keys",
    "org_subscriptions",
    "org_usage_quotas",
    "org_cloud_credentials",
    "org_pipeline_configs",
    "org_scheduled_pipeline_runs",
    "org_pipeline_execution_queue",
    "org_meta_pipeline_runs",
    "org_meta_step_logs",
    "org_meta_dq_results",
]

_slugs = itertools.count(1)


def unique_slug(prefix: str = "org") -> str:
    return f"{prefix}_{next(_slugs)}_{os.getpid() % 1000}"


def selected_backends() -> list[str]:
    """BACKENDS=duckdb,bigquery (default both)."""
    return [b.strip() for b in os.environ.get("BACKENDS", "duckdb,bigquery").split(",") if b.strip()]


@pytest.fixture(scope="session")
def duckdb_backend(tmp_path_factory: pytest.TempPathFactory) -> DuckDBBackend:
    return DuckDBBackend(tmp_path_factory.mktemp("templates"))


@pytest.fixture(scope="session")
def bigquery_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryBackend]:
    """The emulator behind the BigQuery-limits proxy (tests/bq_limits_proxy.py): every client of
    the BigQuery half of the suite meets BigQuery's DML concurrency limits; a test may add latency
    or inject errors with ``backend.proxy.configure(...)`` (and must reset what it changed)."""
    from tests.bq_limits_proxy import BigQueryLimitsProxy
    from tests.bqemulator import BigQueryEmulator
    from tests.oauth_fake import OAuthFake

    logs = tmp_path_factory.mktemp("bqemulator")
    emulator = BigQueryEmulator(logs)
    emulator.start()
    proxy = BigQueryLimitsProxy(emulator.endpoint, logs)
    proxy.start()
    oauth = OAuthFake().start()
    yield BigQueryBackend(proxy.endpoint, oauth, proxy=proxy, emulator_endpoint=emulator.endpoint)
    oauth.stop()
    proxy.stop()
    emulator.stop()


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """The S3/IAM/STS peer (moto's server mode, IAM authentication on), once per session; every
    client reaches it through ``AWS_ENDPOINT_URL`` (tests/s3_peer.py)."""
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session", params=selected_backends())
def backend(request: pytest.FixtureRequest) -> Backend:
    fixture: Backend = request.getfixturevalue(f"{request.param}_backend")
    return fixture


@pytest.fixture(scope="session")
def server(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One shared, bootstrapped service per backend; tests isolate themselves with their own orgs."""
    srv = backend.new_server(tmp_path_factory.mktemp(f"shared-{backend.name}"), DEMO)
    assert Api(srv).bootstrap().status_code == 200
    yield srv
    srv.stop()


@pytest.fixture
def api(server: ServerProcess) -> Api:
    return Api(server)


def _on_bigquery(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("backend") == "bigquery":
        return True
    return item.get_closest_marker("bigquery") is not None


# BigQuery cases that start service processes on emulator projects of their own and mostly wait on
# the limits proxy's latency: the rest shard runs them, on an emulator of its own, so that the two
# shards take about as long.
OWN_EMULATOR_FILES = frozenset(
    {"test_scale_out.py", "test_no_process_locks.py", "test_run_control.py", "test_dml_budget.py"}
)


def _shard(item: pytest.Item) -> str:
    return "bigquery" if _on_bigquery(item) and item.path.name not in OWN_EMULATOR_FILES else "rest"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """TEST_SHARD=bigquery keeps most cases that need the BigQuery emulator, TEST_SHARD=rest the
    others (``OWN_EMULATOR_FILES`` included): simple_test.sh runs the two shards side by side."""
    shard = os.environ.get("TEST_SHARD")
    if shard not in {"bigquery", "rest"}:
        return
    keep = [item for item in items if _shard(item) == shard]
    dropped = [item for item in items if _shard(item) != shard]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many cases ran (and how they ended) on each backend."""
    counts: Counter[tuple[str, str]] = Counter()
    for outcome in ("passed", "failed", "skipped", "error", "xfailed"):
        for report in terminalreporter.stats.get(outcome, []):
            if getattr(report, "when", "call") not in ("call", "setup"):
                continue
            if outcome == "passed" and report.when != "call":
                continue
            match = re.search(r"\[(duckdb|bigquery)[\]-]", getattr(report, "nodeid", ""))
            name = match.group(1) if match else "backend-independent"
            counts[(name, outcome)] += 1
    if counts:
        terminalreporter.section("cases per backend")
        for name in ("duckdb", "bigquery", "backend-independent"):
            parts = [
                f"{counts[(name, o)]} {o}"
                for o in ("passed", "failed", "skipped", "error", "xfailed")
                if counts[(name, o)]
            ]
            if parts:
                terminalreporter.write_line(f"{name}: {', '.join(parts)}")


# --- DuckDB-only helpers for tests that need a dedicated server on a file --------------------


@pytest.fixture(scope="session")
def seeded_template(duckdb_backend: DuckDBBackend) -> object:
    """A DuckDB file holding the demo billing export (late corrections included)."""
    return duckdb_backend._template(DEMO)


def start_server(tmp: object, template: object | None, **env: str) -> ServerProcess:
    import shutil
    from pathlib import Path

    path = Path(str(tmp))
    path.mkdir(parents=True, exist_ok=True)
    if template is not None:
        shutil.copy(str(template), path / "warehouse.duckdb")
    srv = ServerProcess(path, env)
    srv.start()
    return srv


@pytest.fixture
def kms_fake() -> Iterator[KmsFake]:
    """A local Cloud KMS holding ``KMS_KEY``."""
    with KmsFake() as fake:
        fake.add_key(KMS_KEY)
        yield fake
