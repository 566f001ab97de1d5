"""An org's own GCP service account over HTTP, on both backends: store, read (metadata only),
replace, revoke; validation; authorization; the key never in a response, an error or a log.

On BigQuery, storing also gives the account write access to the org's own dataset (its access
list on the emulator is checked), and revoking takes it back. DuckDB has no principals: the
credentials are stored and managed the same way but queries keep running on the one warehouse.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.backends import Backend, BigQueryBackend
from tests.conftest import start_server, unique_slug
from tests.gcp_keys import key_file, secret_fragments
from tests.server import ADMIN_KEY, Api, ServerProcess

ADMIN = {"X-Admin-Key": ADMIN_KEY}


def route(slug: str) -> str:
    return f"/api/v1/organizations/{slug}/credentials/gcp"


def assert_no_secret(data: dict[str, Any], *texts: str) -> None:
    for text in texts:
        for fragment in secret_fragments(data):
            assert fragment not in text


def dataset_writers(backend: Backend, server: ServerProcess, dataset: str) -> set[str]:
    assert isinstance(backend, BigQueryBackend)
    client = backend.client(server.env["GCP_PROJECT_ID"])
    entries = client.get_dataset(f"{server.env['GCP_PROJECT_ID']}.{dataset}").access_entries
    return {str(e.entity_id) for e in entries if e.role in ("WRITER", "roles/bigquery.dataEditor")}


def test_store_read_replace_revoke(api: Api, backend: Backend, server: ServerProcess) -> None:
    slug = unique_slug("creds")
    key = api.onboard(slug)
    org = {"X-API-Key": key}
    first = key_file(f"ld-{slug.replace('_', '-')}"[:30], project="customer-proj")

    assert api.http.get(route(slug), headers=org).status_code == 404
    put = api.http.put(route(slug), headers=org, json=first)
    assert put.status_code == 200, put.text
    assert put.headers["Cache-Control"] == "no-store"
    meta = put.json()
    assert meta["org_slug"] == slug and meta["status"] == "ACTIVE"
    assert meta["principal"] == first["client_email"] and meta["project_id"] == "customer-proj"
    assert (meta["provider"], meta["credential_type"]) == ("GCP", "service_account")
    assert "private_key" not in meta and "encrypted_credential" not in meta
    got = api.http.get(route(slug), headers=org)
    assert got.status_code == 200 and got.json() == meta
    assert_no_secret(first, put.text, got.text)
    if backend.name == "bigquery":
        assert first["client_email"] in dataset_writers(backend, server, f"{slug}_local")

    second = key_file("second-loader", project="customer-proj")
    replaced = api.http.put(route(slug), headers=ADMIN, json=second)  # the admin may too
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["credential_id"] != meta["credential_id"]
    assert api.http.get(route(slug), headers=org).json()["principal"] == second["client_email"]
    if backend.name == "bigquery":
        writers = dataset_writers(backend, server, f"{slug}_local")
        assert second["client_email"] in writers and first["client_email"] not in writers

    revoked = api.http.delete(route(slug), headers=org)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "REVOKED" and revoked.json()["principal"] == second["client_email"]
    assert api.http.get(route(slug), headers=ADMIN).json()["status"] == "REVOKED"
    again = api.http.delete(route(slug), headers=org)
    assert again.status_code == 404 and again.json()["error"] == "credentials_not_found"
    if backend.name == "bigquery":
        assert second["client_email"] not in dataset_writers(backend, server, f"{slug}_local")
    assert_no_secret(first, server.log())
    assert_no_secret(second, server.log())


def test_another_org_can_never_touch_them(api: Api) -> None:
    a, b = unique_slug("owner"), unique_slug("other")
    key_a, key_b = api.onboard(a), api.onboard(b)
    data = key_file("owner-loader")
    assert api.http.put(route(a), headers={"X-API-Key": key_a}, json=data).status_code == 200
    other = {"X-API-Key": key_b}
    for response in (
        api.http.get(route(a), headers=other),
        api.http.put(route(a), headers=other, json=key_file("intruder-loader")),
        api.http.put(route(a), headers=other, json={"type": "nonsense"}),  # authorized before validated
        api.http.delete(route(a), headers=other),
    ):
        assert response.status_code == 403, response.text
        assert response.json()["error"] == "org_mismatch"
    assert api.http.get(route(a), headers={"X-API-Key": key_a}).json()["principal"] == data["client_email"]
    assert api.http.get(route(b), headers=other).status_code == 404  # B has none of its own
    assert api.http.get(route(a)).status_code == 401
    assert api.http.put(route(a), json=data).status_code == 401
    assert api.http.get(route("no_such_org_here"), headers=ADMIN).status_code == 404


BAD = [
    ("type", {"type": "external_account"}),
    ("private_key", {"private_key": "not a key at all"}),
    ("private_key", {"private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}),
    ("client_email", {"client_email": "someone@example.com"}),
    ("token_uri", {"token_uri": "https://evil.example/token"}),
    ("token_uri", {"token_uri": "http://oauth2.googleapis.com/token"}),
    ("client_id", {"client_id": "12ab"}),
    ("project_id", {"project_id": None}),
    ("extra_field", {"extra_field": "x"}),
]


@pytest.mark.parametrize(("field", "change"), BAD, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD)])
def test_bad_shapes_get_422_naming_the_field_without_echoing_the_key(
    api: Api, field: str, change: dict[str, Any]
) -> None:
    slug = unique_slug("badcreds")
    key = api.onboard(slug)
    data = key_file("valid-loader", **change)
    response = api.http.put(route(slug), headers={"X-API-Key": key}, json=data)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "validation_error"
    assert field in body["message"] or any(field == e["field"] for e in body["errors"])
    assert_no_secret(key_file("valid-loader"), response.text)
    if field == "private_key":
        assert json.dumps(change["private_key"])[1:-1] not in response.text
    assert api.http.get(route(slug), headers={"X-API-Key": key}).status_code == 404  # nothing stored


def test_body_limits(api: Api) -> None:
    slug = unique_slug("bigcreds")
    key = {"X-API-Key": api.onboard(slug)}
    padded = key_file("big-loader", client_x509_cert_url="https://www.googleapis.com/" + "a" * 17_000)
    too_big = api.http.put(route(slug), headers=key, json=padded)
    assert too_big.status_code == 413, too_big.text
    not_json = api.http.put(route(slug), headers={**key, "Content-Type": "application/json"}, content=b"{nope")
    assert not_json.status_code == 400
    assert api.http.put(route(slug), headers=key, json=[1, 2]).status_code == 422


def test_encrypted_at_rest_never_in_the_file_or_the_log(tmp_path: Path) -> None:
    # DuckDB only: this reads the warehouse file itself after the server stops.
    server = start_server(tmp_path / "creds", None)
    data = key_file("rest-loader")
    try:
        api = Api(server)
        assert api.bootstrap().status_code == 200
        slug = unique_slug("rest")
        key = {"X-API-Key": api.onboard(slug)}
        assert api.http.put(route(slug), headers=key, json=data).status_code == 200
        kept = key_file("kept-loader")
        other = unique_slug("kept")
        assert api.http.put(route(other), headers={"X-API-Key": api.onboard(other)}, json=kept).status_code == 200
        assert api.http.delete(route(slug), headers=key).status_code == 200
    finally:
        server.stop()
    con = duckdb.connect(str(server.data_dir / "warehouse.duckdb"), read_only=True)
    try:
        cursor = con.execute("SELECT * FROM organizations.org_cloud_credentials ORDER BY created_at")
        columns = [d[0] for d in cursor.description]
        rows = [dict(zip(columns, r, strict=True)) for r in cursor.fetchall()]
    finally:
        con.close()
    by_org = {r["org_slug"]: r for r in rows}
    assert by_org[slug]["status"] == "REVOKED" and by_org[slug]["encrypted_credential"] is None
    assert by_org[other]["status"] == "ACTIVE" and by_org[other]["encrypted_credential"]
    assert by_org[other]["kms_key_name"] == "local:aes-256-gcm"
    dump = json.dumps(rows, default=str)
    raw = (server.data_dir / "warehouse.duckdb").read_bytes()
    for secret in (data, kept):
        assert_no_secret(secret, dump, server.log())
        assert not any(f.encode() in raw for f in secret_fragments(secret))


def test_the_org_profile_does_not_carry_them(api: Api) -> None:
    slug = unique_slug("profile")
    key = {"X-API-Key": api.onboard(slug)}
    data = key_file("profile-loader")
    assert api.http.put(route(slug), headers=key, json=data).status_code == 200
    profile = api.http.get(f"/api/v1/organizations/{slug}", headers=key)
    assert profile.status_code == 200
    assert_no_secret(data, profile.text)


def test_a_key_that_does_not_work_gets_no_grant_and_is_not_stored(
    api: Api, backend: Backend, server: ServerProcess
) -> None:
    """BigQuery: the key gets a token and runs a dry-run query as itself before anything is stored or
    granted (the tests' token endpoint refuses this account, as Google does a deleted key). DuckDB has
    no principals: nothing to check or grant, the key is only stored."""
    slug = unique_slug("broken")
    key = {"X-API-Key": api.onboard(slug)}
    data = key_file(f"br-{slug.replace('_', '-')}"[:30])
    if backend.name == "bigquery":
        assert isinstance(backend, BigQueryBackend) and backend.oauth is not None
        backend.oauth.refused.add(data["client_email"])
    response = api.http.put(route(slug), headers=key, json=data)
    if backend.name == "duckdb":
        assert response.status_code == 200, response.text
        return
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "credentials_not_working"
    assert_no_secret(data, response.text, server.log())
    assert api.http.get(route(slug), headers=key).status_code == 404  # nothing stored
    assert data["client_email"] not in dataset_writers(backend, server, f"{slug}_local")

    working = key_file(f"ok-{slug.replace('_', '-')}"[:30])
    stored = api.http.put(route(slug), headers=key, json=working)
    assert stored.status_code == 200, stored.text
    assert backend.oauth is not None and working["client_email"] in backend.oauth.issued  # it really ran as it
    assert working["client_email"] in dataset_writers(backend, server, f"{slug}_local")
