"""Adversarial acceptance tests of the admin and organization routes, over real HTTP.

Covers health/readiness, bootstrap (idempotency, status, sync of missing tables and columns),
onboarding dry-run and onboarding (validation, conflicts, races, the key shown once), organization
lookup, authentication and authorization, hostile input, body-size limits, request ids, logs and
the local KMS key file. Most tests share the session server and isolate themselves with unique
slugs; a dedicated server is started only where a test needs its own state or settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CENTRAL_TABLES as CENTRAL_TABLE_LIST
from tests.conftest import start_server, unique_slug
from tests.server import ADMIN_KEY, REPO, Api, ServerProcess

ADMIN = {"X-Admin-Key": ADMIN_KEY}
CENTRAL_TABLES = set(CENTRAL_TABLE_LIST)
PLAN_LIMITS = {
    "STARTER": {"daily_run_limit": 6, "monthly_run_limit": 180, "concurrent_run_limit": 1},
    "PROFESSIONAL": {"daily_run_limit": 25, "monthly_run_limit": 750, "concurrent_run_limit": 2},
    "SCALE": {"daily_run_limit": 100, "monthly_run_limit": 3000, "concurrent_run_limit": 5},
}
ONE_MIB = 1024 * 1024
# Text that must never reach a client: stack traces and raw warehouse-driver errors.
LEAK_MARKERS = ("Traceback", 'File "', "Catalog Error", "Binder Error", "Parser Error", "duckdb")


# ----------------------------------------------------------------------------------------------
# helpers


def org_body(slug: str, **overrides: Any) -> dict[str, Any]:
    return {
        "org_slug": slug,
        "company_name": f"{slug} Inc",
        "admin_email": f"ops@{slug.replace('_', '-')}.example",
        "subscription_plan": "STARTER",
        **overrides,
    }


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """A refusal: exact status, JSON with error/message/request_id, the id echoed, nothing internal."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.headers
    for marker in LEAK_MARKERS:
        assert marker not in response.text, f"{marker!r} leaked to the client: {response.text}"
    body: dict[str, Any] = response.json()
    assert isinstance(body, dict), body
    missing = {"error", "message", "request_id"} - body.keys()
    assert not missing, f"error body lacks {missing}: {body}"
    assert isinstance(body["error"], str), body
    assert body["error"], body
    assert isinstance(body["message"], str), body
    assert body["message"], body
    assert body["request_id"], body
    assert response.headers.get("x-request-id") == body["request_id"], (response.headers, body)
    if code is not None:
        assert body["error"] == code, body
    return body


def org_exists(api: Api, slug: str) -> bool:
    response = api.http.get(f"/api/v1/organizations/{slug}", headers=ADMIN)
    if response.status_code == 404:
        assert_error(response, 404, "org_not_found")
        return False
    assert response.status_code == 200, response.text
    return True


def onboard(api: Api, slug: str, **overrides: Any) -> dict[str, Any]:
    response = api.http.post("/api/v1/organizations/onboard", headers=ADMIN, json=org_body(slug, **overrides))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_in_sync(api: Api) -> None:
    status = api.http.get("/api/v1/admin/bootstrap/status", headers=ADMIN)
    assert status.status_code == 200, status.text
    body = status.json()
    assert body["in_sync"] is True, body
    assert body["missing_tables"] == [], body


def key_material(key: str) -> list[str]:
    """Every form of an org key that must never leave the onboarding response."""
    secret = key[-16:]
    return [key, secret, hashlib.sha256(key.encode()).hexdigest()]


def log_records(server: ServerProcess) -> list[dict[str, Any]]:
    records = []
    for line in server.log().splitlines():
        if line.strip():
            records.append(json.loads(line))
    return records


def wait_for_records(
    server: ServerProcess, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
) -> list[dict[str, Any]]:
    """Access-log lines are written after the response is sent: poll briefly."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in log_records(server) if predicate(r)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def access_record(server: ServerProcess, request_id: str) -> dict[str, Any]:
    found = wait_for_records(server, lambda r: r.get("request_id") == request_id and "httpRequest" in r)
    assert len(found) == 1, f"expected one access-log line for {request_id}, got {found}"
    return found[0]


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A dedicated service on an empty warehouse: nothing bootstrapped."""
    srv = start_server(tmp_path / "fresh", None)
    yield srv
    srv.stop()


# ----------------------------------------------------------------------------------------------
# health and readiness


def test_health_is_public_and_answers_ok(api: Api) -> None:
    response = api.http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers.get("x-request-id")


