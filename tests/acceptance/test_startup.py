"""Start-up refusals: outside development an unsafe configuration must not serve a single request.

Each case runs ``python -m src.app`` as a subprocess with a configuration that is fine except for
one thing, and expects a non-zero exit within seconds and one clear line on stderr naming the
problem (no traceback), before any data file is created.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import start_server, unique_slug
from tests.server import ADMIN_KEY, REPO, Api, free_port

KMS = "projects/convergence-test/locations/global/keyRings/ring/cryptoKeys/key"


def safe_env(tmp: Path, environment: str) -> dict[str, str]:
    """A configuration with nothing unsafe about it (so a refusal can only come from the one change)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(tmp)),
        "ENVIRONMENT": environment,
        "ADMIN_API_KEY": ADMIN_KEY,
        "KMS_KEY_NAME": KMS,
        "WAREHOUSE": "bigquery",
        "GCP_PROJECT_ID": "convergence-test",
        "BIGQUERY_API_ENDPOINT": "http://127.0.0.1:9",
        "KMS_API_ENDPOINT": "http://127.0.0.1:9",
        "DUCKDB_PATH": str(tmp / "warehouse.duckdb"),
        "LOCAL_KMS_KEY_PATH": str(tmp / "local_kms.key"),
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
    }


def run_app(env: dict[str, str], timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, "-m", "src.app"], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the service started (still running after {timeout}s) instead of refusing") from exc


def assert_refused(tmp: Path, result: subprocess.CompletedProcess[str], *names: str) -> str:
    assert result.returncode != 0, (result.returncode, result.stderr)
    output = result.stderr + result.stdout
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one clear line on stderr, got {len(lines)}:\n{result.stderr}"
    for name in names:
        assert name in lines[0], f"{name!r} not named in: {lines[0]}"
    assert not (tmp / "warehouse.duckdb").exists(), "a data file was created before refusing"
    assert not (tmp / "local_kms.key").exists(), "a key file was created before refusing"
    return lines[0]


UNSAFE: list[tuple[str, dict[str, str | None], tuple[str, ...]]] = [
    ("admin-key-missing", {"ADMIN_API_KEY": None}, ("ADMIN_API_KEY",)),
    ("admin-key-blank", {"ADMIN_API_KEY": " " * 40}, ("ADMIN_API_KEY",)),
    ("admin-key-short", {"ADMIN_API_KEY": "short-key"}, ("ADMIN_API_KEY", "32")),
    ("admin-key-31-chars", {"ADMIN_API_KEY": "k" * 31}, ("ADMIN_API_KEY", "32")),
    ("disable-auth-true", {"DISABLE_AUTH": "true"}, ("DISABLE_AUTH",)),
    ("disable-auth-1", {"DISABLE_AUTH": "1"}, ("DISABLE_AUTH",)),
    ("kms-unset", {"KMS_KEY_NAME": None}, ("KMS_KEY_NAME",)),
    ("kms-blank", {"KMS_KEY_NAME": ""}, ("KMS_KEY_NAME",)),
    ("warehouse-embedded", {"WAREHOUSE": "duckdb"}, ("WAREHOUSE", "duckdb")),
    ("warehouse-default", {"WAREHOUSE": None}, ("WAREHOUSE", "duckdb")),
]


@pytest.mark.parametrize("environment", ["production", "staging"])
@pytest.mark.parametrize(("change", "names"), [(c, n) for _, c, n in UNSAFE], ids=[i for i, _, _ in UNSAFE])
def test_unsafe_configuration_is_refused_at_start(
    tmp_path: Path, environment: str, change: dict[str, str | None], names: tuple[str, ...]
) -> None:
    env = safe_env(tmp_path, environment)
    for key, value in change.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    line = assert_refused(tmp_path, run_app(env), *names)
    assert environment in line


def test_every_problem_is_named_on_the_one_line(tmp_path: Path) -> None:
    env = safe_env(tmp_path, "production")
    env.update({"ADMIN_API_KEY": "short", "DISABLE_AUTH": "true", "KMS_KEY_NAME": "", "WAREHOUSE": "duckdb"})
    assert_refused(tmp_path, run_app(env), "ADMIN_API_KEY", "DISABLE_AUTH", "KMS_KEY_NAME", "WAREHOUSE")


@pytest.mark.parametrize("value", ["prod", "Production"])
def test_unknown_environment_is_refused_with_one_clear_line(tmp_path: Path, value: str) -> None:
    """A typo in ENVIRONMENT must neither fall back to development nor die with a traceback."""
    env = safe_env(tmp_path, value)
    assert_refused(tmp_path, run_app(env), "ENVIRONMENT")


def test_development_with_disable_auth_starts_warns_and_serves_admin_routes(tmp_path: Path) -> None:
    server = start_server(tmp_path / "noauth", None, DISABLE_AUTH="true")
    try:
        http = server.client()
        status = http.get("/api/v1/admin/bootstrap/status")
        assert status.status_code == 200, status.text
        boot = http.post("/api/v1/admin/bootstrap", json={})
        assert boot.status_code == 200, boot.text
        slug = unique_slug("noauth")
        onboard = http.post(
            "/api/v1/organizations/onboard",
            json={"org_slug": slug, "company_name": "No Auth", "admin_email": "ops@noauth.example"},
        )
        assert onboard.status_code == 201, onboard.text
        assert http.get(f"/api/v1/organizations/{slug}").status_code == 200
        # A key that is presented is still checked.
        assert http.get("/api/v1/admin/bootstrap/status", headers={"X-Admin-Key": "wrong"}).status_code == 401
        assert Api(server).http.get("/health/ready").json()["bootstrapped"] is True

        records = [json.loads(line) for line in server.log().splitlines() if line.strip()]
        warnings = [r for r in records if r.get("severity") == "WARNING" and "DISABLE_AUTH" in r.get("message", "")]
        assert warnings, "no WARNING line about DISABLE_AUTH at start-up"
    finally:
        server.stop()


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "uvicorn", "src.app.main:app"],  # the seed document's own command
        ["-m", "uvicorn", "--factory", "src.app.main:create_app"],
    ],
    ids=["seed-uvicorn-app", "uvicorn-factory"],
)
def test_the_documented_uvicorn_commands_serve_health(tmp_path: Path, command: list[str]) -> None:
    """``python3 -m uvicorn src.app.main:app --host 0.0.0.0 --port 8000`` with the seed's variables
    (here on loopback and a free port, with the data files in a temporary folder)."""
    import httpx

    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "GCP_PROJECT_ID": "gac-prod-471220",
        "ADMIN_API_KEY": ADMIN_KEY,
        "DISABLE_AUTH": "true",
        "DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "LOCAL_KMS_KEY_PATH": str(tmp_path / "local_kms.key"),
    }
    proc = subprocess.Popen(
        [sys.executable, *command, "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "no answer from /health in 20 s"
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_importing_the_app_module_builds_nothing() -> None:
    """``import src.app.main`` reads no settings and builds no app (``app`` is built on access)."""
    code = "import src.app.main as m, sys; sys.exit(1 if '_app' in vars(m) else 0)"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ENVIRONMENT": "production"}  # unsafe: would refuse
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
