"""Where an AWS Data Export lives and the S3 key layout of its deliveries.

AWS writes ``<prefix>/<export-name>/data/BILLING_PERIOD=YYYY-MM/`` (data files) and
``<prefix>/<export-name>/metadata/BILLING_PERIOD=YYYY-MM/`` (the manifest), one folder deeper,
``.../BILLING_PERIOD=YYYY-MM/<executionId>/``, when the export's delivery preference is *create
new* (``../shared/reference/aws_cur_and_focus.md`` §3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$"
PREFIX_PATTERN = r"^[A-Za-z0-9!_.*'()\-]+(/[A-Za-z0-9!_.*'()\-]+)*$"
EXPORT_NAME_PATTERN = r"^[A-Za-z0-9_\-]{1,128}$"
REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-\d$"


@dataclass(frozen=True, slots=True)
class AwsSource:
    """An org's export: ``s3://{bucket}/{prefix}/{export_name}/`` in ``region``."""

    bucket: str
    prefix: str  # without leading or trailing "/"; may be ""
    export_name: str
    region: str

    @property
    def root(self) -> str:
        """Key prefix of the export (no trailing slash)."""
        return f"{self.prefix}/{self.export_name}" if self.prefix else self.export_name

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.root}"

    def metadata_prefix(self, period: str | None = None) -> str:
        base = f"{self.root}/metadata/"
        return f"{base}BILLING_PERIOD={period}/" if period else base

    def data_prefix(self, period: str) -> str:
        return f"{self.root}/data/BILLING_PERIOD={period}/"

    @classmethod
    def from_uri(cls, uri: str, region: str) -> AwsSource:
        """The inverse of ``uri`` (how the source is stored)."""
        parts = urlsplit(uri)
        path = parts.path.strip("/")
        if parts.scheme != "s3" or not parts.netloc or not path:
            raise ValueError(f"not an export URI: {uri!r}")
        prefix, _, name = path.rpartition("/")
        return cls(bucket=parts.netloc, prefix=prefix, export_name=name, region=region)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    match = re.fullmatch(r"s3://([^/]+)/(.+)", uri)
    if match is None:
        raise ValueError(f"not an s3:// object URI: {uri[:200]!r}")
    return match.group(1), match.group(2)
