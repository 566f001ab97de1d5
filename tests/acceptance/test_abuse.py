"""What a forged header, a flood of made-up keys, a storm of probes or a missing setting can do —
over HTTP, on both backends (each case on a dedicated server: they change limits)."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backends import Backend
from tests.conftest import unique_slug
from tests.kms_fake import KMS_KEY, KmsFake
from tests.server import ADMIN_KEY, REPO, Api, ServerProcess, free_port


def bad_key(n: int) -> str:
    return f"nobody_{n}_api_{n:016d}"


def statements(api: Api) -> float:
    text = api.http.get("/metrics", headers=api.admin).text
    return sum(float(m) for m in re.findall(r"^convergence_warehouse_statements_total\{[^}]*\} (\S+)$", text, re.M))


def access_lines(server: ServerProcess, marker: str) -> list[str]:
    """Access-log lines are written a few milliseconds after the answer: poll briefly."""
    deadline = time.monotonic() + 5
    while True:
        found = [line for line in server.log().splitlines() if marker in line and "httpRequest" in line]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.parametrize("hops", [0, 1])
def test_a_forged_forwarded_for_does_not_dodge_the_per_client_limits(
    backend: Backend, tmp_path: Path, hops: int
) -> None:
    """hops=0 (no proxy): X-Forwarded-For is ignored, the TCP peer is the client. hops=1 (Cloud Run):
    the test plays the proxy and appends the real address; whatever the client wrote left of it is
    ignored."""
    srv = backend.new_server(
        tmp_path / "srv", None, TRUSTED_PROXY_HOPS=str(hops), AUTH_FAILURE_LIMIT="20", ADMIN_RATE_LIMIT="5"
    )
    try:
        api = Api(srv)
        assert api.bootstrap().status_code == 200  # admin call 1
        slug = unique_slug("xff")
        good = api.onboard(slug)  # admin call 2

        def via_proxy(client_wrote: str, real: str) -> dict[str, str]:
            return {"X-Forwarded-For": client_wrote if hops == 0 else f"{client_wrote}, {real}"}

        codes = []
        for n in range(25):
            headers = {"X-API-Key": bad_key(n), "X-Request-ID": f"xff-{n}", **via_proxy(f"10.9.{n}.{n}", "203.0.113.7")}
            codes.append(api.http.get(f"/api/v1/organizations/{slug}", headers=headers).status_code)
        assert codes == [401] * 20 + [429] * 5, codes
        line = access_lines(srv, '"request_id": "xff-24"')[0]
        assert f'"remoteIp": "{"127.0.0.1" if hops == 0 else "203.0.113.7"}"' in line, line

        # A good key from another address is unaffected, even when it forges the throttled address.
        other = {"X-API-Key": good, **via_proxy("203.0.113.7, 127.0.0.1", "198.51.100.9")}
        transport = httpx.HTTPTransport(local_address="127.0.0.2") if hops == 0 else None
        with httpx.Client(base_url=srv.base_url, transport=transport, timeout=30) as elsewhere:
            assert elsewhere.get(f"/api/v1/organizations/{slug}", headers=other).status_code == 200

        # The admin limit (5 a minute), from an address of its own: forged addresses buy no more calls.
        transport = httpx.HTTPTransport(local_address="127.0.0.3") if hops == 0 else None
        with httpx.Client(base_url=srv.base_url, transport=transport, timeout=30) as admin_client:
            admin_codes = [
                admin_client.get(
                    "/api/v1/admin/bootstrap/status", headers={**api.admin, **via_proxy(f"10.8.{n}.1", "203.0.113.8")}
                ).status_code
                for n in range(6)
            ]
        assert admin_codes == [200] * 5 + [429], admin_codes
    finally:
        srv.stop()


def test_a_flood_of_unknown_keys_costs_a_bounded_number_of_lookups(backend: Backend, tmp_path: Path) -> None:
    rate, burst = 20, 20
    srv = backend.new_server(
        tmp_path / "srv",
        None,
        KEY_LOOKUP_RATE=str(rate),
        KEY_LOOKUP_BURST=str(burst),
        SCHEDULER_LOOP_ENABLED="false",
        KEY_TOUCH_INTERVAL_SECONDS="3600",
        UNKNOWN_KEY_CACHE_SECONDS="60",
    )
    try:
        api = Api(srv)
        assert api.bootstrap().status_code == 200
        slug = unique_slug("flood")
        good = {"X-API-Key": api.onboard(slug)}
        url = f"/api/v1/organizations/{slug}"

        def timed() -> float:
            started = time.perf_counter()
            assert api.http.get(url, headers=good).status_code == 200
            return time.perf_counter() - started

        for _ in range(5):
            timed()  # warm: the key is in the cache
        baseline = statistics.median(timed() for _ in range(30))
        before = statements(api)
        started = time.monotonic()
        outcomes: dict[int, int] = {}
        during: list[float] = []
        for n in range(1000):
            response = api.http.get(url, headers={"X-API-Key": bad_key(n)})
            outcomes[response.status_code] = outcomes.get(response.status_code, 0) + 1
            if response.status_code == 503:
                assert (
                    response.json()["error"] == "auth_lookups_throttled" and int(response.headers["Retry-After"]) >= 1
                )
            if n % 20 == 0:
                during.append(timed())
        elapsed = time.monotonic() - started
        lookups = statements(api) - before
        bound = burst + rate * elapsed + 3  # + the metrics scrape itself
        assert set(outcomes) <= {401, 503}, outcomes
        assert lookups <= bound, (
            f"{lookups} warehouse statements for 1000 unknown keys in {elapsed:.1f}s (bound {bound:.0f})"
        )
        # The valid key never needed the warehouse and kept its latency.
        idle = statements(api)
        for _ in range(20):
            timed()
        assert statements(api) - idle <= 1  # only the scrape
        assert statistics.median(during) <= max(3 * baseline, baseline + 0.025), (baseline, statistics.median(during))
        # The same unknown keys again: the negative cache answers those it saw (401, no lookup); only
        # keys that were throttled the first time may be looked up now, within the same budget.
        seen_before = statements(api)
        again_started = time.monotonic()
        for n in range(0, 1000, 10):
            api.http.get(url, headers={"X-API-Key": bad_key(n)})
        again = statements(api) - seen_before
        assert again <= burst + rate * (time.monotonic() - again_started) + 2
        # Once the budget has refilled: ten new unknown keys cost ten lookups, the same ten again none.
        time.sleep(1.5)
        fresh = [bad_key(5000 + n) for n in range(10)]
        mark = statements(api)
        assert [api.http.get(url, headers={"X-API-Key": k}).status_code for k in fresh] == [401] * 10
        first_time = statements(api) - mark
        mark = statements(api)
        assert [api.http.get(url, headers={"X-API-Key": k}).status_code for k in fresh] == [401] * 10
        assert statements(api) - mark <= 1 < first_time - 8, first_time
    finally:
        srv.stop()


def test_readiness_is_answered_from_a_recent_result(backend: Backend, tmp_path: Path) -> None:
    srv = backend.new_server(tmp_path / "srv", None, READY_CACHE_SECONDS="5", SCHEDULER_LOOP_ENABLED="false")
    try:
        api = Api(srv)
        before = statements(api)
        answers = [api.http.get("/health/ready") for _ in range(50)]
        assert all(a.status_code == 200 for a in answers)
        measured = {a.json()["checked_at"] for a in answers}
        assert len(measured) <= 2, measured  # one measurement (two if a 5 s boundary passed)
        assert statements(api) - before <= 2 * 4 + 1
        assert answers[-1].json()["bootstrapped"] is False
        assert api.bootstrap().status_code == 200  # bootstrap forgets the result on this instance
        assert api.http.get("/health/ready").json()["bootstrapped"] is True
    finally:
        srv.stop()


# --- fail closed ----------------------------------------------------------------------------------


def dockerfile_env() -> dict[str, str]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", line)))
    return env


def test_the_container_image_runs_as_production_unless_told_otherwise(tmp_path: Path) -> None:
    env = dockerfile_env()
    assert env["ENVIRONMENT"] == "production"
    assert env["TRUSTED_PROXY_HOPS"] == "1"
    assert "FORWARDED_ALLOW_IPS" not in env
    # The image's command with the image's environment and nothing else: it must refuse to serve.
    run_env = {**env, "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    run_env.update(HOST="127.0.0.1", PORT=str(free_port()), DUCKDB_PATH=str(tmp_path / "w.duckdb"))
    run_env["LOCAL_KMS_KEY_PATH"] = str(tmp_path / "kms.key")
    result = subprocess.run(
        [sys.executable, "-m", "src.app"], cwd=REPO, env=run_env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0, result.stderr
    assert "refusing to start in production" in result.stderr
    for named in ("ADMIN_API_KEY", "KMS_KEY_NAME", "WAREHOUSE"):
        assert named in result.stderr
    assert not (tmp_path / "w.duckdb").exists()


def test_force_recreate_is_refused_outside_development(backend: Backend, tmp_path: Path, kms_fake: KmsFake) -> None:
    if backend.name != "bigquery":
        pytest.skip("staging and production refuse WAREHOUSE=duckdb at start: only BigQuery can be staging")
    srv = backend.new_server(
        tmp_path / "staging",
        None,
        ENVIRONMENT="staging",
        KMS_KEY_NAME=KMS_KEY,
        KMS_API_ENDPOINT=kms_fake.endpoint,
        SERVICE_ACCOUNT_TOKEN_URI="",  # a development-only setting: staging refuses it
    )
    try:
        api = Api(srv)
        assert api.bootstrap().status_code == 200
        slug = unique_slug("keep")
        key = api.onboard(slug)
        for flag in ("force_recreate_dataset", "force_recreate_tables"):
            refused = api.http.post("/api/v1/admin/bootstrap", headers=api.admin, json={flag: True})
            assert refused.status_code == 403, refused.text
            body: dict[str, Any] = refused.json()
            assert body["error"] == "force_recreate_refused"
            assert flag in body["message"] and "staging" in body["message"]
            assert "bq rm -r -d" in body["message"] and "README" in body["message"]
        assert api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": key}).status_code == 200
    finally:
        srv.stop()


def test_force_recreate_still_works_in_development(backend: Backend, tmp_path: Path) -> None:
    srv = backend.new_server(tmp_path / "dev", None)
    try:
        api = Api(srv)
        assert api.bootstrap().status_code == 200
        slug = unique_slug("gone")
        api.onboard(slug)
        again = api.http.post(
            "/api/v1/admin/bootstrap", headers={"X-Admin-Key": ADMIN_KEY}, json={"force_recreate_tables": True}
        )
        assert again.status_code == 200, again.text
        assert "recreated" in again.json()["tables"].values()
        assert api.http.get(f"/api/v1/organizations/{slug}", headers=api.admin).status_code == 404
    finally:
        srv.stop()
