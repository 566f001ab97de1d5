"""Named API keys over HTTP, on both backends: create, list, rotate one, revoke; what a key inside
its grace period may do; the org's last full key; revocation on another instance (BigQuery)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.backends import Backend
from tests.conftest import unique_slug
from tests.server import Api

ALL_SCOPES = ["pipelines:run", "pipelines:read", "org:read", "org:write"]


def keys_url(slug: str) -> str:
    return f"/api/v1/organizations/{slug}/api-keys"


def create(api: Api, slug: str, headers: dict[str, str], **body: Any) -> httpx.Response:
    return api.http.post(keys_url(slug), headers=headers, json=body)


def org_get(api: Api, slug: str, key: str) -> int:
    return api.http.get(f"/api/v1/organizations/{slug}", headers={"X-API-Key": key}).status_code


def test_named_keys_are_created_listed_and_revoked(api: Api) -> None:
    slug = unique_slug("named")
    full = {"X-API-Key": api.onboard(slug)}
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    made = create(
        api, slug, full, name="dashboard", scopes=["org:read", "pipelines:read"], expires_at=expires.isoformat()
    )
    assert made.status_code == 201, made.text
    assert made.headers["Cache-Control"] == "no-store"
    body = made.json()
    secret = body["api_key"]
    assert secret.startswith(f"{slug}_api_") and len(secret) == len(slug) + 5 + 16
    assert (body["name"], body["status"], body["scopes"]) == ("dashboard", "ACTIVE", ["pipelines:read", "org:read"])
    assert datetime.fromisoformat(body["expires_at"]) == expires
    dashboard = {"X-API-Key": secret}
    assert org_get(api, slug, secret) == 200
    assert api.http.put(f"/api/v1/organizations/{slug}/billing-source", headers=dashboard, json={}).status_code == 403

    listed = api.http.get(keys_url(slug), headers=dashboard)
    assert listed.status_code == 200, listed.text
    entries = {k["name"]: k for k in listed.json()["keys"]}
    assert set(entries) == {"default", "dashboard"}
    assert secret not in listed.text and secret[-16:] not in listed.text
    for entry in entries.values():
        assert set(entry) >= {"key_id", "name", "key_prefix", "scopes", "created_at", "last_used_at", "expires_at"}
        assert "key_hash" not in entry and "encrypted_key" not in entry
    assert entries["dashboard"]["key_prefix"] == secret[: len(slug) + 5 + 4] + "…"

    taken = create(api, slug, full, name="dashboard")
    assert taken.status_code == 409 and taken.json()["error"] == "key_name_taken", taken.text
    past = create(api, slug, full, name="old", expires_at="2020-01-01T00:00:00Z")
    assert past.status_code == 422 and past.json()["error"] == "invalid_expiry", past.text
    assert create(api, slug, full, name="bad/name").status_code == 422
    assert create(api, slug, full, name="x", scopes=["org:admin"]).status_code == 422

    revoked = api.http.delete(f"{keys_url(slug)}/{body['key_id']}", headers=full)
    assert revoked.status_code == 200, revoked.text
    assert (revoked.json()["status"], revoked.json()["revoked"]) == ("REVOKED", True)
    assert org_get(api, slug, secret) == 401  # at once on this instance
    assert api.http.delete(f"{keys_url(slug)}/key_0123456789abcdef", headers=full).status_code == 404
    other = unique_slug("named_other")
    assert api.http.delete(f"{keys_url(other)}/{body['key_id']}", headers=full).status_code == 403


def test_a_key_in_its_grace_period_can_read_and_run_but_not_manage_keys(api: Api) -> None:
    slug = unique_slug("grace")
    leaked = api.onboard(slug)
    rotated = api.http.post(
        f"{keys_url(slug)}/rotate", headers={"X-API-Key": leaked}, json={"grace_period_seconds": 600}
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["name"] == "default" and new["rotated_from_key_id"] == new["replaced_key_id"]
    old = {"X-API-Key": leaked}
    assert org_get(api, slug, leaked) == 200  # still reads during the grace period
    assert api.http.get("/api/v1/pipelines/runs", headers=old).status_code == 200
    assert api.run(slug, leaked, {"date": "2026-02-30"}).status_code == 422  # may still run (past auth)
    attempts = [
        api.http.post(f"{keys_url(slug)}/rotate", headers=old, json={}),
        api.http.post(f"{keys_url(slug)}/rotate", headers=old, json={"key_id": new["key_id"]}),
        create(api, slug, old, name="backdoor"),
        api.http.delete(f"{keys_url(slug)}/{new['key_id']}", headers=old),
    ]
    for refused in attempts:
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"] == "key_superseded"
    assert org_get(api, slug, new["api_key"]) == 200  # the owner keeps the org
    listed = {k["key_id"]: k for k in api.http.get(keys_url(slug), headers=old).json()["keys"]}
    assert listed[new["replaced_key_id"]]["replaced_by_key_id"] == new["key_id"]
    assert listed[new["key_id"]]["status"] == "ACTIVE" and len(listed) == 2  # no key was added
    # The owner ends the grace period early.
    ended = api.http.delete(f"{keys_url(slug)}/{new['replaced_key_id']}", headers={"X-API-Key": new["api_key"]})
    assert ended.status_code == 200, ended.text
    assert org_get(api, slug, leaked) == 401


def test_the_org_cannot_revoke_or_narrow_its_last_full_key_but_the_admin_can(api: Api) -> None:
    slug = unique_slug("lastkey")
    first = api.onboard(slug)
    headers = {"X-API-Key": first}
    first_id = api.http.get(keys_url(slug), headers=headers).json()["keys"][0]["key_id"]
    for refused in (
        api.http.delete(f"{keys_url(slug)}/{first_id}", headers=headers),
        api.http.post(f"{keys_url(slug)}/rotate", headers=headers, json={"scopes": ["org:read"]}),
    ):
        assert refused.status_code == 409 and refused.json()["error"] == "last_full_key", refused.text
    temporary = create(
        api, slug, headers, name="temporary", expires_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat()
    )
    assert temporary.status_code == 201  # a full key that expires does not count as the org's guarantee
    assert api.http.delete(f"{keys_url(slug)}/{first_id}", headers=headers).status_code == 409
    second = create(api, slug, headers, name="second")
    assert second.status_code == 201 and second.json()["scopes"] == ALL_SCOPES
    assert api.http.delete(f"{keys_url(slug)}/{first_id}", headers=headers).status_code == 200
    assert org_get(api, slug, first) == 401
    last = {"X-API-Key": second.json()["api_key"]}
    assert api.http.delete(f"{keys_url(slug)}/{second.json()['key_id']}", headers=last).status_code == 409
    by_admin = api.http.delete(
        f"/api/v1/admin/organizations/{slug}/api-keys/{second.json()['key_id']}", headers=api.admin
    )
    assert by_admin.status_code == 200, by_admin.text
    assert org_get(api, slug, second.json()["api_key"]) == 401


def test_a_key_manages_only_keys_within_its_scopes(api: Api) -> None:
    slug = unique_slug("within")
    full = {"X-API-Key": api.onboard(slug)}
    writer = create(api, slug, full, name="settings", scopes=["org:read", "org:write"]).json()
    full_id = next(
        k["key_id"] for k in api.http.get(keys_url(slug), headers=full).json()["keys"] if k["name"] == "default"
    )
    as_writer = {"X-API-Key": writer["api_key"]}
    for refused in (
        api.http.delete(f"{keys_url(slug)}/{full_id}", headers=as_writer),
        api.http.post(f"{keys_url(slug)}/rotate", headers=as_writer, json={"key_id": full_id}),
    ):
        assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope", refused.text
    assert create(api, slug, as_writer, name="reader", scopes=["org:read"]).status_code == 201


def test_key_lists_are_paged(api: Api) -> None:
    slug = unique_slug("pages")
    full = {"X-API-Key": api.onboard(slug)}
    for n in range(4):
        assert create(api, slug, full, name=f"k{n}", scopes=["org:read"]).status_code == 201
    seen: list[str] = []
    token = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2, **({"page_token": token} if token else {})}
        page = api.http.get(keys_url(slug), headers=full, params=params)
        assert page.status_code == 200, page.text
        seen += [k["name"] for k in page.json()["keys"]]
        assert page.json()["count"] == len(page.json()["keys"]) <= 2
        token = page.json()["next_page_token"]
        if token is None:
            break
    assert sorted(seen) == ["default", "k0", "k1", "k2", "k3"] and len(seen) == 5
    bad = api.http.get(keys_url(slug), headers=full, params={"page_token": "bm90LWEtdG9rZW4"})
    assert bad.status_code == 422 and bad.json()["error"] == "invalid_page_token"
    other = api.http.get(
        "/api/v1/pipelines/runs",
        headers=full,
        params={
            "page_token": api.http.get(keys_url(slug), headers=full, params={"limit": 1}).json()["next_page_token"]
        },
    )
    assert other.status_code == 422  # a token only works for the list it came from
    assert api.http.get(keys_url(slug), headers=full, params={"limit": 201}).status_code == 422


def test_revocation_reaches_another_instance_within_the_key_cache_ttl(backend: Backend, tmp_path: Path) -> None:
    """Two instances on one warehouse (BigQuery only: a DuckDB file has one process by design)."""
    if backend.name != "bigquery":
        pytest.skip("DuckDB allows one process per file: there is no second instance to reach")
    ttl = 2.0
    first = backend.new_server(tmp_path / "a", None, KEY_CACHE_TTL_SECONDS=str(ttl))
    second = None
    try:
        api = Api(first)
        assert api.bootstrap().status_code == 200
        second = backend.new_server(tmp_path / "b", None, KEY_CACHE_TTL_SECONDS=str(ttl))
        second.env["GCP_PROJECT_ID"] = first.env["GCP_PROJECT_ID"]
        second.restart()  # the same project as the first: the same central tables
        slug = unique_slug("ttl")
        full = {"X-API-Key": api.onboard(slug)}
        spare = create(api, slug, full, name="spare").json()
        other = Api(second)
        assert org_get(other, slug, spare["api_key"]) == 200  # cached on the second instance
        assert api.http.delete(f"{keys_url(slug)}/{spare['key_id']}", headers=full).status_code == 200
        revoked_at = time.monotonic()
        while org_get(other, slug, spare["api_key"]) == 200:
            assert time.monotonic() - revoked_at < ttl + 1.5, "the other instance kept accepting the revoked key"
            time.sleep(0.1)
        assert org_get(other, slug, spare["api_key"]) == 401
    finally:
        first.stop()
        if second is not None:
            second.stop()
