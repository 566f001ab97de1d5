"""The FinOps Foundation's focus-validator 2.2.1 (PyPI, its own virtualenv, offline: ``tests/focus_validator.py``)
on the demo orgs' FOCUS rows: GCP exported through ``GET .../costs/focus`` after cost runs over every
demo day, AWS built from a demo CUR 2.0 delivery by ``configs/focus/aws_focus_mapping.sql``
(``tests/focus_checks.py``). With the errata of the harness: ``Fail: 0``. As shipped: only the rules the
errata correct fail. The stricter row-level checks hold, and a planted defect is caught."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pytest

from tests.acceptance.oracle import expected_by_day
from tests.backends import Backend
from tests.conftest import DEMO_DAYS, DEMO_END, DEMO_ROWS_PER_DAY, unique_slug
from tests.focus_checks import CRITERIA, aws_focus_rows, combine, raw_failures_explained, strict_checks, write_parquet
from tests.focus_validator import ensure_venv, validate
from tests.server import Api

START = date.fromordinal(DEMO_END.toordinal() - DEMO_DAYS + 1)
EXPECTED = expected_by_day(end_date=DEMO_END, days=DEMO_DAYS, rows_per_day=DEMO_ROWS_PER_DAY)
AWS_KINDS = {
    "Usage", "DiscountedUsage", "SavingsPlanCoveredUsage", "SavingsPlanNegation", "SavingsPlanRecurringFee",
    "RIFee", "Fee", "Tax", "Credit", "Refund", "EdpDiscount",
}  # fmt: skip


@pytest.fixture(scope="module")
def validator() -> Path:
    """The validator's virtualenv, made on first use (Python 3.12 from pyenv or $FOCUS_PYTHON; ~1.5 min)."""
    return ensure_venv()


@pytest.fixture(scope="module")
def aws_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("aws-focus")
    db, stats = aws_focus_rows(work, period=date(2026, 11, 1), through_day=date(2026, 11, 6))
    return write_parquet(db, work / "aws.parquet")


def test_the_demo_focus_rows_pass_the_finops_foundation_validator(
    backend: Backend, api: Api, validator: Path, aws_parquet: Path, tmp_path: Path
) -> None:
    slug = unique_slug("focus_valid")
    key = api.onboard(slug)
    run = api.run_and_wait(slug, key, {"start_date": START.isoformat(), "end_date": DEMO_END.isoformat()})
    assert run["status"] == "COMPLETED", run["error_message"]
    response = api.http.get(
        f"/api/v1/organizations/{slug}/costs/focus",
        headers={"X-API-Key": key},
        params={"start_date": START.isoformat(), "end_date": DEMO_END.isoformat(), "format": "parquet"},
    )
    assert response.status_code == 200, response.text
    gcp = tmp_path / "gcp.parquet"
    gcp.write_bytes(response.content)
    both = combine([gcp, aws_parquet], tmp_path / "focus.parquet")

    con = duckdb.connect()
    kinds = con.execute(
        "SELECT x_Provider, COALESCE(x_CostType, x_LineItemType), ChargeCategory, COUNT(*) "
        f"FROM read_parquet('{both}') GROUP BY ALL"
    ).fetchall()
    con.close()
    assert sum(n for provider, *_, n in kinds if provider == "gcp") == sum(e["rows"] for e in EXPECTED.values())
    assert {k for p, k, *_ in kinds if p == "gcp"} == {"regular", "tax", "adjustment", "rounding_error"}
    assert {k for p, k, *_ in kinds if p == "aws"} == AWS_KINDS
    assert {c for *_, c, _ in kinds} == {"Usage", "Purchase", "Tax", "Credit", "Adjustment"}

    assert {name: n for name, n in strict_checks(both).items() if n} == {}

    result = validate(both, criteria=CRITERIA)
    assert result.failed == 0, result.describe()
    assert result.passed > 300 and len(result.errata) == 24

    # The bundled rules as shipped fail exactly on their defects (no non-empty data set can pass them).
    raw = validate(both, criteria=CRITERIA, errata=False)
    assert raw.failed > 0 and raw_failures_explained(raw) == [], raw.describe()

    # A negative control: the same run catches a usage row without a SKU.
    planted = tmp_path / "planted.parquet"
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT * REPLACE (IF(row_number() OVER () = 1, NULL, SkuId) AS SkuId) FROM read_parquet('{gcp}') "
        f"WHERE ChargeCategory = 'Usage') TO '{planted}' (FORMAT parquet)"
    )
    con.close()
    assert "SkuId-C-005-C" in validate(planted, criteria=CRITERIA).failed_ids


def test_the_csv_export_passes_the_validator_too(backend: Backend, api: Api, validator: Path, tmp_path: Path) -> None:
    if backend.name != "duckdb":
        pytest.skip("the file writer is the same on both backends (engine/exports.py); CSV is checked once")
    slug = unique_slug("focus_csv")
    key = api.onboard(slug)
    day = DEMO_END.isoformat()
    assert api.run_and_wait(slug, key, {"date": day})["status"] == "COMPLETED"
    response = api.http.get(
        f"/api/v1/organizations/{slug}/costs/focus",
        headers={"X-API-Key": key},
        params={"start_date": day, "end_date": day},
    )
    assert response.status_code == 200
    path = tmp_path / response.headers["content-disposition"].split('filename="')[1].rstrip('"')
    path.write_bytes(response.content)
    result = validate(path, criteria=CRITERIA)
    assert result.failed == 0, result.describe()
