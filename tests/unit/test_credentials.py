"""Org service-account credentials, offline: validation, encryption at rest, per-org selection, and
that one org can never use another's.

The services run in-process on a real DuckDB file with the local AES-GCM KMS. Per-org selection
needs a warehouse with principals (BigQuery); here the shared warehouse is DuckDB told it has them,
and its ``with_credentials`` is the real ``BigQueryWarehouse.with_credentials``: the BigQuery
client is built from the stored key file without touching the network (no token is requested).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
from collections.abc import Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pytest
from pydantic import ValidationError

from src.app.schemas.credentials import GcpServiceAccountKey
from src.core.engine.base import Warehouse
from src.core.engine.bigquery_backend import BigQueryWarehouse
from src.core.engine.duckdb_backend import CAPABILITIES as DUCKDB_CAPABILITIES
from src.core.engine.duckdb_backend import DuckDBWarehouse
from src.core.engine.sql import TableRef
from src.core.errors import (
    NotFoundError,
    TerminalWarehouseError,
    TransientWarehouseError,
    ValidationFailedError,
    WarehouseAccessDeniedError,
)
from src.core.security.kms import DecryptionError, decrypt_text
from src.core.services import container
from src.core.services.billing_source import check_billing_table
from src.core.services.container import Services, build_services
from src.core.services.credentials import (
    get_gcp_credentials,
    revoke_gcp_credentials,
    store_gcp_credentials,
)
from src.core.services.setup import SetupService
from src.core.settings import Settings
from tests.gcp_keys import key_file, secret_fragments

T = TypeVar("T")
PROJECT = "convergence-local"
ORG_A, ORG_B = "org_alpha", "org_beta"
SERVICE_SA = "convergence-runner@platform-proj.iam.gserviceaccount.com"


class PrincipalsDuckDB(DuckDBWarehouse):
    """DuckDB that claims per-org principals: clients come from the real BigQuery backend."""

    capabilities = dataclasses.replace(DUCKDB_CAPABILITIES, name="duckdb-with-principals", org_credentials=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.grants: list[tuple[str, str, bool]] = []
        self.denied: set[str] = set()
        self.checked: list[str] = []  # accounts whose key was checked, in order (with the grants)
        self.refused: set[str] = set()  # accounts whose key does not work
        self.failing_grants: set[str] = set()  # accounts whose grant is made, then the call fails
        self.events: list[str] = []

    def with_credentials(self, service_account_info: Mapping[str, Any]) -> Warehouse:
        bigquery = BigQueryWarehouse(
            project=self.project, location="US", api_endpoint=None, maximum_bytes_billed=1, timeout_seconds=10
        )
        return bigquery.with_credentials(service_account_info)

    async def check_credentials(self, service_account_info: Mapping[str, Any]) -> None:
        email = str(service_account_info["client_email"])
        self.events.append(f"check {email}")
        if email in self.refused:
            raise TerminalWarehouseError("RefreshError: invalid_grant: Invalid JWT Signature.")

    async def set_dataset_writer(self, dataset: str, member_email: str, *, granted: bool) -> bool:
        self.grants.append((dataset, member_email, granted))
        self.events.append(f"{'grant' if granted else 'take back'} {member_email}")
        if granted and member_email in self.failing_grants:
            raise TransientWarehouseError("the connection dropped after the dataset was updated")
        return True

    async def table_exists(self, ref: TableRef) -> bool:
        if str(ref) in self.denied:
            raise WarehouseAccessDeniedError("Access Denied: Table: Permission bigquery.tables.get denied")
        return await super().table_exists(ref)


class Harness:
    """One event loop, one services container (as the lifespan builds it), two onboarded orgs."""

    def __init__(self, tmp: Path, *, principals: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        self.loop = asyncio.new_event_loop()
        self.settings = Settings(
            duckdb_path=tmp / "warehouse.duckdb",
            local_kms_key_path=tmp / "kms.key",
            gcp_project_id=PROJECT,
            service_account_email=SERVICE_SA,
            key_cache_ttl_seconds=30,
        )
        if principals:
            monkeypatch.setattr(
                container,
                "build_warehouse",
                lambda s, _calls=None: PrincipalsDuckDB(path=s.duckdb_path, project=s.gcp_project_id),
            )
        self.services: Services = build_services(self.settings)
        self.run(self.services.warehouse.start())
        setup = SetupService(self.services)
        self.run(setup.bootstrap(force_recreate_dataset=False, force_recreate_tables=False))
        for slug in (ORG_A, ORG_B):
            self.run(
                setup.onboard(
                    {
                        "org_slug": slug,
                        "company_name": slug,
                        "admin_email": f"ops@{slug.replace('_', '-')}.example",
                        "subscription_plan": "STARTER",
                    }
                )
            )

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.services.org_warehouses.close())
        self.run(self.services.kms.close())
        self.run(self.services.warehouse.close())
        self.loop.close()

    @property
    def warehouse(self) -> PrincipalsDuckDB:
        assert isinstance(self.services.warehouse, PrincipalsDuckDB)
        return self.services.warehouse

    def rows(self, org_slug: str) -> list[dict[str, Any]]:
        return self.run(
            self.services.warehouse.query(
                f"SELECT * FROM `{PROJECT}.organizations.org_cloud_credentials` WHERE org_slug = @org "
                "ORDER BY created_at",
                {"org": org_slug},
            )
        )


@pytest.fixture
def bq_like(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    harness = Harness(tmp_path, principals=True, monkeypatch=monkeypatch)
    yield harness
    harness.close()


@pytest.fixture
def plain_duckdb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    harness = Harness(tmp_path, principals=False, monkeypatch=monkeypatch)
    yield harness
    harness.close()


def stored(harness: Harness, org_slug: str, data: dict[str, Any]) -> dict[str, Any]:
    return harness.run(
        store_gcp_credentials(harness.services, org_slug, GcpServiceAccountKey.model_validate(data).document())
    )


def email_of(warehouse: Warehouse) -> str:
    assert isinstance(warehouse, BigQueryWarehouse)
    return str(warehouse.client._credentials.service_account_email)


# --- validation ----------------------------------------------------------------------------------


def test_a_google_key_file_validates_and_its_secret_is_hidden() -> None:
    data = key_file()
    model = GcpServiceAccountKey.model_validate(data)
    assert model.document() == {**data, "private_key": data["private_key"].strip() + "\n"}
    assert data["private_key"] not in repr(model) and data["private_key"] not in str(model)


def _rsa_1024() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


BAD_SHAPES: list[tuple[str, dict[str, Any], str]] = [
    ("not a service account", {"type": "authorized_user"}, "type"),
    ("no private key", {"private_key": None}, "private_key"),
    ("not PEM", {"private_key": "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"}, "private_key"),
    ("PEM that does not parse", {"private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"},
     "private_key"),
    ("PKCS#1 header", {"private_key": "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----"},
     "private_key"),
    ("weak key", {"private_key": _rsa_1024()}, "private_key"),
    ("user e-mail", {"client_email": "alice@gmail.com"}, "client_email"),
    ("look-alike domain", {"client_email": "x-loader@p.iam.gserviceaccount.com.evil.example"}, "client_email"),
    ("token endpoint over http", {"token_uri": "http://oauth2.googleapis.com/token"}, "token_uri"),
    ("token endpoint elsewhere", {"token_uri": "https://attacker.example/token"}, "token_uri"),
    ("token endpoint with a port", {"token_uri": "https://oauth2.googleapis.com:8443/token"}, "token_uri"),
    ("unknown field", {"private_key_password": "x"}, "private_key_password"),
    ("numeric id as text", {"client_id": "abc"}, "client_id"),
    ("key id", {"private_key_id": "not-hex"}, "private_key_id"),
    ("project id", {"project_id": "Bad_Project"}, "project_id"),
    ("cert URL over http", {"client_x509_cert_url": "http://www.googleapis.com/x"}, "client_x509_cert_url"),
    ("huge key", {"private_key": "-----BEGIN PRIVATE KEY-----\n" + "A" * 9000 + "\n-----END PRIVATE KEY-----"},
     "private_key"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "field"), BAD_SHAPES, ids=[c[0] for c in BAD_SHAPES])
def test_bad_shapes_are_refused_naming_the_field_never_the_secret(
    case: str, change: dict[str, Any], field: str
) -> None:
    data = key_file(**change)
    with pytest.raises(ValidationError) as info:
        GcpServiceAccountKey.model_validate(data)
    errors = info.value.errors()
    assert field in {str(e["loc"][0]) for e in errors if e["loc"]}, errors
    shown = str(info.value) + json.dumps([{"loc": e["loc"], "msg": e["msg"]} for e in errors])
    for fragment in secret_fragments(key_file()):
        assert fragment not in shown


# --- store, read, revoke; encryption at rest ----------------------------------------------------


def test_stored_encrypted_bound_to_the_org_and_never_returned(
    plain_duckdb: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = plain_duckdb
    data = key_file("alpha-loader")
    with caplog.at_level(logging.DEBUG):
        meta = stored(h, ORG_A, data)
    assert meta["principal"] == data["client_email"] and meta["status"] == "ACTIVE"
    assert meta["project_id"] == "customer-proj"
    assert "private_key" not in json.dumps(meta, default=str)
    (row,) = h.rows(ORG_A)
    assert row["kms_key_name"] == "local:aes-256-gcm" and row["provider"] == "GCP"
    assert row["credential_type"] == "service_account" and row["principal"] == data["client_email"]
    for column, value in row.items():
        for fragment in secret_fragments(data):
            assert fragment not in str(value), f"org_cloud_credentials.{column} holds the private key"
            assert fragment not in caplog.text
    blob = str(row["encrypted_credential"])
    kms = h.services.kms
    document = json.loads(h.run(decrypt_text(kms, blob, org_slug=ORG_A, purpose="gcp_credentials")))
    assert document["private_key"].strip() == data["private_key"].strip()
    with pytest.raises(DecryptionError):  # the ciphertext is bound to its org ...
        h.run(decrypt_text(kms, blob, org_slug=ORG_B, purpose="gcp_credentials"))
    with pytest.raises(DecryptionError):  # ... and to its purpose
        h.run(decrypt_text(kms, blob, org_slug=ORG_A, purpose="api_key"))
    assert base64.b64decode(blob)  # stored as base64 ciphertext


def test_the_private_key_is_not_in_the_duckdb_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(tmp_path, principals=False, monkeypatch=monkeypatch)
    data = key_file("file-check")
    try:
        stored(h, ORG_A, data)
    finally:
        h.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.rglob("warehouse.duckdb*") if p.is_file())
    assert raw
    for fragment in secret_fragments(data):
        assert fragment.encode() not in raw
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        dump = json.dumps(con.execute("SELECT * FROM organizations.org_cloud_credentials").fetchall(), default=str)
    finally:
        con.close()
    assert data["client_email"] in dump
    assert not any(fragment in dump for fragment in secret_fragments(data))


def test_replace_then_revoke(plain_duckdb: Harness) -> None:
    h = plain_duckdb
    first, second = key_file("first-loader"), key_file("second-loader")
    stored(h, ORG_A, first)
    stored(h, ORG_A, second)
    rows = h.rows(ORG_A)
    assert [(r["principal"], r["status"]) for r in rows] == [
        (first["client_email"], "REVOKED"),
        (second["client_email"], "ACTIVE"),
    ]
    assert rows[0]["encrypted_credential"] is None
    assert h.run(get_gcp_credentials(h.services, ORG_A))["principal"] == second["client_email"]
    revoked = h.run(revoke_gcp_credentials(h.services, ORG_A))
    assert revoked["status"] == "REVOKED" and revoked["principal"] == second["client_email"]
    assert all(r["status"] == "REVOKED" and r["encrypted_credential"] is None for r in h.rows(ORG_A))
    assert h.run(get_gcp_credentials(h.services, ORG_A))["status"] == "REVOKED"
    with pytest.raises(NotFoundError):
        h.run(revoke_gcp_credentials(h.services, ORG_A))
    with pytest.raises(NotFoundError):
        h.run(get_gcp_credentials(h.services, ORG_B))
    with pytest.raises(NotFoundError):
        h.run(get_gcp_credentials(h.services, "org_nobody"))


# --- per-org selection --------------------------------------------------------------------------


def test_duckdb_ignores_stored_credentials(plain_duckdb: Harness) -> None:
    h = plain_duckdb
    stored(h, ORG_A, key_file("alpha-loader"))
    assert h.run(h.services.org_warehouses.for_org(ORG_A)) is h.services.warehouse


def test_each_org_gets_its_own_account_or_the_shared_warehouse(bq_like: Harness) -> None:
    h = bq_like
    alpha = key_file("alpha-loader", project="alpha-proj")
    stored(h, ORG_A, alpha)
    assert h.warehouse.grants == [(f"{ORG_A}_local", alpha["client_email"], True)]
    select = h.services.org_warehouses.for_org
    wh_a = h.run(select(ORG_A))
    assert wh_a is not h.services.warehouse
    assert email_of(wh_a) == alpha["client_email"]
    assert isinstance(wh_a, BigQueryWarehouse)
    assert wh_a.client.project == "alpha-proj"  # jobs run in (and bill) the org's own project
    assert wh_a.project == PROJECT  # table names stay in the service's project
    assert h.run(select(ORG_A)) is wh_a  # cached
    assert h.run(select(ORG_B)) is h.services.warehouse
    assert h.run(select(None)) is h.services.warehouse


def test_a_change_invalidates_the_cached_client(bq_like: Harness) -> None:
    h = bq_like
    select = h.services.org_warehouses.for_org
    stored(h, ORG_A, key_file("alpha-loader"))
    first = h.run(select(ORG_A))
    replacement = key_file("alpha-other", project="alpha-proj")
    stored(h, ORG_A, replacement)
    second = h.run(select(ORG_A))
    assert second is not first and email_of(second) == replacement["client_email"]
    # the earlier account's write access on the org dataset is taken back
    assert (f"{ORG_A}_local", "alpha-loader@customer-proj.iam.gserviceaccount.com", False) in h.warehouse.grants
    h.run(revoke_gcp_credentials(h.services, ORG_A))
    assert h.run(select(ORG_A)) is h.services.warehouse
    assert h.warehouse.grants[-1] == (f"{ORG_A}_local", replacement["client_email"], False)


def test_another_instance_sees_a_revocation_after_the_ttl(bq_like: Harness) -> None:
    h = bq_like
    selection = type(h.services.org_warehouses)(h.services, ttl_seconds=0)  # "another instance", no TTL
    stored(h, ORG_A, key_file("alpha-loader"))
    assert email_of(h.run(selection.for_org(ORG_A))).startswith("alpha-loader@")
    h.run(h.services.warehouse.execute(  # revoked behind this instance's back
        f"UPDATE `{PROJECT}.organizations.org_cloud_credentials` SET status = 'REVOKED' WHERE org_slug = @org",
        {"org": ORG_A},
    ))  # fmt: skip
    assert h.run(selection.for_org(ORG_A)) is h.services.warehouse
    h.run(selection.close())


def test_another_org_can_never_use_them(bq_like: Harness) -> None:
    h = bq_like
    stored(h, ORG_A, key_file("alpha-loader"))
    # Selection for B never returns A's account ...
    assert h.run(h.services.org_warehouses.for_org(ORG_B)) is h.services.warehouse
    # ... even when A's row is copied into B's name: the ciphertext is bound to A.
    h.run(h.services.warehouse.execute(
        f"INSERT INTO `{PROJECT}.organizations.org_cloud_credentials` "
        "SELECT * REPLACE ('cred_copied' AS credential_id, @b AS org_slug) "
        f"FROM `{PROJECT}.organizations.org_cloud_credentials` WHERE org_slug = @a",
        {"a": ORG_A, "b": ORG_B},
    ))  # fmt: skip
    h.run(h.services.org_warehouses.invalidate(ORG_B))  # B's "none" is cached: look again
    with pytest.raises(DecryptionError) as info:
        h.run(h.services.org_warehouses.for_org(ORG_B))
    assert "PRIVATE KEY" not in info.value.message


# --- billing source: the grant to make names the account ---------------------------------------


def test_access_denied_names_the_services_account_and_the_grant(bq_like: Harness) -> None:
    h = bq_like
    table = f"{PROJECT}.customer_billing.gcp_billing_export_v1_01A2B3_C4D5E6_F7A8B9"
    h.warehouse.denied.add(table)
    with pytest.raises(ValidationFailedError) as info:
        h.run(check_billing_table(h.services, table, org_slug=ORG_B))
    message = info.value.message
    assert info.value.code == "billing_table_access_denied"
    assert SERVICE_SA in message
    grant = f'GRANT `roles/bigquery.dataViewer` ON SCHEMA `{PROJECT}.customer_billing` TO "serviceAccount:{SERVICE_SA}"'
    assert grant in message
    assert f"bq add-iam-policy-binding --member=serviceAccount:{SERVICE_SA} --role=roles/bigquery.dataViewer" in message


def test_access_denied_names_the_orgs_own_account_when_it_has_one(
    bq_like: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = bq_like
    alpha = key_file("alpha-loader")
    stored(h, ORG_A, alpha)
    table = f"{PROJECT}.customer_billing.gcp_billing_export_v1_01A2B3_C4D5E6_F7A8B9"
    checked_as: list[str] = []

    async def denied(self: BigQueryWarehouse, ref: TableRef) -> bool:  # the check runs as A's account
        checked_as.append(email_of(self))
        raise WarehouseAccessDeniedError("Access Denied")

    monkeypatch.setattr(BigQueryWarehouse, "table_exists", denied)
    with pytest.raises(ValidationFailedError) as info:
        h.run(check_billing_table(h.services, table, org_slug=ORG_A))
    assert checked_as == [alpha["client_email"]]
    assert f"serviceAccount:{alpha['client_email']}" in info.value.message
    assert SERVICE_SA not in info.value.message


def test_a_key_that_does_not_work_is_refused_before_anything_is_stored(bq_like: Harness) -> None:
    data = key_file("broken-loader")
    bq_like.warehouse.refused.add(data["client_email"])
    with pytest.raises(ValidationFailedError) as refused:
        bq_like.run(store_gcp_credentials(bq_like.services, ORG_A, data))
    assert refused.value.code == "credentials_not_working"
    assert bq_like.warehouse.events == [f"check {data['client_email']}"]  # no grant was attempted
    assert bq_like.rows(ORG_A) == []
    for fragment in secret_fragments(data):
        assert fragment not in refused.value.message


def test_the_grant_comes_after_the_check_and_the_store(bq_like: Harness) -> None:
    data = key_file("ordered-loader")
    bq_like.run(store_gcp_credentials(bq_like.services, ORG_A, data))
    assert bq_like.warehouse.events == [f"check {data['client_email']}", f"grant {data['client_email']}"]
    assert [r["status"] for r in bq_like.rows(ORG_A)] == ["ACTIVE"]


def test_a_failed_grant_leaves_no_grant_and_no_active_credentials(bq_like: Harness) -> None:
    kept = key_file("kept-loader")
    bq_like.run(store_gcp_credentials(bq_like.services, ORG_A, kept))
    data = key_file("halfway-loader")
    bq_like.warehouse.failing_grants.add(data["client_email"])
    with pytest.raises(TransientWarehouseError):
        bq_like.run(store_gcp_credentials(bq_like.services, ORG_A, data))
    email = data["client_email"]
    assert bq_like.warehouse.events[-3:] == [f"check {email}", f"grant {email}", f"take back {email}"]
    statuses = {r["principal"]: r["status"] for r in bq_like.rows(ORG_A)}
    assert statuses == {kept["client_email"]: "ACTIVE", email: "REVOKED"}  # the earlier one still works
    assert ("org_alpha_local", kept["client_email"], False) not in bq_like.warehouse.grants
