"""The pieces of the AWS loader that need no server: windows of billing periods, CUR 2.0 manifests,
the reading of export files in three formats, the credentials body, boto error translation, and the
destination table's schema (the agreed shape: the CUR 2.0 columns, maps as JSON text, + 5)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from pydantic import ValidationError

from src.app.schemas.aws import AwsCredentialsRequest, AwsSourceRequest
from src.core.aws.client import translate
from src.core.aws.manifest import ManifestError, S3Object, latest_manifest, parse_manifest
from src.core.aws.source import AwsSource
from src.core.demo.aws_cur_export import write_delivery
from src.core.engine.export_files import FileSet, describe, relation_sql
from src.core.engine.schema import load_schema_file
from src.core.errors import (
    SourceAccessDeniedError,
    SourceCredentialsError,
    SourceNotFoundError,
    TransientSourceError,
    ValidationFailedError,
)
from src.core.pipeline.models import PipelineSpec
from src.core.pipeline.variables import build_variables, resolve_window

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
COLUMNS = load_schema_file(CONFIGS / "aws" / "cost" / "cur2_columns.json")
TODAY = date(2026, 11, 20)
SOURCE = AwsSource(bucket="b", prefix="exports/cur2", export_name="acme", region="us-east-1")


def _spec(**window: Any) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {"pipeline_id": "p", "window": {"unit": "month", **window}, "steps": [{"step_id": "s", "ps_type": "a.b"}]}
    )


def _window(params: dict[str, Any], **window: Any) -> Any:
    return resolve_window(_spec(**window), params, max_days=92, today=TODAY)


# --- windows of billing periods ---------------------------------------------------------------------
def test_a_billing_period_is_its_month() -> None:
    window = _window({"billing_period": "2026-02"})
    assert (window.start_date, window.end_date, window.periods()) == (date(2026, 2, 1), date(2026, 2, 28), ["2026-02"])
    _, variables = build_variables(_spec(), builtins={}, params={"billing_period": "2026-02"}, window=window)
    assert (variables["start_period"], variables["end_period"], variables["billing_period"]) == ("2026-02",) * 3


def test_a_window_of_periods_and_the_months_of_days() -> None:
    window = _window({"start_period": "2026-09", "end_period": "2026-11"})
    assert window.periods() == ["2026-09", "2026-10", "2026-11"] and window.end_date == date(2026, 11, 30)
    _, variables = build_variables(_spec(), builtins={}, params={}, window=window)
    assert variables["billing_period"] is None and variables["end_period"] == "2026-11"
    # A schedule's window of days: the months that contain them.
    days = _window({"start_date": "2026-10-30", "end_date": "2026-11-02"})
    assert days.periods() == ["2026-10", "2026-11"] and days.start_date == date(2026, 10, 1)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"billing_period": "2026-13"}, "billing period YYYY-MM"),
        ({"billing_period": "2026-1"}, "billing period YYYY-MM"),
        ({"billing_period": "2026-12"}, "in the future"),
        ({"start_period": "2026-11", "end_period": "2026-09"}, "before start_period"),
        ({"start_period": "2026-01", "end_period": "2026-06"}, "the maximum is 92"),
        ({"start_period": "2026-01"}, "end_period is required"),
        ({"billing_period": "2026-10", "date": "2026-10-01"}, "not both"),
        ({"billing_period": "2026-10", "end_period": "2026-10"}, "not both"),
        ({}, "billing_period (or start_period and end_period) is required"),
        ({"date": "2026-11-21"}, "in the future"),
    ],
)
def test_bad_period_windows_are_refused(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationFailedError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _window(params)


def test_a_day_window_takes_no_billing_period() -> None:
    spec = PipelineSpec.model_validate(
        {"pipeline_id": "p", "window": {}, "steps": [{"step_id": "s", "ps_type": "a.b"}]}
    )
    with pytest.raises(ValidationFailedError, match="no period window"):
        resolve_window(spec, {"billing_period": "2026-10"}, max_days=92, today=TODAY)


# --- manifests --------------------------------------------------------------------------------------
def _obj(key: str, minute: int) -> S3Object:
    return S3Object(key, 10, datetime(2026, 11, 1, 0, minute, tzinfo=UTC))


def test_the_newest_manifest_of_a_period_at_either_depth() -> None:
    base = "exports/cur2/acme/metadata/BILLING_PERIOD=2026-10/"
    objects = [
        _obj(base + "acme-Manifest.json", 1),
        _obj(base + "exec-2/acme-Manifest.json", 5),
        _obj(base + "exec-1/acme-Manifest.json", 3),
        _obj(base + "exec-3/other-Manifest.json", 9),  # another export's name
        _obj(base + "a/b/acme-Manifest.json", 9),  # too deep
        _obj("exports/cur2/acme/metadata/BILLING_PERIOD=2026-11/acme-Manifest.json", 9),
    ]
    found = latest_manifest(SOURCE, "2026-10", objects)
    assert found is not None and found.key == base + "exec-2/acme-Manifest.json"
    assert latest_manifest(SOURCE, "2026-09", objects) is None


def _manifest(files: list[str], columns: list[str] | None = None) -> bytes:
    names = columns if columns is not None else ["line_item_unblended_cost", "resource_tags"]
    doc = {"executionId": "e1", "columns": [{"name": n, "type": "string"} for n in names], "dataFiles": files}
    return json.dumps(doc).encode()


def test_a_manifest_lists_files_inside_the_export_only() -> None:
    data = "s3://b/exports/cur2/acme/data/BILLING_PERIOD=2026-10/"
    found = parse_manifest(SOURCE, "2026-10", "k", _manifest([data + "acme-00001.snappy.parquet"]))
    assert found.data_keys == ("exports/cur2/acme/data/BILLING_PERIOD=2026-10/acme-00001.snappy.parquet",)
    assert (found.fmt, found.execution_id, list(found.columns)) == (
        "parquet",
        "e1",
        ["line_item_unblended_cost", "resource_tags"],
    )
    assert parse_manifest(SOURCE, "2026-10", "k", _manifest([data + "x.csv.gz"])).fmt == "csv"
    for bad in (
        [data.replace("s3://b/", "s3://other/") + "x.parquet"],  # another bucket
        ["s3://b/exports/cur2/acme/data/BILLING_PERIOD=2026-09/x.parquet"],  # another period
        [data + "../../../../secret.parquet"],
        [data + "x.parquet", data + "y.csv.gz"],  # two formats
        [data + "x.txt"],
    ):
        with pytest.raises(ManifestError):
            parse_manifest(SOURCE, "2026-10", "k", _manifest(bad))
    with pytest.raises(ManifestError, match="not JSON"):
        parse_manifest(SOURCE, "2026-10", "k", b"{")
    with pytest.raises(ManifestError, match="dataFiles"):
        parse_manifest(SOURCE, "2026-10", "k", json.dumps({"columns": []}).encode())


# --- export files -----------------------------------------------------------------------------------
def _rows(tmp: Path, fmt: str) -> list[tuple[Any, ...]]:
    stats = write_delivery(
        tmp / fmt,
        period=date(2026, 10, 1),
        through_day=2,
        execution_id="e",
        fmt=fmt,
        rows_per_day=100,  # type: ignore[arg-type]
    )
    paths = tuple(tmp / fmt / k for k in stats.data_keys)
    found = describe(paths, fmt)  # type: ignore[arg-type]
    files = FileSet(paths, fmt, {f.name: found[f.name] for f in COLUMNS})  # type: ignore[arg-type]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con.execute(f"SELECT * FROM ({relation_sql(files, COLUMNS)}) ORDER BY identity_line_item_id").fetchall()


def test_parquet_csv_and_json_lines_read_the_same(tmp_path: Path) -> None:
    parquet = _rows(tmp_path, "parquet")
    assert len(parquet) > 200
    tags = [r[[f.name for f in COLUMNS].index("resource_tags")] for r in parquet]
    assert any(t and json.loads(t).get("user_team") for t in tags) and "{}" in tags  # maps as JSON text
    assert _rows(tmp_path, "csv") == parquet
    assert _rows(tmp_path, "jsonl") == parquet


def test_columns_the_files_lack_read_as_typed_nulls(tmp_path: Path) -> None:
    stats = write_delivery(tmp_path, period=date(2026, 10, 1), through_day=1, execution_id="e", rows_per_day=100)
    paths = tuple(tmp_path / k for k in stats.data_keys)
    files = FileSet(paths, "parquet", {"line_item_unblended_cost": "DOUBLE"})
    con = duckdb.connect()
    row = con.execute(
        f"SELECT COUNT(*), COUNT(line_item_unblended_cost), COUNT(resource_tags), typeof(ANY_VALUE(resource_tags)), "
        f"typeof(ANY_VALUE(line_item_usage_start_date)) FROM ({relation_sql(files, COLUMNS)})"
    ).fetchone()
    assert row == (stats.rows, stats.rows, 0, "VARCHAR", "TIMESTAMP")


# --- the credentials body, boto errors, the table ---------------------------------------------------
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_credentials_are_a_key_pair_or_a_role() -> None:
    keys = AwsCredentialsRequest.model_validate({"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": SECRET})
    assert keys.document() == {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": SECRET}
    role = {"role_arn": "arn:aws:iam::123456789012:role/cur-reader", "external_id": "convergence-acme"}
    assert AwsCredentialsRequest.model_validate(role).document() == role
    for bad in (
        {"access_key_id": "AKIAIOSFODNN7EXAMPLE"},
        {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": SECRET, **role},
        {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": SECRET[:-1] + "%"},
        {"access_key_id": "ASIAIOSFODNN7EXAMPLE", "secret_access_key": SECRET},  # temporary keys expire
        {"role_arn": "arn:aws:iam::123:role/x", "external_id": "e1"},
        {},
    ):
        with pytest.raises(ValidationError) as caught:
            AwsCredentialsRequest.model_validate(bad)
        assert SECRET[:-1] not in str(caught.value)
    source = AwsSourceRequest.model_validate(
        {"bucket": "b-1", "prefix": "/a/b/", "export_name": "e", "region": "eu-west-1"}
    )
    assert source.prefix == "a/b"
    with pytest.raises(ValidationError):
        AwsSourceRequest.model_validate({"bucket": "B", "export_name": "e", "region": "eu-west-1"})


def _client_error(code: str, status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "op")


def test_boto_errors_become_ours_without_secrets() -> None:
    assert isinstance(translate(_client_error("InvalidAccessKeyId"), "s3://b/k"), SourceCredentialsError)
    assert isinstance(translate(_client_error("SignatureDoesNotMatch"), "x"), SourceCredentialsError)
    assert isinstance(translate(_client_error("AccessDenied", 403), "x"), SourceAccessDeniedError)
    assert isinstance(translate(_client_error("NoSuchKey", 404), "x"), SourceNotFoundError)
    assert isinstance(translate(_client_error("404", 404), "x"), SourceNotFoundError)
    assert isinstance(translate(_client_error("SlowDown", 503), "x"), TransientSourceError)
    assert isinstance(translate(EndpointConnectionError(endpoint_url="http://x"), "x"), TransientSourceError)
    assert translate(_client_error("AccessDenied", 403), "s3://b/k").message == "s3://b/k: access denied (AccessDenied)"


def test_the_destination_is_the_cur2_columns_maps_as_json_text_plus_five() -> None:
    template = json.loads((CONFIGS / "aws" / "s3_data_loader" / "schema_template.json").read_text())["aws_billing_cost"]
    columns = json.loads((CONFIGS / "aws" / "cost" / "cur2_columns.json").read_text())
    assert [c["name"] for c in template] == [c["name"] for c in columns] + [
        "usage_date", "billing_period", "org_slug", "pipeline_logging_id", "loaded_at"
    ]  # fmt: skip
    for mine, theirs in zip(template, columns, strict=False):
        assert mine["type"] == ("STRING" if theirs["type"] == "JSON" else theirs["type"])
    assert {c["name"]: c["type"] for c in template[-5:]} == {
        "usage_date": "DATE", "billing_period": "STRING", "org_slug": "STRING", "pipeline_logging_id": "STRING",
        "loaded_at": "TIMESTAMP",
    }  # fmt: skip


def test_an_orgs_client_never_falls_back_to_the_services_identity() -> None:
    from src.core.aws.client import AwsClients, AwsCredentials
    from src.core.settings import Settings

    clients = AwsClients(Settings())
    for keys in (None, {}, {"aws_access_key_id": "AKIAIOSFODNN7EXAMPLE"}):
        with pytest.raises(SourceCredentialsError):
            clients._client("s3", keys, "us-east-1")
    with pytest.raises(SourceCredentialsError):
        clients._org_keys(AwsCredentials(kind="access_key", access_key_id="AKIAIOSFODNN7EXAMPLE"), "acme")
    with pytest.raises(SourceCredentialsError):
        clients._org_keys(AwsCredentials(kind="assume_role", role_arn="arn:aws:iam::1:role/r"), "acme")
