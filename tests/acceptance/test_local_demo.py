"""``./simple_deploy.sh local`` serves the demo AWS export, and the README's AWS curl lines work as
typed: the script runs for real (its venv, the demo data, its local S3 server, the service), the
lines are read from README.md (the ``aws-walkthrough`` blocks) and run by bash; the answers are
compared with what the demo generator says it delivered."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from src.core.demo.aws_cur_export import demo_deliveries, write_delivery
from tests.server import ADMIN_KEY, REPO, free_port

pytestmark = pytest.mark.slow


def _blocks() -> list[str]:
    readme = (REPO / "README.md").read_text()
    found = re.findall(r"<!-- aws-walkthrough[^>]*-->\n```bash\n(.*?)```", readme, re.S)
    assert len(found) == 2, "the README's two aws-walkthrough blocks"
    return found


def _documents(text: str) -> list[dict[str, Any]]:
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        document, at = decoder.raw_decode(text, at)
        found.append(document)
    return found


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("local-demo")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GCP_", "WAREHOUSE", "KMS_", "BIGQUERY_", "AWS_"))},
        "PORT": str(port),
        "S3_PORT": str(free_port()),
        "DUCKDB_PATH": str(tmp / "demo.duckdb"),
        "LOCAL_KMS_KEY_PATH": str(tmp / "kms.key"),
        "ADMIN_API_KEY": ADMIN_KEY,
        "DEMO_DAYS": "1",
        "DEMO_ROWS_PER_DAY": "100",
        "DEMO_AWS_ROWS_PER_DAY": "100",
        "SCHEDULER_LOOP_ENABLED": "false",
    }
    log = (tmp / "deploy.log").open("ab")
    proc = subprocess.Popen(
        ["./simple_deploy.sh", "local"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    api = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    try:
        while True:
            assert proc.poll() is None, (tmp / "deploy.log").read_text()[-3000:]
            try:
                if httpx.get(f"{api}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp / "deploy.log").read_text()[-3000:]
            time.sleep(0.2)
        yield api
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # the script's own process group: the service, then its S3 server
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_readme_aws_lines_work_as_typed(deployed: str, tmp_path: Path) -> None:
    admin = {"X-Admin-Key": ADMIN_KEY}
    assert httpx.post(f"{deployed}/api/v1/admin/bootstrap", headers=admin, json={}, timeout=60).status_code == 200
    body = {"org_slug": "acme", "company_name": "Acme Corp", "admin_email": "finops@acme.example"}
    onboarded = httpx.post(f"{deployed}/api/v1/organizations/onboard", headers=admin, json=body, timeout=60)
    assert onboarded.status_code == 201, onboarded.text
    env = {**os.environ, "API": deployed, "ACME_KEY": onboarded.json()["api_key"]}
    setup, results = _blocks()
    answers = _documents(
        subprocess.run(["bash", "-c", setup], env=env, capture_output=True, text=True, check=True).stdout
    )
    credentials, source, started = answers
    assert credentials["status"] == "ACTIVE" and credentials["credential_type"] == "access_key", credentials
    assert source["billing_periods"] == [datetime.now(UTC).strftime("%Y-%m")], source
    run_id = started["pipeline_logging_id"]
    headers = {"X-API-Key": env["ACME_KEY"]}
    for _ in range(300):
        run = httpx.get(f"{deployed}/api/v1/pipelines/runs/{run_id}", headers=headers).json()
        if run["status"] in ("COMPLETED", "FAILED"):
            break
        time.sleep(0.2)
    assert run["status"] == "COMPLETED", run["error_message"]

    by_day, by_project = _documents(
        subprocess.run(["bash", "-c", results], env=env, capture_output=True, text=True, check=True).stdout
    )
    first, second = demo_deliveries(datetime.now(UTC).date())
    assert run["steps"][0]["result"]["manifests"][0]["execution_id"] == second.execution_id  # the newer one
    want = write_delivery(
        tmp_path, period=second.period, through_day=second.through_day, execution_id=second.execution_id,
        layout="create_new", rows_per_day=100,
    )  # fmt: skip
    got = {d["usage_date"]: (d["row_count"], round(d["net_cost"], 6)) for d in by_day["days"]}
    assert got == {day.isoformat(): (t.rows, float(t.cost)) for (day, _), t in want.totals.items()}
    assert {d["group_name"] for d in by_project["days"] if d["provider"] == "aws"} == {
        "acme-management", "acme-production", "acme-staging"
    }  # fmt: skip
    assert first.execution_id != second.execution_id
