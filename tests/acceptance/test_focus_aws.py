"""FOCUS across providers over HTTP: an org's GCP and AWS cost runs each rebuild their own rows of
``focus_cost`` (AWS: the billing periods it loaded), reconciled with the generators' exact figures,
never touching the other provider's rows; the org's FOCUS export of both passes the FinOps
Foundation's focus-validator 2.2.1 (``tests/focus_validator.py``): ``Fail: 0`` with the harness's
errata, only the defective rules as shipped; stricter row checks hold and a planted defect is caught.
The S3 peer is moto's server (``tests/s3_peer.py``), as in ``test_aws_costs.py``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.acceptance.aws_export import BP, PERIOD, Org, deliver, expected, money, new_org, run, set_source
from tests.acceptance.oracle import expected_by_day
from tests.backends import Backend
from tests.conftest import DEMO, DEMO_DAYS, DEMO_END, DEMO_ROWS_PER_DAY
from tests.focus_checks import CRITERIA, raw_failures_explained, strict_checks
from tests.focus_validator import ensure_venv, validate
from tests.s3_peer import ALL, MotoServer
from tests.server import Api, ServerProcess

GCP_START = DEMO_END - timedelta(days=DEMO_DAYS - 1)
GCP_EXPECTED = expected_by_day(end_date=DEMO_END, days=DEMO_DAYS, rows_per_day=DEMO_ROWS_PER_DAY)
WINDOW = (PERIOD.isoformat(), DEMO_END.isoformat())  # the AWS period (October) to the last GCP day
AWS_KINDS = {
    "Usage", "DiscountedUsage", "SavingsPlanCoveredUsage", "SavingsPlanNegation", "SavingsPlanRecurringFee",
    "RIFee", "Fee", "Tax", "Credit", "Refund", "EdpDiscount",
}  # fmt: skip


@pytest.fixture(scope="module")
def focus_server(
    backend: Backend, moto: MotoServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The demo GCP export and the S3 peer: one org can run both providers' cost pipelines."""
    platform = moto.user(f"focus-platform-{os.getpid()}", ALL)
    srv = backend.new_server(
        tmp_path_factory.mktemp(f"focus-{backend.name}"), DEMO, AWS_ENDPOINT_URL=moto.endpoint, **platform.env()
    )
    assert Api(srv).bootstrap().status_code == 200
    yield srv
    srv.stop()


@pytest.fixture
def api(focus_server: ServerProcess) -> Api:
    return Api(focus_server)


