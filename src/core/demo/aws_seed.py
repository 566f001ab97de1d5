"""Deliver the demo AWS Data Export (CUR 2.0) to a local S3 server (``python -m src.core.demo.aws_seed``).

Local development only (``./simple_deploy.sh local`` runs it against the moto server it starts):
two deliveries of the current month (``aws_cur_export.demo_deliveries``: through 5 days ago, then
through today, UTC; ``DEMO_AWS_TODAY`` overrides today), Parquet plus manifest, delivery preference
*create new* (each execution in its own folder; the loader takes the newest manifest), written by
the deterministic generator and uploaded as AWS delivers: every data file, then the manifest.
Bucket ``acme-billing-exports``, prefix ``cur2``, export ``acme-cur2-hourly``, region us-east-1;
the S3 server is ``AWS_ENDPOINT_URL``. Prints what it delivered (rows and exact totals).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from src.core.demo.aws_cur_export import (
    DEMO_BUCKET,
    DEMO_EXPORT_NAME,
    DEMO_PREFIX,
    DeliveryStats,
    demo_deliveries,
    write_delivery,
)

REGION = "us-east-1"
# AWS's documented example key pair: the demo S3 server checks no signature.
DEMO_ACCESS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
DEMO_SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def _client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=DEMO_ACCESS_KEY_ID,
        aws_secret_access_key=DEMO_SECRET_ACCESS_KEY,
    )


def deliver_demo(endpoint: str, *, today: date, rows_per_day: int, seed: int = 42) -> list[DeliveryStats]:
    from botocore.exceptions import ClientError

    s3 = _client(endpoint)
    try:
        s3.create_bucket(Bucket=DEMO_BUCKET)
    except ClientError as exc:  # a second deploy against a server still running
        if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    delivered = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in demo_deliveries(today, seed=seed):
            root = Path(tmp) / spec.execution_id
            stats = write_delivery(
                root,
                period=spec.period,
                through_day=spec.through_day,
                execution_id=spec.execution_id,
                layout="create_new",
                rows_per_day=rows_per_day,
                seed=seed,
            )
            for key in (*stats.data_keys, stats.manifest_key):  # the manifest last, as AWS does
                s3.upload_file(str(root / key), DEMO_BUCKET, key)
            delivered.append(stats)
    return delivered


def main() -> None:
    parser = argparse.ArgumentParser(description="Deliver the demo AWS CUR 2.0 export to a local S3 server.")
    parser.add_argument("--endpoint", default=os.environ.get("AWS_ENDPOINT_URL", ""))
    parser.add_argument("--rows-per-day", type=int, default=int(os.environ.get("DEMO_AWS_ROWS_PER_DAY", "2000")))
    configured = os.environ.get("DEMO_AWS_TODAY", "").strip()
    parser.add_argument(
        "--today", type=date.fromisoformat, default=date.fromisoformat(configured) if configured else None
    )
    args = parser.parse_args()
    if not args.endpoint:
        parser.error("no S3 endpoint: set AWS_ENDPOINT_URL or --endpoint (local development only)")
    today = args.today or datetime.now(UTC).date()
    delivered = deliver_demo(args.endpoint, today=today, rows_per_day=args.rows_per_day)
    print(
        json.dumps(
            {
                "bucket": DEMO_BUCKET,
                "prefix": DEMO_PREFIX,
                "export_name": DEMO_EXPORT_NAME,
                "region": REGION,
                "deliveries": [
                    {
                        "billing_period": s.billing_period,
                        "through_day": s.through_day.isoformat(),
                        "execution_id": s.execution_id,
                        "rows": s.rows,
                        "total_cost": str(s.total_cost),
                        "manifest": f"s3://{s.bucket}/{s.manifest_key}",
                    }
                    for s in delivered
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
