"""A CUR 2.0 delivery's ``Manifest.json``: which manifest is a period's latest, and what it lists.

AWS writes the manifest after every data file of the delivery; it lists the data files as full S3
URIs (``dataFiles``; AWS recommends reading this list to know what to ingest) and the export's
columns (``columns``: name and AWS type). The loader reads exactly those files, nothing else found
under the data folder (an overwrite delivery may leave another execution's part files behind).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from src.core.aws.source import AwsSource, split_s3_uri

FileFormat = Literal["parquet", "csv", "jsonl"]
MANIFEST_SUFFIX = "-Manifest.json"
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


class ManifestError(ValueError):
    """The manifest cannot be used (its message names the manifest and the reason)."""


@dataclass(frozen=True, slots=True)
class S3Object:
    key: str
    size: int
    last_modified: datetime


@dataclass(frozen=True, slots=True)
class Manifest:
    key: str
    period: str
    execution_id: str
    columns: dict[str, str]  # name -> AWS type, in the export's order
    data_keys: tuple[str, ...]  # keys in the export's bucket, in the manifest's order
    fmt: FileFormat


def file_format(key: str) -> FileFormat | None:
    name = key.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".csv.gz", ".csv")):
        return "csv"
    if name.endswith((".jsonl.gz", ".json.gz", ".jsonl")):
        return "jsonl"
    return None


def latest_manifest(source: AwsSource, period: str, objects: list[S3Object]) -> S3Object | None:
    """The newest manifest of ``period``: directly in the period's metadata folder (overwrite
    delivery) or one folder deeper (create-new delivery, named by its execution id)."""
    base = source.metadata_prefix(period)
    name = f"{source.export_name}{MANIFEST_SUFFIX}"
    found = []
    for obj in objects:
        rest = obj.key[len(base) :] if obj.key.startswith(base) else None
        if rest is not None and (rest == name or (rest.count("/") == 1 and rest.endswith("/" + name))):
            found.append(obj)
    return max(found, key=lambda o: (o.last_modified, o.key), default=None)


def parse_manifest(source: AwsSource, period: str, key: str, body: bytes) -> Manifest:
    where = f"manifest s3://{source.bucket}/{key}"
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ManifestError(f"{where} is not JSON") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{where} is not a JSON object")
    columns: Any = doc.get("columns")
    files: Any = doc.get("dataFiles")
    if not isinstance(columns, list) or not all(
        isinstance(c, dict) and isinstance(c.get("name"), str) for c in columns
    ):
        raise ManifestError(f"{where} has no 'columns' list of {{name, type}}")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ManifestError(f"{where} has no 'dataFiles' list of s3:// URIs")
    prefix = source.data_prefix(period)
    keys = []
    for uri in files:
        try:
            bucket, data_key = split_s3_uri(uri)
        except ValueError as exc:
            raise ManifestError(f"{where}: {exc}") from None
        if bucket != source.bucket or not data_key.startswith(prefix) or ".." in data_key.split("/"):
            raise ManifestError(f"{where} lists {uri[:300]}, outside the export's data folder s3://{bucket}/{prefix}")
        keys.append(data_key)
    formats = {file_format(k) for k in keys}
    if None in formats:
        raise ManifestError(f"{where} lists a file of an unknown format (expected .parquet, .csv.gz or .jsonl.gz)")
    if len(formats) > 1:
        raise ManifestError(f"{where} lists files of several formats")
    fmt: FileFormat = formats.pop() if formats else "parquet"  # type: ignore[assignment]
    return Manifest(
        key=key,
        period=period,
        execution_id=str(doc.get("executionId") or ""),
        columns={str(c["name"]).lower(): str(c.get("type") or "") for c in columns},
        data_keys=tuple(keys),
        fmt=fmt,
    )
