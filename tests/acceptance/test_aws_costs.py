"""AWS Data Exports (CUR 2.0) over HTTP, on both backends, against a real S3 peer (moto's server,
IAM authentication on): each org has its own bucket and an IAM user that may read only that bucket;
the service's own AWS identity (its environment) may read everything and must never be used for
an org. Expected figures come from the demo generator's own counts, not from our SQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.aws_export import (
    BP,
    EXPORT,
    PREFIX,
    costs,
    days,
    deliver,
    dest_checks,
    expected,
    money,
    month_days,
    new_org,
    rewrite_parquet,
    run,
    set_source,
    upload,
    write,
)
from tests.backends import Backend
from tests.s3_peer import ALL, Keys, MotoServer, read_policy
from tests.server import ADMIN_KEY, Api, ServerProcess


@pytest.fixture(scope="module")
def platform(moto: MotoServer) -> Keys:
    """The service's own AWS identity: allowed everything (so any read of an org's data that used
    it instead of the org's credentials would succeed where the test expects a refusal)."""
    return moto.user(f"platform-{os.getpid()}", ALL)


@pytest.fixture(scope="module")
def aws_server(
    backend: Backend, moto: MotoServer, platform: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    srv = backend.new_server(
        tmp_path_factory.mktemp(f"aws-{backend.name}"), None, AWS_ENDPOINT_URL=moto.endpoint, **platform.env()
    )
    assert Api(srv).bootstrap().status_code == 200
    yield srv
    srv.stop()


@pytest.fixture
def api(aws_server: ServerProcess) -> Api:
    return Api(aws_server)


def test_a_period_loads_exactly_and_a_rerun_changes_nothing(api: Api, moto: MotoServer, tmp_path: Path) -> None:
    org = new_org(api, moto)
    stats = deliver(moto, org, tmp_path, through_day=4, max_rows_per_file=150)  # several parts
    assert set_source(api, org).status_code == 200
    assert len(stats.data_keys) > 1
    views = [run(api, org) for _ in range(2)]
    for view in views:
        assert view["status"] == "COMPLETED", view["error_message"]
        assert view["parameters"] == {
            "start_date": f"{BP}-01",
            "end_date": f"{BP}-31",
            "start_period": BP,
            "end_period": BP,
        }
        step = view["steps"][0]
        assert step["rows_processed"] == stats.rows
        (manifest,) = step["result"]["manifests"]
        assert manifest["execution_id"] == stats.execution_id and manifest["files"] == len(stats.data_keys)
        checks = dest_checks(view)
        assert [c["usage_date"] for c in checks] == month_days()  # every day of the period, 0 = 0 included
        assert all(c["passed"] for c in checks)
        want = expected(stats)
        for check in checks:
            rows, cost = want.get(check["usage_date"], (0, 0))
            assert (check["source_rows"], check["dest_rows"]) == (rows, rows)
            assert money(check["source_cost"]) == money(check["dest_cost"]) == money(cost)
    assert days(api, org) == expected(stats)
    totals = costs(api, org)["totals"]
    assert totals["row_count"] == stats.rows and money(totals["net_cost"]) == money(stats.total_cost)
    assert money(totals["gross_cost"]) + money(totals["credits"]) == money(totals["net_cost"])
    assert totals["credits"] < 0  # credits, refunds and EDP discounts are line items of their own


def test_both_providers_answer_per_currency(api: Api, moto: MotoServer, tmp_path: Path) -> None:
    org = new_org(api, moto)
    stats = deliver(moto, org, tmp_path, through_day=2)
    assert set_source(api, org).status_code == 200
    assert run(api, org)["status"] == "COMPLETED"
    both = costs(api, org, provider="both")
    assert both["provider"] == "both" and set(both["tables"]) == {"gcp", "aws"}
    assert {d["provider"] for d in both["days"]} == {"aws"}  # the org has no GCP rows
    assert both["totals_by_provider"]["gcp"] == {}
    assert money(both["totals_by_currency"]["USD"]["net_cost"]) == money(stats.total_cost)
    assert costs(api, org, provider="gcp")["days"] == []
    by_account = costs(api, org, group_by="project")
    assert {d["group_id"] for d in by_account["days"]} == {"210987654321", "345678901234", "456789012345"}
    assert {d["group_name"] for d in by_account["days"]} == {"acme-management", "acme-production", "acme-staging"}
    by_service = costs(api, org, group_by="service")["days"]
    assert any(d["group_id"] == "AmazonEC2" and d["group_name"] == "Amazon Elastic Compute Cloud" for d in by_service)
    assert sum(d["row_count"] for d in by_service) == stats.rows


@pytest.mark.parametrize("layout", ["overwrite", "create_new"])
def test_a_newer_delivery_replaces_the_older_completely(
    api: Api, moto: MotoServer, tmp_path: Path, layout: str
) -> None:
    org = new_org(api, moto)
    first = deliver(moto, org, tmp_path, through_day=3, layout=layout, max_rows_per_file=120)  # 3+ parts
    assert set_source(api, org).status_code == 200
    assert run(api, org)["status"] == "COMPLETED"
    assert days(api, org) == expected(first)
    second = deliver(moto, org, tmp_path, through_day=9, layout=layout)  # one part; restates day 1 and more
    assert len(second.data_keys) == 1 < len(first.data_keys)
    if layout == "overwrite":  # the first delivery's later parts are still in the data folder
        assert set(first.data_keys) - set(second.data_keys) <= set(moto.keys(org.bucket))
    view = run(api, org)
    assert view["status"] == "COMPLETED", view["error_message"]
    assert view["steps"][0]["result"]["manifests"][0]["execution_id"] == second.execution_id
    assert days(api, org) == expected(second)  # nothing of the first delivery is left, nothing twice
    assert expected(first)[f"{BP}-01"] != expected(second)[f"{BP}-01"]  # day 1 was restated


def test_a_missing_manifest_fails_clearly_and_changes_nothing(api: Api, moto: MotoServer, tmp_path: Path) -> None:
    org = new_org(api, moto)
    stats = deliver(moto, org, tmp_path, through_day=2)
    assert set_source(api, org).status_code == 200
    assert run(api, org)["status"] == "COMPLETED"
    before = days(api, org)
    failed = run(api, org, {"billing_period": "2026-09"})  # never delivered
    assert failed["status"] == "FAILED"
    assert "no manifest for billing period 2026-09" in failed["error_message"]
    assert f"s3://{org.bucket}/{PREFIX}/{EXPORT}/metadata/BILLING_PERIOD=2026-09/" in failed["error_message"]
    moto.delete(org.bucket, stats.manifest_key)
    failed = run(api, org)
    assert failed["status"] == "FAILED" and f"no manifest for billing period {BP}" in failed["error_message"]
    assert days(api, org) == before == expected(stats)


def test_a_manifest_listing_a_missing_file_fails_and_changes_nothing(
    api: Api, moto: MotoServer, tmp_path: Path
) -> None:
    org = new_org(api, moto)
    first = deliver(moto, org, tmp_path, through_day=2)
    assert set_source(api, org).status_code == 200
    assert run(api, org)["status"] == "COMPLETED"
    root, second = write(tmp_path, org, through_day=5, layout="create_new", max_rows_per_file=200)
    upload(moto, org, root, second)
    moto.delete(org.bucket, second.data_keys[-1])
    failed = run(api, org)
    assert failed["status"] == "FAILED"
    assert f"lists s3://{org.bucket}/{second.data_keys[-1]}, which does not exist" in failed["error_message"]
    assert failed["steps"][0]["attempts"] == 1  # not retried: it is deterministic
    assert days(api, org) == expected(first)


def test_wrong_credentials_are_refused_at_configuration_and_fail_a_load(
    api: Api, moto: MotoServer, tmp_path: Path
) -> None:
    org = new_org(api, moto, credentials=False)
    route = f"/api/v1/organizations/{org.slug}/credentials/aws"
    unknown = api.http.put(route, headers=org.headers, json=Keys("AKIA" + "Z" * 16, "x" * 40).body())
    assert unknown.status_code == 422 and unknown.json()["error"] == "aws_credentials_invalid", unknown.text
    bad_secret = api.http.put(route, headers=org.headers, json=Keys(org.keys.access_key_id, "y" * 40).body())
    assert bad_secret.status_code == 422 and bad_secret.json()["error"] == "aws_credentials_invalid"
    assert api.http.get(route, headers=org.headers).status_code == 404  # nothing was stored
    no_creds = set_source(api, org)
    assert no_creds.status_code == 422 and no_creds.json()["error"] == "aws_credentials_not_configured"
    stored = api.http.put(route, headers=org.headers, json=org.keys.body())
    assert stored.status_code == 200, stored.text
    meta = stored.json()
    assert meta["principal"] == f"arn:aws:iam::123456789012:user/{org.user}" and meta["account_id"] == "123456789012"
    assert (meta["provider"], meta["credential_type"], meta["status"]) == ("AWS", "access_key", "ACTIVE")
    stats = deliver(moto, org, tmp_path, through_day=2)
    assert set_source(api, org).status_code == 200
    assert run(api, org)["status"] == "COMPLETED"
    moto.delete_key(org.user, org.keys)  # the customer deletes the key in IAM
    failed = run(api, org)
    assert failed["status"] == "FAILED"
    assert "AWS refused the credentials" in failed["error_message"] and "credentials/aws" in failed["error_message"]
    assert days(api, org) == expected(stats)
    for text in (stored.text, api.http.get(route, headers=org.headers).text, failed["error_message"], api.server.log()):
        assert org.keys.secret_access_key not in text


def test_another_orgs_bucket_is_refused(api: Api, moto: MotoServer, tmp_path: Path) -> None:
    owner = new_org(api, moto)
    deliver(moto, owner, tmp_path, through_day=2)
    assert set_source(api, owner).status_code == 200
    intruder = new_org(api, moto)
    # The intruder's own credentials cannot read the owner's bucket; the service's identity could,
    # and is not used.
    refused = set_source(api, intruder, bucket=owner.bucket)
    assert refused.status_code == 422 and refused.json()["error"] == "aws_source_access_denied", refused.text
    assert intruder.user in refused.json()["message"]
    by_admin = api.http.put(
        f"/api/v1/organizations/{intruder.slug}/aws-source",
        headers={"X-Admin-Key": ADMIN_KEY},
        json={"bucket": owner.bucket, "prefix": PREFIX, "export_name": EXPORT, "region": "us-east-1"},
    )
    assert by_admin.status_code == 422  # checked with the org's credentials whoever asks
    # Credentials that can read it (a shared account) still cannot take an export another org uses.
    shared = new_org(api, moto, credentials=False)
    keys = moto.user(f"shared-{shared.slug}", read_policy(shared.bucket, owner.bucket))
    assert (
        api.http.put(
            f"/api/v1/organizations/{shared.slug}/credentials/aws", headers=shared.headers, json=keys.body()
        ).status_code
        == 200
    )
    taken = set_source(api, shared, bucket=owner.bucket)
    assert taken.status_code == 409 and taken.json()["error"] == "aws_source_in_use"
    unconfigured = api.run(intruder.slug, intruder.key, {"billing_period": BP}, pipeline="aws/cost/cost_billing")
    assert unconfigured.status_code == 422 and unconfigured.json()["error"] == "aws_source_not_configured"


def test_a_source_is_checked_before_it_is_kept(api: Api, moto: MotoServer, tmp_path: Path) -> None:
    org = new_org(api, moto)
    nothing = set_source(api, org)
    assert nothing.status_code == 422 and nothing.json()["error"] == "aws_export_not_found"
    stats = deliver(moto, org, tmp_path, through_day=1)
    typo = set_source(api, org, export_name="acme-cur2-daily")
    assert typo.status_code == 422 and typo.json()["error"] == "aws_export_not_found"
    ok = set_source(api, org)
    assert ok.status_code == 200, ok.text
    assert ok.json()["billing_periods"] == [BP] and ok.json()["export_uri"] == f"s3://{org.bucket}/{PREFIX}/{EXPORT}"
    got = api.http.get(f"/api/v1/organizations/{org.slug}/aws-source", headers=org.headers).json()
    assert (got["bucket"], got["prefix"], got["export_name"], got["set_by"]) == (org.bucket, PREFIX, EXPORT, "org")
    future = api.run(org.slug, org.key, {"billing_period": "2099-01"}, pipeline="aws/cost/cost_billing")
    assert future.status_code == 422
    dry = api.run(org.slug, org.key, {"billing_period": BP, "dry_run": True}, pipeline="aws/cost/cost_billing")
    assert dry.status_code == 200, dry.text
    statement, focus = dry.json()["statements"]
    # The FOCUS rebuild reads the org's AWS cost table, which it does not have yet.
    assert focus["step_id"] == "build_focus" and focus["rows"] is None and focus["bytes_processed"] is None
    assert statement["files"] == len(stats.data_keys) and statement["bytes_to_download"] > 0
    assert BP in statement["statement"] and stats.manifest_key in statement["statement"]
    assert api.http.get("/api/v1/pipelines/runs", headers=org.headers).json()["runs"] == []  # nothing started


def test_columns_the_export_lacks_load_as_null_and_a_needed_one_fails(
    api: Api, moto: MotoServer, tmp_path: Path
) -> None:
    org = new_org(api, moto)
    root, stats = write(tmp_path, org, through_day=2)
    dropped = ("line_item_usage_account_name", "product", "resource_tags")
    rewrite_parquet(root, stats, f"* EXCLUDE ({', '.join(dropped)})", dropped)
    upload(moto, org, root, stats)
    assert set_source(api, org).status_code == 200
    view = run(api, org)
    assert view["status"] == "COMPLETED", view["error_message"]
    assert days(api, org) == expected(stats)
    accounts = costs(api, org, group_by="project")["days"]
    assert accounts and all(d["group_id"] and d["group_name"] is None for d in accounts)
    services = costs(api, org, group_by="service")["days"]
    assert services and all(d["group_name"] is None for d in services)

    root, later = write(tmp_path, org, through_day=4)
    rewrite_parquet(root, later, "* EXCLUDE (line_item_unblended_cost)", ("line_item_unblended_cost",))
    upload(moto, org, root, later)
    failed = run(api, org)
    assert failed["status"] == "FAILED"
    assert "no column line_item_unblended_cost" in failed["error_message"]
    assert days(api, org) == expected(stats)


def test_a_delivery_that_does_not_reconcile_leaves_the_previous_state(
    api: Api, moto: MotoServer, tmp_path: Path
) -> None:
    org = new_org(api, moto)
    first = deliver(moto, org, tmp_path, through_day=2)
    assert set_source(api, org).status_code == 200
    assert run(api, org)["status"] == "COMPLETED"
    # One line item of the newer delivery says it belongs to the previous billing period: it is not
    # this period's, so the load would lose it, and the files' totals say so.
    root, second = write(tmp_path, org, through_day=3)
    odd = (
        "* REPLACE (CASE WHEN identity_line_item_id = (SELECT min(identity_line_item_id) FROM read_parquet('"
        + str(root / second.data_keys[0])
        + "', hive_partitioning = false) WHERE line_item_usage_start_date >= TIMESTAMP '2026-10-03') "
        "THEN TIMESTAMP '2026-09-01' ELSE bill_billing_period_start_date END AS bill_billing_period_start_date)"
    )
    rewrite_parquet(root, second, odd)
    upload(moto, org, root, second)
    failed = run(api, org)
    assert failed["status"] == "FAILED"
    assert "reconciliation failed" in failed["error_message"] and "2026-10-03" in failed["error_message"]
    bad = [c for c in failed["dq_results"] if not c["passed"]]
    assert [c["usage_date"] for c in bad] == ["2026-10-03"]
    assert bad[0]["source_rows"] == bad[0]["dest_rows"] + 1
    assert days(api, org) == expected(first)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_gzip_csv_and_json_lines_load_like_parquet(api: Api, moto: MotoServer, tmp_path: Path, fmt: str) -> None:
    org = new_org(api, moto)
    stats = deliver(moto, org, tmp_path, through_day=2, fmt=fmt)  # type: ignore[arg-type]
    assert stats.data_keys[0].endswith(".csv.gz" if fmt == "csv" else ".jsonl.gz")
    assert set_source(api, org).status_code == 200
    view = run(api, org)
    assert view["status"] == "COMPLETED", view["error_message"]
    assert days(api, org) == expected(stats)
    names = {d["group_name"] for d in costs(api, org, group_by="service")["days"]}
    assert "Amazon Elastic Compute Cloud" in names  # the product map, as JSON text


def test_a_role_is_assumed_only_with_the_orgs_external_id(
    api: Api, moto: MotoServer, platform: Keys, tmp_path: Path
) -> None:
    org = new_org(api, moto, credentials=False)
    platform_user = f"platform-{os.getpid()}"
    own = f"convergence-{org.slug}"
    arn = moto.role(
        f"cur-reader-{org.slug}", trusted_user=platform_user, external_id=own, policy=read_policy(org.bucket)
    )
    route = f"/api/v1/organizations/{org.slug}/credentials/aws"
    other = api.http.put(route, headers=org.headers, json={"role_arn": arn, "external_id": "convergence-someone"})
    assert other.status_code == 422 and other.json()["error"] == "aws_external_id_mismatch"
    elsewhere = moto.role(
        f"other-{org.slug}", trusted_user=platform_user, external_id="x-1", policy=read_policy("nothing-here")
    )
    untrusted = api.http.put(route, headers=org.headers, json={"role_arn": elsewhere, "external_id": own})
    assert untrusted.status_code == 422 and untrusted.json()["error"] == "aws_credentials_invalid"
    stored = api.http.put(route, headers=org.headers, json={"role_arn": arn, "external_id": own})
    assert stored.status_code == 200, stored.text
    assert stored.json()["credential_type"] == "assume_role" and stored.json()["external_id"] == own
    assert f"assumed-role/cur-reader-{org.slug}/" in stored.json()["principal"]
    stats = deliver(moto, org, tmp_path, through_day=2)
    assert set_source(api, org).status_code == 200
    assert run(api, org)["status"] == "COMPLETED"
    assert days(api, org) == expected(stats)
    revoked = api.http.delete(route, headers=org.headers)
    assert revoked.status_code == 200 and revoked.json()["status"] == "REVOKED"
    refused = api.run(org.slug, org.key, {"billing_period": BP}, pipeline="aws/cost/cost_billing")
    assert refused.status_code == 422 and refused.json()["error"] == "aws_credentials_not_configured"


def test_another_orgs_key_cannot_touch_aws_settings(api: Api, moto: MotoServer) -> None:
    a, b = new_org(api, moto), new_org(api, moto, credentials=False)
    for method, path in (("PUT", "credentials/aws"), ("GET", "credentials/aws"), ("PUT", "aws-source")):
        response = api.http.request(method, f"/api/v1/organizations/{a.slug}/{path}", headers=b.headers, json={})
        assert response.status_code == 403, (method, path, response.text)
    bad = api.http.put(
        f"/api/v1/organizations/{b.slug}/credentials/aws",
        headers=b.headers,
        json={"access_key_id": "AKIA" + "A" * 16, "secret_access_key": "s" * 40, "role_arn": "arn:aws:iam::1:role/x"},
    )
    assert bad.status_code == 422 and "s" * 40 not in bad.text
