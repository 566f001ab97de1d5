"""Schemathesis against the real service over HTTP, with the admin key and with an org key.

The CLI runs every phase — examples, coverage, fuzzing, and stateful sequences along the OpenAPI
links (onboard -> organization / run / schedule, run -> run, schedule -> its routes) — with every
check (no server errors, answers conform to their declared schema and status codes, invalid input
rejected, valid input accepted, auth enforced, 405 + Allow for undeclared methods), a fixed seed and
a time budget. Operation-level exceptions are in ``tests/fuzz/schemathesis.toml``, each with its
reason.

DuckDB only: the emulator answers each statement ~20x slower, so the same budget would reach a
fraction of the cases; the BigQuery-specific paths it would meet (bounds, pagination, bodies) are
covered on both backends by ``test_api_contract.py``. A dedicated server: the admin run may recreate
the central tables (development allows it) and suspends organizations.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import DuckDBBackend
from tests.conftest import DEMO
from tests.server import ADMIN_KEY, REPO, Api, ServerProcess

CONFIG = REPO / "tests/fuzz/schemathesis.toml"
SEED = 1
MAX_EXAMPLES = 8
SECONDS_PER_RUN = 55  # both runs together stay under two minutes


@pytest.fixture(scope="module")
def fuzz_server(duckdb_backend: DuckDBBackend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = duckdb_backend.new_server(tmp_path_factory.mktemp("fuzz"), DEMO, SCHEDULER_LOOP_ENABLED="false")
    assert Api(server).bootstrap().status_code == 200
    yield server
    server.stop()


def schemathesis(server: ServerProcess, tmp: Path, header: str, config: Path) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).with_name("schemathesis")
    command = [
        str(cli),
        "--config-file",
        str(config),
        "run",
        f"{server.base_url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--max-time",
        str(SECONDS_PER_RUN),
        "--header",
        header,
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=SECONDS_PER_RUN + 120, cwd=tmp)


def assert_clean(result: subprocess.CompletedProcess[str], server: ServerProcess) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"schemathesis found problems:\n{output[-12000:]}\n--- server log ---\n{server.log()[-3000:]}"
    )
    assert "Stateful" in output, "the stateful phase did not run"
    assert "Internal Server Error" not in server.log()


def test_fuzz_with_an_org_key(fuzz_server: ServerProcess, tmp_path: Path) -> None:
    slug = "fuzz_org"
    key = Api(fuzz_server).onboard(slug)
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\n"path.org_slug" = "{slug}"\n\n' + CONFIG.read_text())
    assert_clean(schemathesis(fuzz_server, tmp_path, f"X-API-Key: {key}", config), fuzz_server)


def test_fuzz_with_the_admin_key(fuzz_server: ServerProcess, tmp_path: Path) -> None:
    assert_clean(schemathesis(fuzz_server, tmp_path, f"X-Admin-Key: {ADMIN_KEY}", CONFIG), fuzz_server)
