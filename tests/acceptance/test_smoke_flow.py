"""The README's walk-through over HTTP: bootstrap -> dry-run -> onboard -> lookup -> run -> results."""

from __future__ import annotations

from tests.conftest import DEMO_END, unique_slug
from tests.server import Api


def test_readme_flow(api: Api) -> None:
    slug = unique_slug("flow")
    admin = api.admin
    again = api.bootstrap()
    assert again.status_code == 200
    assert again.json()["tables_created"] == []
    body = {
        "org_slug": slug,
        "company_name": "Flow Inc",
        "admin_email": "ops@flow.example",
        "subscription_plan": "STARTER",
    }
    dry = api.http.post("/api/v1/organizations/dryrun", headers=admin, json=body)
    assert dry.status_code == 200, dry.text
    assert dry.json()["valid"] is True
    onboard = api.http.post("/api/v1/organizations/onboard", headers=admin, json=body)
    assert onboard.status_code == 201, onboard.text
    key = onboard.json()["api_key"]
    assert key.startswith(f"{slug}_api_") and len(key) == len(slug) + 5 + 16
    org = api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": key})
    assert org.status_code == 200
    assert org.json()["limits"] == {"daily_run_limit": 6, "monthly_run_limit": 180, "concurrent_run_limit": 1}
    run = api.run_and_wait(slug, key, {"date": DEMO_END.isoformat()})
    assert run["status"] == "COMPLETED", (run["error_message"], run["steps"])
    assert run["steps"][0]["rows_processed"] > 0
    assert "reconcile_source" in {c["check_name"] for c in run["dq_results"]}
    assert all(c["passed"] for c in run["dq_results"])
    costs = api.costs(slug, key, DEMO_END.isoformat(), DEMO_END.isoformat())
    assert costs["totals"]["row_count"] == run["steps"][0]["rows_processed"]
