"""The API's contract over HTTP, on both backends: every answer declared, lists bounded and paged,
hostile bodies refused with 4xx, and the audit trail written for every change."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import DEMO_END, unique_slug
from tests.gcp_keys import key_file, secret_fragments
from tests.server import Api, ServerProcess

DAY = DEMO_END.isoformat()
LIST_ROUTES = [
    "/api/v1/pipelines/runs",
    "/api/v1/admin/organizations",
    "/api/v1/organizations/{org}/api-keys",
    "/api/v1/organizations/{org}/schedules",
    f"/api/v1/organizations/{{org}}/costs/daily?start_date={DAY}&end_date={DAY}",
]


def test_every_route_declares_its_answers_and_lists_are_paged(api: Api) -> None:
    schema = api.http.get("/openapi.json").json()
    assert {"AdminKey", "OrgKey"} <= set(schema["components"]["securitySchemes"])
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            answers = operation["responses"]
            ok = [code for code in answers if code.startswith("2")]
            # One success answer per route; a run answers 202 when started and 200 for a dry run.
            expected = 2 if path.startswith("/api/v1/pipelines/run/") else 1
            assert len(ok) == expected, where
            for code in ok:
                declared = answers[code].get("content", {})
                assert any(c.get("schema") for c in declared.values()), f"{where} {code}: no declared body"
            content = answers[ok[0]].get("content", {})
            if path.startswith("/health"):
                continue
            assert operation.get("security"), f"{where}: no security declared"
            errors = {code: answers[code] for code in answers if code[0] in "45"}
            assert {"401", "403"} <= set(errors), where
            for code, answer in errors.items():
                ref = answer["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith(("/ErrorResponse", "/ValidationErrorResponse")), f"{where} {code}"
            names = {p["name"] for p in operation.get("parameters", [])}
            if method == "get" and "limit" in names:
                assert "page_token" in names, where
                limit = next(p for p in operation["parameters"] if p["name"] == "limit")["schema"]
                assert limit["minimum"] >= 1 and limit["maximum"] <= 5000, where
                answer_schema = content["application/json"]["schema"]  # one model, or anyOf (costs/daily's views)
                for alternative in answer_schema.get("anyOf", [answer_schema]):
                    body = schema["components"]["schemas"][alternative["$ref"].split("/")[-1]]
                    assert "next_page_token" in body["properties"], where
    listed = {
        p
        for p, ops in schema["paths"].items()
        if "limit" in {x["name"] for x in ops.get("get", {}).get("parameters", [])}
    }
    assert {r.split("?")[0].replace("{org}", "{org_slug}") for r in LIST_ROUTES} <= listed


def test_list_bounds_are_4xx_never_500(api: Api) -> None:
    slug = unique_slug("bounds")
    key = {"X-API-Key": api.onboard(slug)}
    for route in LIST_ROUTES:
        url = route.format(org=slug)
        joiner = "&" if "?" in url else "?"
        headers = api.admin if "/admin/" in url else key
        for bad in (
            "limit=0",
            "limit=1000000",
            "limit=-1",
            "limit=abc",
            "page_token=%21%21",
            "page_token=" + "A" * 600,
        ):
            response = api.http.get(f"{url}{joiner}{bad}", headers=headers)
            assert response.status_code == 422, (url, bad, response.text)
    for offset in (10**12, 2**63, -1, 100_001):
        response = api.http.get("/api/v1/admin/organizations", headers=api.admin, params={"offset": offset})
        assert response.status_code == 422, (offset, response.text)
    assert api.http.get("/api/v1/admin/organizations", headers=api.admin, params={"offset": 100_000}).status_code == 200
    for bad_date in ("0", "20261120", "2026-11-20T00:00:00", "99999-01-01"):
        response = api.http.get("/api/v1/pipelines/runs", headers=key, params={"date": bad_date})
        assert response.status_code == 422, (bad_date, response.text)


@pytest.mark.parametrize("shape", ["deep-array", "deep-object", "deep-in-string-is-fine"])
def test_deep_json_bodies_are_refused_with_400(api: Api, shape: str) -> None:
    slug = unique_slug("deep")
    key = {"X-API-Key": api.onboard(slug), "content-type": "application/json"}
    bodies = {
        "deep-array": b"[" * 200_000,
        "deep-object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        "deep-in-string-is-fine": json.dumps({"emails": [], "on": ["failure"], "x": "[" * 5000}).encode(),
    }
    targets = [
        ("POST", f"/api/v1/pipelines/run/{slug}/gcp/cost/cost_billing"),
        ("POST", f"/api/v1/organizations/{slug}/schedules"),
        ("PUT", f"/api/v1/organizations/{slug}/notifications"),
        ("POST", f"/api/v1/organizations/{slug}/api-keys"),
    ]
    for method, url in targets:
        response = api.http.request(method, url, headers=key, content=bodies[shape])
        if shape == "deep-in-string-is-fine":
            assert response.status_code == 422, response.text  # parsed; refused for its fields only
        else:
            assert response.status_code == 400, (url, response.text)
            assert response.json()["error"] == "json_too_deep"


def test_schedule_bounds_are_422(api: Api) -> None:
    slug = unique_slug("year")
    key = {"X-API-Key": api.onboard(slug)}
    url = f"/api/v1/organizations/{slug}/schedules"
    base = {"pipeline": "gcp/cost/cost_billing", "cron_expression": "0 6 * * *", "parameters": {"window": "yesterday"}}
    for starts_at in ("9999-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "2200-01-01T00:00:00+14:00"):
        response = api.http.post(url, headers=key, json={**base, "starts_at": starts_at})
        assert response.status_code == 422, (starts_at, response.text)
    huge = {**base, "parameters": {"window": "yesterday", "note": "x" * 5000}}
    assert api.http.post(url, headers=key, json=huge).status_code == 422
    for attempts in (True, "3", 3.5, 0, 11):
        response = api.http.post(url, headers=key, json={**base, "max_attempts": attempts})
        assert response.status_code == 422, (attempts, response.text)
    assert api.http.post(url, headers=key, json={**base, "max_attempts": 3.0}).status_code == 201


def collect_pages(api: Api, url: str, headers: dict[str, str], field: str, **params: Any) -> list[list[Any]]:
    pages = []
    token = None
    for _ in range(50):
        response = api.http.get(url, headers=headers, params={**params, **({"page_token": token} if token else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["count"] == len(body[field])
        pages.append(body[field])
        token = body["next_page_token"]
        if token is None:
            return pages
    raise AssertionError("no last page")


def test_runs_costs_schedules_and_orgs_are_paged(api: Api) -> None:
    slug = unique_slug("paged")
    key = {"X-API-Key": api.onboard(slug)}
    runs = [api.run_and_wait(slug, key["X-API-Key"], {"date": DAY})["pipeline_logging_id"] for _ in range(3)]
    pages = collect_pages(api, "/api/v1/pipelines/runs", key, "runs", limit=2)
    assert [len(p) for p in pages] == [2, 1]
    assert [r["pipeline_logging_id"] for p in pages for r in p] == runs[::-1]  # newest first, each once

    url = f"/api/v1/organizations/{slug}/costs/daily"
    whole = api.http.get(url, headers=key, params={"start_date": DAY, "end_date": DAY, "group_by": "service"}).json()
    assert whole["next_page_token"] is None and whole["count"] == len(whole["days"]) > 3
    pages = collect_pages(api, url, key, "days", start_date=DAY, end_date=DAY, group_by="service", limit=3)
    assert [row for page in pages for row in page] == whole["days"]
    first = api.http.get(
        url, headers=key, params={"start_date": DAY, "end_date": DAY, "group_by": "service", "limit": 3}
    )
    assert first.json()["totals"] == whole["totals"]  # over the whole window, on every page
    assert whole["totals"]["row_count"] == sum(d["row_count"] for d in whole["days"])

    sched = f"/api/v1/organizations/{slug}/schedules"
    body = {"pipeline": "gcp/cost/cost_billing", "cron_expression": "0 6 * * *", "parameters": {"window": "yesterday"}}
    made = [api.http.post(sched, headers=key, json=body).json()["schedule_id"] for _ in range(3)]
    pages = collect_pages(api, sched, key, "schedules", limit=2)
    assert [s["schedule_id"] for p in pages for s in p] == made
    for made_id in made:
        assert api.http.delete(f"{sched}/{made_id}", headers=key).status_code == 200

    names = [unique_slug("paged_org") for _ in range(3)]
    for name in names:
        api.onboard(name)
    pages = collect_pages(api, "/api/v1/admin/organizations", api.admin, "organizations", limit=50)
    listed = [o["org_slug"] for p in pages for o in p]
    assert len(listed) == len(set(listed)) and set(names) <= set(listed)


def audit_lines(server: ServerProcess, request_ids: set[str]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while True:
        found = []
        for line in server.log().splitlines():
            if '"convergence.audit"' in line:
                record = json.loads(line)
                if record.get("request_id") in request_ids:
                    found.append(record)
        if len(found) >= len(request_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_every_change_writes_one_audit_line(api: Api, server: ServerProcess) -> None:
    slug = unique_slug("audit")
    done: dict[str, tuple[str, str]] = {}  # request id -> (action, outcome)

    def call(action: str, outcome: str, method: str, url: str, headers: dict[str, str], **kw: Any) -> Any:
        rid = f"audit-{slug}-{len(done)}"
        response = api.http.request(method, url, headers={**headers, "X-Request-ID": rid}, **kw)
        done[rid] = (action, outcome)
        return response

    org = f"/api/v1/organizations/{slug}"
    onboarded = call(
        "admin.organization_onboard",
        "success",
        "POST",
        "/api/v1/organizations/onboard",
        api.admin,
        json={"org_slug": slug, "company_name": "Audit Co", "admin_email": "a@audit.example"},
    )
    secret = onboarded.json()["api_key"]
    key = {"X-API-Key": secret}
    made = call(
        "api_key.create", "success", "POST", f"{org}/api-keys", key, json={"name": "ci", "scopes": ["org:read"]}
    )
    rotated = call(
        "api_key.rotate", "success", "POST", f"{org}/api-keys/rotate", key, json={"grace_period_seconds": 60}
    )
    call("api_key.create", "refused", "POST", f"{org}/api-keys", key, json={"name": "again"})  # key in grace
    new = {"X-API-Key": rotated.json()["api_key"]}
    call("api_key.revoke", "success", "DELETE", f"{org}/api-keys/{made.json()['key_id']}", new)
    data = key_file("audit-loader")
    call("credentials.gcp.store", "success", "PUT", f"{org}/credentials/gcp", new, json=data)
    call("credentials.gcp.revoke", "success", "DELETE", f"{org}/credentials/gcp", new)
    call("billing_source.set", "success", "PUT", f"{org}/billing-source", new, json={"billing_export_table": None})
    call(
        "notifications.set",
        "success",
        "PUT",
        f"{org}/notifications",
        new,
        json={"emails": ["ops@audit.example"], "slack_webhook_url": None},
    )
    call(
        "admin.organization_suspend",
        "success",
        "POST",
        f"/api/v1/admin/organizations/{slug}/suspend",
        api.admin,
        json={},
    )
    call(
        "admin.organization_reactivate", "success", "POST", f"/api/v1/admin/organizations/{slug}/reactivate", api.admin
    )
    call("admin.bootstrap_status", "success", "GET", "/api/v1/admin/bootstrap/status", api.admin)

    records = audit_lines(server, set(done))
    by_request = {r["request_id"]: r for r in records}
    assert len(records) == len(by_request) == len(done), records  # exactly one line each
    for rid, (action, outcome) in done.items():
        record = by_request[rid]
        assert (record["action"], record["outcome"]) == (action, outcome), record
        assert record["severity"] == "INFO" and record["logging.googleapis.com/labels"] == {"log": "convergence.audit"}
        assert record["actor"] == "admin" if action.startswith("admin.") else record["actor"].startswith("key_")
        if action != "admin.bootstrap_status":
            assert record["org_slug"] == slug, record
    refused = next(r for r in records if r["outcome"] == "refused")
    assert refused["error"] == "key_superseded"
    assert by_request[next(r for r, v in done.items() if v[0] == "api_key.create")]["target"] == made.json()["key_id"]
    text = json.dumps(records)
    for secret_text in (
        secret,
        rotated.json()["api_key"],
        made.json()["api_key"],
        *secret_fragments(data),
    ):
        assert secret_text not in text