def view(api: Api, org: Org, **params: str) -> dict[str, Any]:
    response = api.http.get(
        f"/api/v1/organizations/{org.slug}/costs/daily",
        headers=org.headers,
        params={"start_date": WINDOW[0], "end_date": WINDOW[1], "view": "focus", **params},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def by_day(focus: dict[str, Any]) -> dict[str, tuple[int, Decimal]]:
    return {d["usage_date"]: (d["row_count"], money(d["billed_cost"])) for d in focus["days"]}


def both_providers(api: Api, moto: MotoServer, tmp: Path, *, through_day: int = 5) -> tuple[Org, Any]:
    org = new_org(api, moto)
    stats = deliver(moto, org, tmp, through_day=through_day)
    assert set_source(api, org).status_code == 200
    aws = run(api, org)
    assert aws["status"] == "COMPLETED", aws["error_message"]
    gcp = api.run_and_wait(org.slug, org.key, {"start_date": GCP_START.isoformat(), "end_date": DEMO_END.isoformat()})
    assert gcp["status"] == "COMPLETED", gcp["error_message"]
    return org, (aws, stats)


def test_each_provider_rebuilds_its_own_focus_rows(api: Api, moto: MotoServer, tmp_path: Path) -> None:
    org, (aws, stats) = both_providers(api, moto, tmp_path)
    steps = {s["step_id"]: s for s in aws["steps"]}
    assert steps["build_focus"]["status"] == "COMPLETED" and steps["build_focus"]["rows_processed"] == stats.rows
    checks = [c for c in aws["dq_results"] if c["check_name"] == "reconcile_focus_aws"]
    assert checks and all(c["passed"] for c in checks)
    want = {day: (rows, money(cost)) for day, (rows, cost) in expected(stats).items()}
    assert by_day(view(api, org, provider="aws")) == want  # exact: the generator's own counts
    gcp_days = by_day(view(api, org, provider="gcp"))
    assert gcp_days == {d: (e["rows"], money(e["cost"])) for d, e in GCP_EXPECTED.items()}
    providers = view(api, org, group_by="provider")
    assert {(d["group_id"], d["group_name"]) for d in providers["days"]} == {("aws", "AWS"), ("gcp", "Google Cloud")}
    # Both views page through both providers' rows: small pages make up the one-page answer, in
    # its order, and every page carries the totals of the whole window.
    for params in ({"view": "focus"}, {"view": "provider"}, {"view": "provider", "group_by": "service"}):
        whole = view(api, org, **params)
        assert whole["next_page_token"] is None and len(whole["days"]) > 7, whole
        if params["view"] == "provider":
            assert {d["provider"] for d in whole["days"]} == {"aws", "gcp"}
        paged: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = view(api, org, **params, limit="7", **({"page_token": token} if token else {}))
            assert (page["totals"], page["totals_by_currency"]) == (whole["totals"], whole["totals_by_currency"])
            assert page["count"] == len(page["days"]) <= 7
            paged += page["days"]
            token = page["next_page_token"]
            if token is None:
                break
        assert paged == whole["days"], params

    # A newer delivery of the period replaces the AWS rows of the whole period, and only them.
    newer = deliver(moto, org, tmp_path, through_day=9)
    again = run(api, org)
    assert again["status"] == "COMPLETED", again["error_message"]
    assert by_day(view(api, org, provider="aws")) == {d: (r, money(c)) for d, (r, c) in expected(newer).items()}
    assert by_day(view(api, org, provider="gcp")) == gcp_days
    assert run(api, org)["status"] == "COMPLETED"  # a rerun changes nothing
    assert by_day(view(api, org, provider="aws")) == {d: (r, money(c)) for d, (r, c) in expected(newer).items()}


def test_the_orgs_focus_export_passes_the_finops_foundation_validator(
    api: Api, moto: MotoServer, tmp_path: Path
) -> None:
    ensure_venv()  # the validator's own virtualenv, made on first use (~1.5 min; Python 3.12)
    org, (_, stats) = both_providers(api, moto, tmp_path, through_day=6)
    response = api.http.get(
        f"/api/v1/organizations/{org.slug}/costs/focus",
        headers=org.headers,
        params={"start_date": WINDOW[0], "end_date": WINDOW[1], "format": "parquet"},
    )
    assert response.status_code == 200, response.text
    path = tmp_path / "focus.parquet"
    path.write_bytes(response.content)

    con = duckdb.connect()
    kinds = con.execute(
        "SELECT x_Provider, COALESCE(x_CostType, x_LineItemType), ChargeCategory, COUNT(*) "
        f"FROM read_parquet('{path}') GROUP BY ALL"
    ).fetchall()
    con.close()
    assert sum(n for p, *_, n in kinds if p == "gcp") == sum(e["rows"] for e in GCP_EXPECTED.values())
    assert sum(n for p, *_, n in kinds if p == "aws") == stats.rows
    assert {k for p, k, *_ in kinds if p == "gcp"} == {"regular", "tax", "adjustment", "rounding_error"}
    assert {k for p, k, *_ in kinds if p == "aws"} == AWS_KINDS
    assert {c for *_, c, _ in kinds} == {"Usage", "Purchase", "Tax", "Credit", "Adjustment"}

    assert {name: n for name, n in strict_checks(path).items() if n} == {}

    result = validate(path, criteria=CRITERIA)
    assert result.failed == 0, result.describe()
    assert result.passed > 300 and len(result.errata) == 24

    # The bundled rules as shipped fail exactly on their defects (no non-empty data set can pass them).
    raw = validate(path, criteria=CRITERIA, errata=False)
    assert raw.failed > 0 and raw_failures_explained(raw) == [], raw.describe()

    # A negative control: the same run catches a usage row without a SKU.
    planted = tmp_path / "planted.parquet"
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT * REPLACE (IF(row_number() OVER () = 1, NULL, SkuId) AS SkuId) FROM read_parquet('{path}') "
        f"WHERE ChargeCategory = 'Usage') TO '{planted}' (FORMAT parquet)"
    )
    con.close()
    assert "SkuId-C-005-C" in validate(planted, criteria=CRITERIA).failed_ids


def test_bp_is_a_closed_period_before_the_gcp_days() -> None:
    """The window above holds the whole AWS period and every GCP demo day (a guard on the fixtures)."""
    assert PERIOD.strftime("%Y-%m") == BP and PERIOD < GCP_START and date.fromisoformat(WINDOW[1]) == DEMO_END