def test_ready_reports_reachable_warehouse_and_done_bootstrap(api: Api) -> None:
    response = api.http.get("/health/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["warehouse_reachable"] is True
    assert body["bootstrapped"] is True
    assert body["missing_tables"] == []


def test_fresh_server_reports_not_bootstrapped_and_refuses_onboarding(fresh_server: ServerProcess) -> None:
    api = Api(fresh_server)
    ready = api.http.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json()["warehouse_reachable"] is True
    assert ready.json()["bootstrapped"] is False
    assert set(ready.json()["missing_tables"]) == CENTRAL_TABLES

    status = api.http.get("/api/v1/admin/bootstrap/status", headers=ADMIN)
    assert status.status_code == 200, status.text
    assert status.json()["bootstrapped"] is False
    assert status.json()["in_sync"] is False
    assert set(status.json()["missing_tables"]) == CENTRAL_TABLES

    slug = unique_slug("early")
    dry = api.http.post("/api/v1/organizations/dryrun", headers=ADMIN, json=org_body(slug))
    assert_error(dry, 409, "bootstrap_required")
    refused = api.http.post("/api/v1/organizations/onboard", headers=ADMIN, json=org_body(slug))
    assert_error(refused, 409, "bootstrap_required")

    boot = api.bootstrap()
    assert boot.status_code == 200, boot.text
    assert set(boot.json()["tables_created"]) == CENTRAL_TABLES
    assert api.http.get("/health/ready").json()["bootstrapped"] is True
    assert not org_exists(api, slug)
    # The refused attempt left nothing behind: not even the org's dataset.
    created = onboard(api, slug)
    assert created["dataset_created"] is True


def test_fresh_server_answers_org_routes_without_driver_errors(fresh_server: ServerProcess) -> None:
    """Before bootstrap, org lookups and key checks must not echo warehouse-driver text (or 404 a key)."""
    api = Api(fresh_server)
    slug = unique_slug("nob")
    by_admin = api.http.get(f"/api/v1/organizations/{slug}", headers=ADMIN)
    assert by_admin.status_code in {404, 409, 503}, by_admin.text
    assert_error(by_admin, by_admin.status_code)
    assert by_admin.json()["error"] in {"org_not_found", "bootstrap_required", "service_unavailable"}
    by_key = api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": f"{slug}_api_AAAAAAAAAAAAAAAA"})
    assert_error(by_key, 401, "invalid_api_key")


# ----------------------------------------------------------------------------------------------
# bootstrap


def test_second_bootstrap_changes_nothing_and_reports_every_table_existing(api: Api) -> None:
    slug = unique_slug("boot")
    created = onboard(api, slug)
    before = api.http.get(f"/api/v1/organizations/{slug}", headers=ADMIN).json()

    for body in ({}, {"force_recreate_dataset": False, "force_recreate_tables": False}):
        again = api.http.post("/api/v1/admin/bootstrap", headers=ADMIN, json=body)
        assert again.status_code == 200, again.text
        result = again.json()
        assert result["dataset_created"] is False
        assert result["tables"] == dict.fromkeys(CENTRAL_TABLES, "exists")
        assert result["tables_created"] == []
        assert sorted(result["tables_existing"]) == sorted(CENTRAL_TABLES)
        assert len(result["tables_existing"]) == 11
        assert result["columns_added"] == {}

    after = api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": created["api_key"]})
    assert after.status_code == 200, after.text
    assert after.json() == before


def test_bootstrap_without_body_is_a_plain_bootstrap(api: Api) -> None:
    response = api.http.post("/api/v1/admin/bootstrap", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["tables_created"] == []


def test_bootstrap_status_is_in_sync_with_11_tables(api: Api) -> None:
    response = api.http.get("/api/v1/admin/bootstrap/status", headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["expected_tables"]) == CENTRAL_TABLES
    assert len(body["expected_tables"]) == 11
    assert body["dataset_exists"] is True
    assert body["bootstrapped"] is True
    assert body["in_sync"] is True
    assert body["missing_tables"] == []
    assert body["missing_columns"] == {}


def test_bootstrap_rejects_unknown_fields_and_non_json_bodies(api: Api) -> None:
    # Harmless on the shared server even if accepted: none of these can ask for a recreate.
    assert_error(api.http.post("/api/v1/admin/bootstrap", headers=ADMIN, json={"force": True}), 422, "validation_error")
    assert_error(api.http.post("/api/v1/admin/bootstrap", headers=ADMIN, json=[]), 422, "validation_error")
    broken = api.http.post(
        "/api/v1/admin/bootstrap", headers={**ADMIN, "content-type": "application/json"}, content=b"{"
    )
    assert_error(broken, 400, "invalid_json")
    assert_in_sync(api)


def test_bootstrap_force_flags_must_be_real_booleans(tmp_path: Path) -> None:
    """A destructive flag must not be switched on by a string or a number (lax coercion)."""
    server = start_server(tmp_path / "flags", None)
    try:
        api = Api(server)
        assert api.bootstrap().status_code == 200
        slug = unique_slug("flag")
        onboard(api, slug)
        outcomes: dict[str, int] = {}
        for body in (
            {"force_recreate_dataset": "yes"},
            {"force_recreate_dataset": 1},
            {"force_recreate_tables": "true"},
            {"force_recreate_tables": "on"},
            {"force_recreate_tables": None},
        ):
            response = api.http.post("/api/v1/admin/bootstrap", headers=ADMIN, json=body)
            outcomes[json.dumps(body)] = response.status_code
        survived = org_exists(api, slug)
        assert outcomes == dict.fromkeys(outcomes, 422), f"non-boolean force flags were accepted: {outcomes}"
        assert survived, "a non-boolean force flag wiped the central tables"
    finally:
        server.stop()


def test_status_lists_a_missing_column_and_sync_adds_it_without_touching_data(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    server = start_server(tmp_path / "sync", None, CONFIGS_DIR=str(configs))
    try:
        api = Api(server)
        assert api.bootstrap().status_code == 200
        slug = unique_slug("sync")
        created = onboard(api, slug, company_name="Keep Me Ltd", subscription_plan="PROFESSIONAL")
        key = created["api_key"]
        before = api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": key}).json()
        server.stop()

        schema_file = configs / "setup/bootstrap/schemas/org_profiles.json"
        schema = json.loads(schema_file.read_text())
        schema.append({"name": "industry", "type": "STRING", "mode": "NULLABLE", "description": "Sector."})
        schema_file.write_text(json.dumps(schema, indent=2))
        server.restart()

        status = api.http.get("/api/v1/admin/bootstrap/status", headers=ADMIN)
        assert status.status_code == 200, status.text
        assert status.json()["missing_columns"] == {"org_profiles": ["industry"]}
        assert status.json()["missing_tables"] == []
        assert status.json()["in_sync"] is False

        plain = api.bootstrap()
        assert plain.status_code == 200, plain.text
        assert plain.json()["tables_created"] == []

        sync = api.http.post("/api/v1/admin/bootstrap/sync", headers=ADMIN)
        assert sync.status_code == 200, sync.text
        assert sync.json()["columns_added"] == {"org_profiles": ["industry"]}
        assert sync.json()["tables_created"] == []

        status = api.http.get("/api/v1/admin/bootstrap/status", headers=ADMIN).json()
        assert status["in_sync"] is True, status
        assert status["missing_columns"] == {}

        after = api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": key})
        assert after.status_code == 200, after.text
        assert after.json() == before

        again = api.http.post("/api/v1/admin/bootstrap/sync", headers=ADMIN)
        assert again.status_code == 200, again.text
        assert again.json()["columns_added"] == {}
        assert again.json()["tables_created"] == []
    finally:
        server.stop()


def test_sync_creates_a_missing_table(tmp_path: Path) -> None:
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    server = start_server(tmp_path / "synct", None, CONFIGS_DIR=str(configs))
    try:
        api = Api(server)
        assert api.bootstrap().status_code == 200
        slug = unique_slug("synct")
        key = onboard(api, slug)["api_key"]
        server.stop()

        config_file = configs / "setup/bootstrap/config.yml"
        config_file.write_text(
            config_file.read_text() + "  org_audit_notes:\n    description: Added by a later release.\n"
        )
        (configs / "setup/bootstrap/schemas/org_audit_notes.json").write_text(
            json.dumps([{"name": "org_slug", "type": "STRING", "mode": "REQUIRED", "description": "Org."}])
        )
        server.restart()

        status = api.http.get("/api/v1/admin/bootstrap/status", headers=ADMIN).json()
        assert status["missing_tables"] == ["org_audit_notes"], status
        assert api.http.get("/health/ready").json()["bootstrapped"] is False

        sync = api.http.post("/api/v1/admin/bootstrap/sync", headers=ADMIN)
        assert sync.status_code == 200, sync.text
        assert sync.json()["tables_created"] == ["org_audit_notes"]
        assert api.http.get("/api/v1/admin/bootstrap/status", headers=ADMIN).json()["in_sync"] is True
        assert api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": key}).status_code == 200
    finally:
        server.stop()


# ----------------------------------------------------------------------------------------------
# auth on admin routes

ADMIN_ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/api/v1/admin/bootstrap", {}),
    ("GET", "/api/v1/admin/bootstrap/status", None),
    ("POST", "/api/v1/admin/bootstrap/sync", None),
    ("POST", "/api/v1/organizations/dryrun", "ORG"),
    ("POST", "/api/v1/organizations/onboard", "ORG"),
]


@pytest.fixture(scope="module")
def org_key(server: ServerProcess) -> tuple[str, str]:
    """One onboarded org of the shared server: (slug, key)."""
    slug = unique_slug("keyed")
    return slug, onboard(Api(server), slug)["api_key"]


@pytest.mark.parametrize(("method", "path", "payload"), ADMIN_ROUTES)
def test_admin_routes_refuse_anything_but_the_admin_key(
    api: Api, org_key: tuple[str, str], method: str, path: str, payload: Any
) -> None:
    slug = unique_slug("intruder")
    body = org_body(slug) if payload == "ORG" else payload
    kwargs: dict[str, Any] = {} if body is None else {"json": body}

    assert_error(api.http.request(method, path, **kwargs), 401, "missing_credentials")
    wrong = {"X-Admin-Key": ADMIN_KEY[:-1] + "X"}
    assert_error(api.http.request(method, path, headers=wrong, **kwargs), 401, "invalid_admin_key")
    assert_error(api.http.request(method, path, headers={"X-Admin-Key": ""}, **kwargs), 401)
    as_org = {"X-API-Key": org_key[1]}
    assert_error(api.http.request(method, path, headers=as_org, **kwargs), 403, "admin_required")
    # The org key sent where the admin key goes is simply a wrong admin key.
    assert_error(api.http.request(method, path, headers={"X-Admin-Key": org_key[1]}, **kwargs), 401)
    assert not org_exists(api, slug)


# ----------------------------------------------------------------------------------------------
# dry-run


def test_dryrun_checks_everything_and_creates_nothing(api: Api) -> None:
    slug = unique_slug("dry")
    dry = api.http.post("/api/v1/organizations/dryrun", headers=ADMIN, json=org_body(slug))
    assert dry.status_code == 200, dry.text
    assert dry.json()["valid"] is True
    checks = {c["check"]: c["passed"] for c in dry.json()["checks"]}
    assert checks["subscription_plan"] is True
    assert checks["bootstrap_done"] is True
    assert checks["org_slug_available"] is True
    assert "api_key" not in dry.json()

    assert not org_exists(api, slug)
    again = api.http.post("/api/v1/organizations/dryrun", headers=ADMIN, json=org_body(slug))
    assert again.status_code == 200, again.text
    created = onboard(api, slug)
    assert created["dataset_created"] is True  # the dry-run did not even create the dataset

    exists = api.http.post("/api/v1/organizations/dryrun", headers=ADMIN, json=org_body(slug))
    body = assert_error(exists, 409, "org_exists")
    assert created["api_key"] not in exists.text
    failed = [c["check"] for c in body.get("checks", []) if not c["passed"]]
    assert failed == ["org_slug_available"], body


def test_dryrun_refuses_unknown_plan_and_accepts_slug_boundaries(api: Api) -> None:
    gold = api.http.post(
        "/api/v1/organizations/dryrun", headers=ADMIN, json=org_body(unique_slug("dp"), subscription_plan="GOLD")
    )
    body = assert_error(gold, 422, "invalid_plan")
    assert "STARTER" in body["message"]
    for slug in ("q9z", unique_slug("long").ljust(50, "x")):
        assert len(slug) in {3, 50}
        ok = api.http.post("/api/v1/organizations/dryrun", headers=ADMIN, json=org_body(slug))
        assert ok.status_code == 200, (slug, ok.text)
        assert ok.json()["valid"] is True
    for plan in ("STARTER", "PROFESSIONAL", "SCALE"):
        ok = api.http.post(
            "/api/v1/organizations/dryrun", headers=ADMIN, json=org_body(unique_slug("dp"), subscription_plan=plan)
        )
        assert ok.status_code == 200, (plan, ok.text)


# ----------------------------------------------------------------------------------------------
# onboarding and the key shown once


@pytest.mark.parametrize("plan", ["STARTER", "PROFESSIONAL", "SCALE"])
def test_onboard_returns_the_key_once_with_dataset_and_plan(api: Api, plan: str) -> None:
    slug = unique_slug("onb")
    response = api.http.post(
        "/api/v1/organizations/onboard", headers=ADMIN, json=org_body(slug, subscription_plan=plan)
    )
    assert response.status_code == 201, response.text
    body = response.json()
    key = body["api_key"]
    assert re.fullmatch(rf"{slug}_api_[A-Za-z0-9]{{16}}", key), key
    assert body["org_slug"] == slug
    assert body["dataset_id"] == f"{slug}_local"
    assert body["dataset_created"] is True
    assert body["subscription_plan"] == plan
    assert body["limits"] == PLAN_LIMITS[plan]

    # The key works, and no other response ever shows it again.
    own = {"X-API-Key": key}
    responses = [
        api.http.get(f"/api/v1/organizations/{slug}", headers=own),
        api.http.get(f"/api/v1/organizations/{slug}", headers=ADMIN),
        api.http.get("/api/v1/pipelines/runs", headers=own),
        api.http.get("/api/v1/pipelines/runs", headers=ADMIN, params={"org_slug": slug}),
        api.http.get("/api/v1/admin/bootstrap/status", headers=ADMIN),
        api.http.post("/api/v1/organizations/dryrun", headers=ADMIN, json=org_body(slug)),
        api.http.post("/api/v1/organizations/onboard", headers=ADMIN, json=org_body(slug)),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 409, 409]
    for r in responses:
        for material in key_material(key):
            assert material not in r.text, f"{r.request.method} {r.request.url.path} shows key material"


def test_onboard_response_with_the_key_is_not_cacheable(api: Api) -> None:
    """The one response that carries a secret must tell caches and proxies not to keep it."""
    response = api.http.post("/api/v1/organizations/onboard", headers=ADMIN, json=org_body(unique_slug("nocache")))
    assert response.status_code == 201, response.text
    assert "no-store" in response.headers.get("cache-control", ""), dict(response.headers)


def test_two_onboardings_get_different_keys(api: Api) -> None:
    first = onboard(api, unique_slug("k1"))["api_key"]
    second = onboard(api, unique_slug("k2"))["api_key"]
    assert first[-16:] != second[-16:]


def test_second_onboard_is_refused_and_changes_nothing(api: Api) -> None:
    slug = unique_slug("twice")
    first = onboard(api, slug, company_name="First Name Ltd", subscription_plan="SCALE")
    key = first["api_key"]
    before = api.http.get(f"/api/v1/organizations/{slug}", headers=ADMIN).json()

    second = api.http.post(
        "/api/v1/organizations/onboard",
        headers=ADMIN,
        json=org_body(
            slug, company_name="Hijacked Ltd", admin_email="evil@attacker.example", subscription_plan="STARTER"
        ),
    )
    body = assert_error(second, 409, "org_exists")
    assert "api_key" not in body

    after = api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": key})
    assert after.status_code == 200, after.text
    assert after.json() == before
    assert after.json()["company_name"] == "First Name Ltd"
    assert after.json()["subscription_plan"] == "SCALE"
    assert after.json()["limits"] == PLAN_LIMITS["SCALE"]


def race_onboarding(server: ServerProcess, slug: str, contenders: int = 2) -> list[httpx.Response]:
    """``contenders`` threads onboard ``slug`` at the same instant; their responses."""
    barrier = threading.Barrier(contenders)
    responses: list[httpx.Response] = []
    lock = threading.Lock()

    def attempt() -> None:
        with server.client() as client:
            barrier.wait()
            response = client.post("/api/v1/organizations/onboard", headers=ADMIN, json=org_body(slug))
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=attempt) for _ in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return responses


def test_concurrent_onboardings_of_one_slug_exactly_one_wins(api: Api) -> None:
    outcomes: dict[str, list[int]] = {}
    winners: dict[str, list[str]] = {}
    for _ in range(3):
        slug = unique_slug("race")
        responses = race_onboarding(api.server, slug)
        outcomes[slug] = sorted(r.status_code for r in responses)
        winners[slug] = [r.json()["api_key"] for r in responses if r.status_code == 201]
        for r in responses:
            if r.status_code == 409:
                assert_error(r, 409, "org_exists")
    assert all(s == [201, 409] for s in outcomes.values()), f"concurrent onboarding outcomes: {outcomes}"
    for slug, keys in winners.items():
        assert len(keys) == 1, f"{slug}: {len(keys)} keys issued"
        assert api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": keys[0]}).status_code == 200


def test_company_name_is_stored_literally(api: Api) -> None:
    names = [
        "Robert'); DROP TABLE organizations.org_profiles;--",
        'Société Générale — 株式会社 "Ñandú" 🚀',
        "  Padded Name  ",
    ]
    for name in names:
        slug = unique_slug("lit")
        onboard(api, slug, company_name=name)
        got = api.http.get(f"/api/v1/organizations/{slug}", headers=ADMIN)
        assert got.status_code == 200, got.text
        assert got.json()["company_name"] == name.strip()
    assert_in_sync(api)


def test_onboard_refuses_a_billing_table_that_is_not_an_export(api: Api) -> None:
    slug = unique_slug("bill")
    project = api.server.env.get("GCP_PROJECT_ID", "convergence-local")
    missing = api.http.post(
        "/api/v1/organizations/onboard",
        headers=ADMIN,
        json=org_body(slug, billing_export_table=f"{project}.nowhere.gcp_billing_export_v1_0000"),
    )
    assert_error(missing, 422, "billing_table_not_found")
    assert not org_exists(api, slug)
    wrong_shape = api.http.post(
        "/api/v1/organizations/onboard",
        headers=ADMIN,
        json=org_body(slug, billing_export_table=f"{project}.organizations.org_api_keys"),
    )
    # The refusal names the problem without echoing the warehouse driver's error text.
    assert_error(wrong_shape, 422, "billing_table_invalid")
    assert not org_exists(api, slug)


# ----------------------------------------------------------------------------------------------
# organization lookup


def test_get_org_shows_profile_plan_limits_and_no_key_material(api: Api) -> None:
    slug = unique_slug("look")
    key = onboard(api, slug, company_name="Look Co", admin_email="admin@look.example", subscription_plan="SCALE")[
        "api_key"
    ]
    for headers in ({"X-API-Key": key}, ADMIN):
        response = api.http.get(f"/api/v1/organizations/{slug}", headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["org_slug"] == slug
        assert body["company_name"] == "Look Co"
        assert body["admin_email"] == "admin@look.example"
        assert body["status"] == "ACTIVE"
        assert body["subscription_plan"] == "SCALE"
        assert body["org_dataset"] == f"{slug}_local"
        assert body["limits"] == PLAN_LIMITS["SCALE"]
        assert body["created_at"]
        for field in body:
            assert not re.search(r"key|hash|encrypt|secret|cipher", field, re.IGNORECASE), field
        for material in key_material(key):
            assert material not in response.text


def test_get_org_auth_refusals(api: Api, org_key: tuple[str, str]) -> None:
    slug, key = org_key
    other_slug = unique_slug("other")
    other_key = onboard(api, other_slug)["api_key"]
    path = f"/api/v1/organizations/{slug}"

    assert_error(api.http.get(path), 401, "missing_credentials")
    for bad in ("garbage", "x' OR '1'='1", f"{slug}_api_short", f"{slug}_api_{'A' * 17}", ADMIN_KEY, key + " extra"):
        assert_error(api.http.get(path, headers={"X-API-Key": bad}), 401, "invalid_api_key")
    forged = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert_error(api.http.get(path, headers={"X-API-Key": forged}), 401, "invalid_api_key")
    unknown = f"{unique_slug('ghost')}_api_{'Z' * 16}"
    assert_error(api.http.get(path, headers={"X-API-Key": unknown}), 401, "invalid_api_key")
    # A wrong admin key is refused even when a valid org key rides along.
    assert_error(api.http.get(path, headers={"X-Admin-Key": "nope", "X-API-Key": key}), 401, "invalid_admin_key")

    assert_error(api.http.get(path, headers={"X-API-Key": other_key}), 403, "org_mismatch")
    assert_error(api.http.get(f"/api/v1/organizations/{other_slug}", headers={"X-API-Key": key}), 403, "org_mismatch")
    # Another org's path that does not exist: still 403 for an org key (no enumeration), 404 for the admin.
    ghost = unique_slug("ghost")
    assert_error(api.http.get(f"/api/v1/organizations/{ghost}", headers={"X-API-Key": key}), 403, "org_mismatch")
    assert_error(api.http.get(f"/api/v1/organizations/{ghost}", headers=ADMIN), 404, "org_not_found")

    assert api.http.get(path, headers={"X-API-Key": key}).status_code == 200
    assert api.http.get(path, headers=ADMIN).status_code == 200


def test_get_org_with_invalid_path_slug_is_422(api: Api) -> None:
    for bad in ("ABC", "ab", "a" * 51, "my-org", "a'%3B DROP TABLE x%3B--"):
        assert_error(api.http.get(f"/api/v1/organizations/{bad}", headers=ADMIN), 422, "validation_error")


# ----------------------------------------------------------------------------------------------
# hostile input

BAD_SLUGS = [
    "ABC",
    "Acme_corp",
    "ab",
    "a" * 51,
    "my-org",
    "a'; DROP TABLE x;--",
    "org; DROP TABLE organizations.org_profiles",
    "",
    "org slug",
    "ørg_name",
    "../../etc",
    "abc\u0000def",
]


@pytest.mark.parametrize("route", ["dryrun", "onboard"])
@pytest.mark.parametrize("slug", BAD_SLUGS)
def test_bad_slugs_are_refused(api: Api, route: str, slug: str) -> None:
    response = api.http.post(f"/api/v1/organizations/{route}", headers=ADMIN, json=org_body(slug))
    body = assert_error(response, 422, "validation_error")
    assert body["message"].startswith("org_slug"), body
    assert_in_sync(api)


BAD_EMAILS = [
    "not-an-email",
    "a@b",
    "@example.com",
    "ops@@example.com",
    "ops example@example.com",
    "ops@example.com\r\nBcc: victim@example.com",
    "",
    f"{'x' * 250}@example.com",
]


@pytest.mark.parametrize("email", BAD_EMAILS)
def test_bad_emails_are_refused_and_nothing_is_written(api: Api, email: str) -> None:
    slug = unique_slug("mail")
    for route in ("dryrun", "onboard"):
        response = api.http.post(
            f"/api/v1/organizations/{route}", headers=ADMIN, json=org_body(slug, admin_email=email)
        )
        body = assert_error(response, 422, "validation_error")
        assert body["message"].startswith("admin_email"), body
    assert not org_exists(api, slug)


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "Evil\x00Corp", "Line\nBreak", "Tab\tCo"])
def test_bad_company_names_are_refused(api: Api, name: str) -> None:
    slug = unique_slug("name")
    response = api.http.post("/api/v1/organizations/onboard", headers=ADMIN, json=org_body(slug, company_name=name))
    body = assert_error(response, 422, "validation_error")
    assert body["message"].startswith("company_name"), body
    assert not org_exists(api, slug)


