"""``GET /metrics``: Prometheus text, parsed with prometheus-client's own parser, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.backends import Backend
from tests.conftest import DEMO, unique_slug
from tests.server import ADMIN_KEY, Api, ServerProcess

ADMIN = {"X-Admin-Key": ADMIN_KEY}


def scrape(api: Api, headers: dict[str, str] | None = None) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] from one scrape."""
    response = api.http.get("/metrics", headers=headers if headers is not None else ADMIN)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for found, v in samples.get(name, []) if all(found.get(k) == w for k, w in labels.items()))


def test_metrics_need_the_admin_key(api: Api) -> None:
    assert api.http.get("/metrics").status_code == 401
    slug = unique_slug("metrics_key")
    key = api.onboard(slug)
    response = api.http.get("/metrics", headers={"X-API-Key": key})
    assert response.status_code == 403
    assert response.json()["error"] == "admin_required"


def test_requests_runs_statements_and_queue_are_counted(api: Api) -> None:
    slug = unique_slug("metrics")
    key = api.onboard(slug)
    before = scrape(api)
    org_route = "/api/v1/organizations/{org_slug}"
    for _ in range(3):
        assert api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": key}).status_code == 200
    assert api.http.get("/api/v1/organizations/not_there_at_all", headers=ADMIN).status_code == 404
    assert api.http.get("/no/such/route/at/all").status_code == 404
    run = api.run_and_wait(slug, key, {"date": DEMO.end_date.isoformat()})
    assert run["status"] == "COMPLETED", run
    after = scrape(api)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    count = "convergence_http_request_duration_seconds_count"
    assert delta(count, route=org_route, method="GET", status="200") == 3
    assert delta(count, route=org_route, method="GET", status="404") == 1
    assert delta(count, route="<unmatched>", method="GET", status="404") == 1
    assert not any("/no/such" in labels.get("route", "") for labels, _ in after[count]), "raw paths as labels"
    buckets = after["convergence_http_request_duration_seconds_bucket"]
    top = {"route": org_route, "status": "200", "le": "+Inf"}
    inf = [v for labels, v in buckets if all(labels.get(k) == w for k, w in top.items())]
    assert inf and inf[0] == value(after, count, route=org_route, status="200")

    pipeline = "gcp/cost/cost_billing"
    assert delta("convergence_runs_started_total", pipeline=pipeline) == 1
    assert delta("convergence_runs_ended_total", pipeline=pipeline, state="COMPLETED") == 1
    for kind in ("SELECT", "UPDATE", "INSERT"):  # admission, the run row, the load
        assert delta("convergence_warehouse_statements_total", kind=kind) >= 1, kind
    states = {labels["state"] for labels, _ in after["convergence_queue_items"]}
    assert states == {"QUEUED", "RUNNING", "RETRY", "COMPLETED", "FAILED", "CANCELLED"}


@pytest.fixture
def public_metrics_server(backend: Backend, tmp_path: Path) -> Iterator[ServerProcess]:
    if backend.name != "duckdb":
        pytest.skip("a setting of the HTTP layer: the DuckDB server shows it")
    server = backend.new_server(tmp_path / "public-metrics", None, METRICS_PUBLIC="true")
    yield server
    server.stop()


def test_metrics_public_setting_serves_without_a_key(public_metrics_server: ServerProcess) -> None:
    api = Api(public_metrics_server)
    samples = scrape(api, headers={})
    assert "convergence_http_request_duration_seconds_count" in samples
