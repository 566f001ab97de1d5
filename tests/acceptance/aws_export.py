"""Helpers of the AWS acceptance tests: an org with its own bucket, IAM user and credentials; CUR 2.0
deliveries written by the demo generator and uploaded to the S3 peer as AWS would (data files
first, the manifest last); what the API answers, next to what the generator says it wrote."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from src.core.demo.aws_cur_export import DeliveryStats, Fmt, Layout, write_delivery
from tests.conftest import unique_slug
from tests.s3_peer import Keys, MotoServer, read_policy
from tests.server import Api

PERIOD = date(2026, 10, 1)  # a closed billing period
BP = "2026-10"
PREFIX = "exports/cur2"
EXPORT = "acme-cur2-hourly"
ROWS_PER_DAY = 100
_runs = itertools.count(1)


@dataclass
class Org:
    slug: str
    key: str
    bucket: str
    user: str
    keys: Keys

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


def money(value: Any) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.000001"))


def new_org(api: Api, moto: MotoServer, *, credentials: bool = True) -> Org:
    """An org, its own bucket, an IAM user that may read only that bucket, its credentials stored."""
    slug = unique_slug("aws")
    key = api.onboard(slug)
    bucket = moto.bucket(f"cur-{slug.replace('_', '-')}")
    user = f"reader-{slug}"
    keys = moto.user(user, read_policy(bucket))
    org = Org(slug, key, bucket, user, keys)
    if credentials:
        stored = api.http.put(f"/api/v1/organizations/{slug}/credentials/aws", headers=org.headers, json=keys.body())
        assert stored.status_code == 200, stored.text
    return org


def source_body(org: Org, **changes: str) -> dict[str, str]:
    return {"bucket": org.bucket, "prefix": PREFIX, "export_name": EXPORT, "region": "us-east-1", **changes}


def set_source(api: Api, org: Org, **changes: str) -> Any:
    return api.http.put(
        f"/api/v1/organizations/{org.slug}/aws-source", headers=org.headers, json=source_body(org, **changes)
    )


def write(
    tmp: Path,
    org: Org,
    *,
    through_day: int,
    layout: Layout = "overwrite",
    fmt: Fmt = "parquet",
    max_rows_per_file: int = 500_000,
    execution: str | None = None,
) -> tuple[Path, DeliveryStats]:
    root = tmp / f"delivery-{next(_runs)}"
    stats = write_delivery(
        root,
        period=PERIOD,
        through_day=through_day,
        execution_id=execution or f"exec-{through_day}-{layout}-{next(_runs)}",
        export_name=EXPORT,
        layout=layout,
        fmt=fmt,
        rows_per_day=ROWS_PER_DAY,
        bucket=org.bucket,
        prefix=PREFIX,
        max_rows_per_file=max_rows_per_file,
    )
    return root, stats


def upload(moto: MotoServer, org: Org, root: Path, stats: DeliveryStats) -> DeliveryStats:
    """As AWS delivers: every data file, then the manifest."""
    moto.upload(root, org.bucket, list(stats.data_keys))
    moto.upload(root, org.bucket, [stats.manifest_key])
    return stats


def deliver(moto: MotoServer, org: Org, tmp: Path, **kwargs: Any) -> DeliveryStats:
    root, stats = write(tmp, org, **kwargs)
    return upload(moto, org, root, stats)


def rewrite_parquet(root: Path, stats: DeliveryStats, select: str, drop_columns: tuple[str, ...] = ()) -> None:
    """Rewrite the delivery's files as ``SELECT {select} FROM file`` (and the manifest's columns
    without ``drop_columns``): an export whose query differs, or a corrupted delivery."""
    con = duckdb.connect()
    for key in stats.data_keys:
        path = root / key
        tmp = path.with_name(path.name + ".new")
        con.execute(
            f"COPY (SELECT {select} FROM read_parquet('{path}', hive_partitioning = false)) TO '{tmp}' (FORMAT parquet)"
        )
        tmp.replace(path)
    manifest = root / stats.manifest_key
    doc = json.loads(manifest.read_text())
    doc["columns"] = [c for c in doc["columns"] if c["name"] not in drop_columns]
    manifest.write_text(json.dumps(doc))


def run(api: Api, org: Org, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = api.run(org.slug, org.key, body or {"billing_period": BP}, pipeline="aws/cost/cost_billing")
    assert response.status_code == 202, response.text
    return api.wait(response.json()["pipeline_logging_id"], org.key, timeout=180)


def costs(api: Api, org: Org, *, provider: str = "aws", group_by: str | None = None) -> dict[str, Any]:
    params = {"start_date": BP + "-01", "end_date": BP + "-31", "provider": provider}
    if group_by:
        params["group_by"] = group_by
    response = api.http.get(f"/api/v1/organizations/{org.slug}/costs/daily", headers=org.headers, params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def days(api: Api, org: Org) -> dict[str, tuple[int, Decimal]]:
    """Per day: rows and net cost, as the API answers them."""
    return {d["usage_date"]: (d["row_count"], money(d["net_cost"])) for d in costs(api, org)["days"]}


def expected(stats: DeliveryStats) -> dict[str, tuple[int, Decimal]]:
    """Per day: rows and exact cost, as the generator counted them (not read back from files)."""
    return {day.isoformat(): (t.rows, t.cost) for (day, _), t in sorted(stats.totals.items())}


def dest_checks(run_view: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in run_view["dq_results"] if c["check_name"] == "reconcile_source"]


def month_days() -> list[str]:
    end = date(PERIOD.year + PERIOD.month // 12, PERIOD.month % 12 + 1, 1)
    return [(PERIOD + timedelta(days=i)).isoformat() for i in range((end - PERIOD).days)]


Edit = Callable[[Path, DeliveryStats], None]