@pytest.mark.parametrize(
    ("plan", "code"),
    [("GOLD", "invalid_plan"), ("ENTERPRISE", "invalid_plan"), ("", "validation_error"), (None, "validation_error")],
)
def test_unknown_plans_are_refused(api: Api, plan: Any, code: str) -> None:
    slug = unique_slug("plan")
    for route in ("dryrun", "onboard"):
        response = api.http.post(
            f"/api/v1/organizations/{route}", headers=ADMIN, json=org_body(slug, subscription_plan=plan)
        )
        assert_error(response, 422, code)
    assert not org_exists(api, slug)


@pytest.mark.parametrize(
    "overrides",
    [
        {"org_slug": 12345},
        {"org_slug": None},
        {"org_slug": ["abc"]},
        {"company_name": True},
        {"company_name": 42},
        {"company_name": ["x"]},
        {"admin_email": {"$ne": None}},
        {"subscription_plan": 3},
        {"api_key": "chosen_by_client_api_AAAAAAAAAAAAAAAA"},
        {"is_admin": True},
        {"status": "SUSPENDED"},
        {"dataset_id": "other_org_local"},
    ],
    ids=lambda o: "-".join(f"{k}={v!r}" for k, v in o.items()),
)
def test_wrong_types_and_unknown_fields_are_refused(api: Api, overrides: dict[str, Any]) -> None:
    slug = unique_slug("typ")
    body = org_body(slug)
    body.update(overrides)
    for route in ("dryrun", "onboard"):
        assert_error(api.http.post(f"/api/v1/organizations/{route}", headers=ADMIN, json=body), 422, "validation_error")
    assert not org_exists(api, slug)


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b'{"org_slug": "malformed_1", "company_name": ', 400, "invalid_json"),
        (b'{"org_slug": "malformed_2",}', 400, "invalid_json"),
        (b"{'org_slug': 'malformed_3'}", 400, "invalid_json"),
        (b"\xff\xfe\x00garbage", 400, "invalid_json"),
        (b"", 422, "validation_error"),
        (b"[]", 422, "validation_error"),
        (b'"just a string"', 422, "validation_error"),
        (b"null", 422, "validation_error"),
        (b"[" * 50_000 + b"]" * 50_000, 400, None),
    ],
    ids=["truncated", "trailing-comma", "single-quotes", "binary", "empty", "array", "string", "null", "deep"],
)
def test_malformed_json_is_a_clean_4xx(api: Api, raw: bytes, status: int, code: str | None) -> None:
    headers = {**ADMIN, "content-type": "application/json"}
    for route in ("dryrun", "onboard"):
        assert_error(api.http.post(f"/api/v1/organizations/{route}", headers=headers, content=raw), status, code)
    for n in (1, 2, 3):
        assert not org_exists(api, f"malformed_{n}")


