"""The CSV export passes the FinOps Foundation's focus-validator 2.2.1 too (the Parquet export of both
providers: ``test_focus_aws.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.backends import Backend
from tests.conftest import DEMO_END, unique_slug
from tests.focus_checks import CRITERIA
from tests.focus_validator import ensure_venv, validate
from tests.server import Api


@pytest.fixture(scope="module")
def validator() -> Path:
    """The validator's virtualenv, made on first use (Python 3.12 from pyenv or $FOCUS_PYTHON; ~1.5 min)."""
    return ensure_venv()


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
