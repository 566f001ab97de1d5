"""A real service process for acceptance tests: ``python -m src.app`` on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
ADMIN_KEY = "test-admin-key-0123456789abcdef0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """Starts, stops (gracefully or by SIGKILL) and restarts the service on its own data dir."""

    def __init__(self, data_dir: Path, env: Mapping[str, str] | None = None, *, repo: Path = REPO) -> None:
        self.data_dir = data_dir
        self.repo = repo  # the checkout whose ``src`` runs (benchmarks compare commits)
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("GCP_", "WAREHOUSE", "KMS_", "BIGQUERY_"))},
            "ENVIRONMENT": "development",
            "ADMIN_API_KEY": ADMIN_KEY,
            "DUCKDB_PATH": str(data_dir / "warehouse.duckdb"),
            "LOCAL_KMS_KEY_PATH": str(data_dir / "local_kms.key"),
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "DUCKDB_MEMORY_LIMIT": "1GB",
            "STEP_RETRY_BACKOFF_SECONDS": "0.05",
            "WAREHOUSE_RETRY_BASE_SECONDS": "0.05",
            "LOG_LEVEL": "INFO",
            # Abuse limits off by default: many tests fail authentication on purpose from 127.0.0.1.
            "AUTH_FAILURE_LIMIT": "0",
            "ADMIN_RATE_LIMIT": "0",
            "KEY_TOUCH_INTERVAL_SECONDS": "0",
            **(env or {}),
        }
        self.log_path = data_dir / f"server-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = False
        self.base_url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        try:
            self._start(timeout)
        except RuntimeError:
            # The free port was taken between choosing it and binding it: a first start moves on to
            # another (a restart keeps its port: clients already hold the address).
            if self._started or "address already in use" not in self.log():
                raise
            self.port = free_port()
            self.env["PORT"] = str(self.port)
            self.base_url = f"http://127.0.0.1:{self.port}"
            self._start(timeout)

    def _start(self, timeout: float) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "src.app"], cwd=self.repo, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=0.5).status_code == 200:
                    self._started = True
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log()[-3000:]}")

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, **env: str) -> None:
        self.stop()
        self.env.update(env)
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=60.0)


class Api:
    """Thin helpers over the HTTP API, typed exactly as the README's curl lines."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.http = server.client()

    @property
    def admin(self) -> dict[str, str]:
        return {"X-Admin-Key": ADMIN_KEY}

    def bootstrap(self) -> httpx.Response:
        return self.http.post("/api/v1/admin/bootstrap", headers=self.admin, json={})

    def onboard(self, org_slug: str, **extra: Any) -> str:
        body = {
            "org_slug": org_slug,
            "company_name": f"{org_slug} Inc",
            "admin_email": f"ops@{org_slug.replace('_', '-')}.example",
            "subscription_plan": "SCALE",
            **extra,
        }
        response = self.http.post("/api/v1/organizations/onboard", headers=self.admin, json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["api_key"])

    def run(
        self, org_slug: str, key: str, body: dict[str, Any], pipeline: str = "gcp/cost/cost_billing"
    ) -> httpx.Response:
        return self.http.post(f"/api/v1/pipelines/run/{org_slug}/{pipeline}", headers={"X-API-Key": key}, json=body)

    def wait(self, run_id: str, key: str, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            response = self.http.get(f"/api/v1/pipelines/runs/{run_id}", headers={"X-API-Key": key})
            if response.status_code == 503 and "Retry-After" in response.headers:
                time.sleep(0.5)  # the warehouse was briefly unavailable: a client polls again, as told
                continue
            assert response.status_code == 200, response.text
            run: dict[str, Any] = response.json()
            if run["status"] in {"COMPLETED", "FAILED", "CANCELLED"}:
                return run
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} did not finish in {timeout}s")

    def run_and_wait(self, org_slug: str, key: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.run(org_slug, key, body)
        assert response.status_code == 202, response.text
        return self.wait(response.json()["pipeline_logging_id"], key)

    def costs(self, org_slug: str, key: str, start: str, end: str, group_by: str | None = None) -> dict[str, Any]:
        params = {"start_date": start, "end_date": end, **({"group_by": group_by} if group_by else {})}
        response = self.http.get(
            f"/api/v1/organizations/{org_slug}/costs/daily", headers={"X-API-Key": key}, params=params
        )
        assert response.status_code == 200, response.text
        return dict(response.json())