def test_malformed_json_without_credentials_is_401_not_400(api: Api) -> None:
    response = api.http.post(
        "/api/v1/organizations/onboard", headers={"content-type": "application/json"}, content=b"{not json"
    )
    assert_error(response, 401, "missing_credentials")
    response = api.http.post(
        "/api/v1/organizations/onboard",
        headers={"content-type": "application/json", "X-Admin-Key": "wrong"},
        content=b"{not json",
    )
    assert_error(response, 401, "invalid_admin_key")


def test_unknown_route_and_method_are_json_errors(api: Api) -> None:
    assert_error(api.http.get("/api/v1/nothing-here", headers=ADMIN), 404, "not_found")
    assert_error(api.http.delete("/api/v1/admin/bootstrap", headers=ADMIN), 405, "method_not_allowed")
    assert_error(api.http.put("/api/v1/organizations/onboard", headers=ADMIN, json={}), 405, "method_not_allowed")


# ----------------------------------------------------------------------------------------------
# body size


def padded(body: dict[str, Any], size: int) -> bytes:
    """A valid JSON document of exactly ``size`` bytes (trailing whitespace is legal JSON)."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def chunked(data: bytes, chunk: int = 4096) -> Iterator[bytes]:
    for i in range(0, len(data), chunk):
        yield data[i : i + chunk]


def test_bodies_over_one_mib_are_refused_with_413(api: Api) -> None:
    headers = {**ADMIN, "content-type": "application/json", "X-Request-ID": "big-body-1"}
    slug = unique_slug("big")
    too_big = padded(org_body(slug), ONE_MIB + 1)
    body = assert_error(api.http.post("/api/v1/organizations/onboard", headers=headers, content=too_big), 413)
    assert body["error"] == "payload_too_large"
    assert body["request_id"] == "big-body-1"
    assert not org_exists(api, slug)

    # Without Content-Length (chunked): the limit still holds.
    response = api.http.post("/api/v1/organizations/onboard", headers=headers, content=chunked(too_big))
    assert_error(response, 413, "payload_too_large")
    assert not org_exists(api, slug)

    # Exactly the limit is accepted.
    exact = api.http.post("/api/v1/organizations/onboard", headers=headers, content=padded(org_body(slug), ONE_MIB))
    assert exact.status_code == 201, exact.text


def test_small_body_limit_is_enforced_with_and_without_content_length(tmp_path: Path) -> None:
    server = start_server(tmp_path / "small", None, MAX_REQUEST_BODY_BYTES="2048")
    try:
        api = Api(server)
        assert api.bootstrap().status_code == 200
        headers = {**ADMIN, "content-type": "application/json"}
        slug = unique_slug("lim")
        for content in (padded(org_body(slug), 2049), chunked(padded(org_body(slug), 5000), 1000)):
            response = api.http.post("/api/v1/organizations/onboard", headers=headers, content=content)
            body = assert_error(response, 413, "payload_too_large")
            assert "2048" in body["message"]
        # Unauthenticated oversized bodies are refused too (and before anything is parsed).
        assert_error(
            api.http.post("/api/v1/organizations/onboard", content=padded(org_body(slug), 4096)),
            413,
            "payload_too_large",
        )
        assert not org_exists(api, slug)

        ok = api.http.post(
            "/api/v1/organizations/onboard", headers=headers, content=chunked(padded(org_body(slug), 2048), 100)
        )
        assert ok.status_code == 201, ok.text
        assert org_exists(api, slug)
    finally:
        server.stop()


# ----------------------------------------------------------------------------------------------
# request ids


def test_client_request_id_is_echoed_in_header_and_error_body(api: Api) -> None:
    rid = f"client-trace.{unique_slug('rid')}:1"
    ok = api.http.get("/health", headers={"X-Request-ID": rid})
    assert ok.headers["x-request-id"] == rid
    refusals = [
        api.http.get("/api/v1/admin/bootstrap/status", headers={"X-Request-ID": rid}),
        api.http.post("/api/v1/organizations/onboard", headers={**ADMIN, "X-Request-ID": rid}, json={"x": 1}),
        api.http.get("/api/v1/nowhere", headers={"X-Request-ID": rid}),
        api.http.post(
            "/api/v1/organizations/onboard",
            headers={**ADMIN, "X-Request-ID": rid, "content-type": "application/json"},
            content=b"{",
        ),
    ]
    for response in refusals:
        body = assert_error(response, response.status_code)
        assert response.status_code in {400, 401, 404, 422}
        assert body["request_id"] == rid
        assert response.headers["x-request-id"] == rid


def test_request_id_is_generated_when_absent_or_unsafe(api: Api) -> None:
    ids = set()
    for _ in range(3):
        response = api.http.get("/api/v1/admin/bootstrap/status")
        body = assert_error(response, 401)
        ids.add(body["request_id"])
    assert len(ids) == 3
    for unsafe in ("has space", "x" * 129, "new\\nline", "<script>"):
        response = api.http.get("/api/v1/admin/bootstrap/status", headers={"X-Request-ID": unsafe})
        body = assert_error(response, 401)
        assert body["request_id"] != unsafe
        assert re.fullmatch(r"[A-Za-z0-9._:\-]{8,128}", body["request_id"]), body


# ----------------------------------------------------------------------------------------------
# logs


def test_logs_are_cloud_logging_json_with_request_id_and_org(server: ServerProcess, org_key: tuple[str, str]) -> None:
    api = Api(server)
    slug, key = org_key
    rid = f"log-{unique_slug('l')}"
    assert (
        api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": key, "X-Request-ID": rid}).status_code
        == 200
    )
    record = access_record(server, rid)
    assert record["org_slug"] == slug
    assert record["severity"] == "INFO"
    assert record["httpRequest"]["status"] == 200
    assert record["httpRequest"]["requestMethod"] == "GET"
    assert record["httpRequest"]["requestUrl"] == f"/api/v1/organizations/{slug}"
    assert record["route"] == "/api/v1/organizations/{org_slug}"
    assert float(record["httpRequest"]["latency"].rstrip("s")) > 0

    rid_admin = f"log-{unique_slug('la')}"
    api.http.get(f"/api/v1/organizations/{slug}", headers={**ADMIN, "X-Request-ID": rid_admin})
    assert access_record(server, rid_admin)["org_slug"] == slug

    for rec in log_records(server):
        for field in ("severity", "message", "time"):
            assert field in rec, rec
        assert rec["severity"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}, rec
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["time"]), rec
        assert "levelname" not in rec


def test_onboarding_log_lines_carry_the_org(api: Api) -> None:
    slug = unique_slug("logorg")
    rid = f"onboard-{slug}"
    response = api.http.post(
        "/api/v1/organizations/onboard", headers={**ADMIN, "X-Request-ID": rid}, json=org_body(slug)
    )
    assert response.status_code == 201
    record = access_record(api.server, rid)
    assert record.get("org_slug") == slug, f"the onboarding request's log line does not name its org: {record}"


def test_logs_never_contain_org_keys_or_the_admin_key(api: Api) -> None:
    slug = unique_slug("secret")
    key = onboard(api, slug)["api_key"]
    own = {"X-API-Key": key}
    api.http.get(f"/api/v1/organizations/{slug}", headers=own)
    api.http.get("/api/v1/pipelines/runs", headers=own)
    api.http.post("/api/v1/admin/bootstrap", headers=own, json={})
    api.http.post("/api/v1/organizations/onboard", headers=ADMIN, json=org_body(slug))
    api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": key[:-1] + "0"})
    api.http.get(f"/api/v1/organizations/{slug}", headers={"X-Admin-Key": key})
    api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": ADMIN_KEY})
    marker = f"end-{slug}"
    api.http.get("/health", headers={"X-Request-ID": marker})
    assert wait_for_records(api.server, lambda r: r.get("request_id") == marker)
    log = api.server.log()
    for material in key_material(key):
        assert material not in log
    assert ADMIN_KEY not in log


def test_logs_redact_keys_that_clients_put_in_urls(api: Api) -> None:
    """A key pasted into a URL path must not land in the access log's requestUrl."""
    slug = unique_slug("urlkey")
    key = onboard(api, slug)["api_key"]
    api.http.get(f"/api/v1/pipelines/runs/{key}", headers={"X-API-Key": key})
    api.http.get(f"/api/v1/organizations/{key}", headers=ADMIN)
    api.http.get(f"/api/v1/organizations/{ADMIN_KEY}")
    marker = f"end-{slug}"
    api.http.get("/health", headers={"X-Request-ID": marker})
    assert wait_for_records(api.server, lambda r: r.get("request_id") == marker)
    log = api.server.log()
    leaks = [line for line in log.splitlines() if key[-16:] in line or ADMIN_KEY in line]
    assert leaks == [], f"secrets in log lines: {leaks}"


# ----------------------------------------------------------------------------------------------
# secrets at rest


def test_local_kms_key_file_is_owner_only(api: Api) -> None:
    onboard(api, unique_slug("kms"))
    path = api.server.data_dir / "local_kms.key"
    assert path.exists()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_org_key_is_stored_only_as_hash_and_ciphertext(tmp_path: Path) -> None:
    import duckdb

    server = start_server(tmp_path / "rest", None)
    try:
        api = Api(server)
        assert api.bootstrap().status_code == 200
        slug = unique_slug("rest")
        key = onboard(api, slug)["api_key"]
    finally:
        server.stop()
    con = duckdb.connect(str(server.data_dir / "warehouse.duckdb"), read_only=True)
    try:
        cursor = con.execute("SELECT * FROM organizations.org_api_keys WHERE org_slug = ?", [slug])
        columns = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    finally:
        con.close()
    assert len(rows) == 1
    row = dict(zip(columns, rows[0], strict=True))
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    for column, value in row.items():
        assert key[-16:] not in str(value), f"org_api_keys.{column} holds the key's secret"
