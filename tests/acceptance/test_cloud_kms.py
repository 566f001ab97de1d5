"""The service with ``KMS_KEY_NAME`` set: the real google-cloud-kms client (REST transport, pointed
at the local KMS fake by ``KMS_API_ENDPOINT``) encrypts what the service stores.

DuckDB only, on purpose: what is checked here is the KMS path (the encrypt calls the fake receives,
their AAD, and the key name recorded next to each ciphertext), which does not depend on the
warehouse; reading the stored rows back needs the DuckDB file after the server stops.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import duckdb

from tests.conftest import start_server, unique_slug
from tests.gcp_keys import key_file, secret_fragments
from tests.kms_fake import KMS_KEY, KmsFake
from tests.server import Api


def rows(path: Path, table: str, slug: str) -> list[dict[str, Any]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        cursor = con.execute(f"SELECT * FROM organizations.{table} WHERE org_slug = ?", [slug])
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, r, strict=True)) for r in cursor.fetchall()]
    finally:
        con.close()


def test_onboarding_and_credentials_are_encrypted_by_cloud_kms(tmp_path: Path, kms_fake: KmsFake) -> None:
    server = start_server(tmp_path / "kms", None, KMS_KEY_NAME=KMS_KEY, KMS_API_ENDPOINT=kms_fake.endpoint)
    slug = unique_slug("kms")
    data = key_file("kms-loader")
    try:
        api = Api(server)
        assert api.bootstrap().status_code == 200
        key = api.onboard(slug)
        encrypts = [c for c in kms_fake.calls if c.method == "encrypt"]
        assert len(encrypts) == 1 and encrypts[0].status == 200
        assert encrypts[0].key_name == KMS_KEY
        assert slug.encode() in encrypts[0].aad and b"api_key" in encrypts[0].aad

        stored = api.http.put(f"/api/v1/organizations/{slug}/credentials/gcp", headers={"X-API-Key": key}, json=data)
        assert stored.status_code == 200, stored.text
        last = kms_fake.calls[-1]
        assert (last.method, last.status) == ("encrypt", 200)
        assert slug.encode() in last.aad and b"gcp_credentials" in last.aad
        assert kms_fake.count("decrypt") == 0  # nothing is decrypted on DuckDB: no per-org principals
    finally:
        server.stop()
    db = server.data_dir / "warehouse.duckdb"
    (key_row,) = rows(db, "org_api_keys", slug)
    assert key_row["kms_key_name"] == KMS_KEY
    assert key[-16:] not in str(key_row["encrypted_key"])
    assert base64.b64decode(key_row["encrypted_key"])
    (cred_row,) = rows(db, "org_cloud_credentials", slug)
    assert cred_row["kms_key_name"] == KMS_KEY and cred_row["status"] == "ACTIVE"
    for fragment in secret_fragments(data):
        assert fragment not in str(cred_row["encrypted_credential"])
        assert fragment not in server.log()


def test_a_kms_outage_fails_onboarding_cleanly(tmp_path: Path, kms_fake: KmsFake) -> None:
    server = start_server(tmp_path / "kms-down", None, KMS_KEY_NAME=KMS_KEY, KMS_API_ENDPOINT=kms_fake.endpoint)
    try:
        api = Api(server)
        assert api.bootstrap().status_code == 200
        slug = unique_slug("kmsdown")
        kms_fake.fail_next(2, status=503)  # transient: retried inside the KMS client
        assert api.onboard(slug)
        assert [c.status for c in kms_fake.calls] == [503, 503, 200]
        unknown = unique_slug("kmsgone")
        kms_fake.fail_next(1, status=403)  # refused: not retried, no org is created
        refused = api.http.post(
            "/api/v1/organizations/onboard",
            headers=api.admin,
            json={"org_slug": unknown, "company_name": "X", "admin_email": "ops@x.example"},
        )
        assert refused.status_code == 500, refused.text
        assert refused.json()["error"] == "internal_error"
        assert "cryptoKeys" not in refused.text
        assert api.http.get(f"/api/v1/organizations/{unknown}", headers=api.admin).status_code == 404
    finally:
        server.stop()
