"""Outside development an org key cannot point the service's shared account at any export it
likes: only the admin (who checks the billing account belongs to the org) or the org's own
service account may choose what is read. Staging on the BigQuery emulator, keys sealed by the
Cloud KMS fake (staging refuses to start without KMS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.core.demo.billing_export import export_table_name
from tests.backends import Backend
from tests.conftest import DEMO, DEMO_END, unique_slug
from tests.kms_fake import KMS_KEY, KmsFake
from tests.server import Api


def test_an_org_key_cannot_choose_an_export_the_shared_account_reads(
    backend: Backend, tmp_path: Path, kms_fake: KmsFake
) -> None:
    if backend.name != "bigquery":
        pytest.skip("DuckDB has no principals (capability org_credentials=False) and is refused outside development")
    srv = backend.new_server(
        tmp_path / "srv", DEMO, ENVIRONMENT="staging", KMS_KEY_NAME=KMS_KEY, KMS_API_ENDPOINT=kms_fake.endpoint
    )
    try:
        api = Api(srv)
        assert api.bootstrap().status_code == 200
        slug = unique_slug("owner")
        key = api.onboard(slug)
        table = f"{srv.env['GCP_PROJECT_ID']}.billing_export.{export_table_name()}"
        day = {"date": DEMO_END.isoformat()}

        unset = api.run(slug, key, day)
        assert unset.status_code == 422
        assert unset.json()["error"] == "billing_source_not_configured"

        refused = api.http.put(
            f"/api/v1/organizations/{slug}/billing-source",
            headers={"X-API-Key": key},
            json={"billing_export_table": table},
        )
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == "billing_source_not_verified"
        assert "credentials/gcp" in refused.json()["message"]

        by_admin = api.http.put(
            f"/api/v1/organizations/{slug}/billing-source", headers=api.admin, json={"billing_export_table": table}
        )
        assert by_admin.status_code == 200, by_admin.text
        assert by_admin.json()["set_by"] == "admin"
        assert api.run_and_wait(slug, key, day)["status"] == "COMPLETED"

        other = unique_slug("other")
        other_key = api.onboard(other)
        taken = api.http.put(
            f"/api/v1/organizations/{other}/billing-source", headers=api.admin, json={"billing_export_table": table}
        )
        assert taken.status_code == 409
        assert taken.json()["error"] == "billing_table_in_use"
        assert api.run(other, other_key, day).status_code == 422
    finally:
        srv.stop()
