"""The files of a load: each billing period's latest CUR 2.0 manifest, and exactly the data files it
lists, downloaded to a local folder (DuckDB reads them there; httpfs cannot be installed offline).

Everything is fetched before anything is written: a missing manifest, a manifest that lists a file
that is not there, or an export without a column the load needs fails the step with a message that
says which, and the destination is untouched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from src.core.aws.client import AwsExport
from src.core.aws.manifest import (
    MAX_MANIFEST_BYTES,
    FileFormat,
    Manifest,
    ManifestError,
    latest_manifest,
    parse_manifest,
)
from src.core.errors import SourceError, SourceNotFoundError, StepFailedError, TransientSourceError

_EXTENSIONS: dict[str, str] = {"parquet": ".parquet", "csv": ".csv.gz", "jsonl": ".jsonl.gz"}
_PARALLEL_DOWNLOADS = 3


@dataclass(frozen=True, slots=True)
class FetchedFiles:
    manifests: tuple[Manifest, ...]
    paths: tuple[Path, ...]
    fmt: FileFormat
    columns: frozenset[str]  # the columns the manifests list (lowercase)
    bytes: int

    def summary(self, bucket: str) -> list[dict[str, object]]:
        return [
            {
                "billing_period": m.period,
                "execution_id": m.execution_id,
                "manifest": f"s3://{bucket}/{m.key}",
                "files": len(m.data_keys),
            }
            for m in self.manifests
        ]


def _failed(exc: SourceError, hint: str = "") -> StepFailedError:
    return StepFailedError(exc.message + hint, code=exc.code, retryable=isinstance(exc, TransientSourceError))


async def _manifest(export: AwsExport, period: str, required: Sequence[str]) -> Manifest:
    source, bucket = export.source, export.bucket
    folder = f"s3://{source.bucket}/{source.metadata_prefix(period)}"
    latest = latest_manifest(source, period, await bucket.list(source.metadata_prefix(period)))
    if latest is None:
        raise StepFailedError(
            f"no manifest for billing period {period} under {folder}: the export has not delivered that "
            "period yet, or the AWS source (bucket, prefix, export name) is not the export's",
            code="aws_manifest_not_found",
            retryable=False,
        )
    try:
        body = await bucket.read(latest.key, max_bytes=MAX_MANIFEST_BYTES)
        manifest = parse_manifest(source, period, latest.key, body)
    except ManifestError as exc:
        raise StepFailedError(str(exc), code="aws_manifest_invalid", retryable=False) from None
    missing = [c for c in required if c.lower() not in manifest.columns]
    if missing:
        raise StepFailedError(
            f"the export has no column {', '.join(missing)} (manifest s3://{source.bucket}/{manifest.key} of "
            f"billing period {period}); the load cannot do without {', '.join(required)}: add "
            f"{'it' if len(missing) == 1 else 'them'} to the export's query",
            code="aws_export_column_missing",
            retryable=False,
        )
    return manifest


def _missing_file(export: AwsExport, manifest: Manifest, key: str) -> StepFailedError:
    return StepFailedError(
        f"the manifest s3://{export.source.bucket}/{manifest.key} of billing period {manifest.period} lists "
        f"s3://{export.source.bucket}/{key}, which does not exist: the delivery is incomplete (or was replaced "
        "while it was read); nothing was loaded",
        code="aws_data_file_missing",
        retryable=False,
    )


async def _check_sizes(export: AwsExport, manifests: Sequence[Manifest], max_bytes: int) -> int:
    """Every listed file exists (one listing of each period's data folder); their total size."""
    total = 0
    for manifest in manifests:
        if not manifest.data_keys:
            continue
        sizes = {o.key: o.size for o in await export.bucket.list(export.source.data_prefix(manifest.period))}
        for key in manifest.data_keys:
            if key not in sizes:
                raise _missing_file(export, manifest, key)
            total += sizes[key]
    if total > max_bytes:
        raise StepFailedError(
            f"the export's files are {total} bytes; a load downloads at most {max_bytes} (AWS_MAX_DOWNLOAD_BYTES)",
            code="aws_export_too_large",
            retryable=False,
        )
    return total


async def plan(export: AwsExport, periods: Sequence[str], *, required: Sequence[str]) -> list[dict[str, object]]:
    """What a load of ``periods`` would fetch (a dry run): per period its manifest, files and bytes."""
    try:
        manifests = [await _manifest(export, period, required) for period in periods]
        return [
            {
                "statement": f"files of billing period {m.period} (s3://{export.source.bucket}/{m.key})",
                "bytes_processed": None,
                "rows": None,
                "files": len(m.data_keys),
                "bytes_to_download": await _check_sizes(export, [m], max_bytes=2**63),
            }
            for m in manifests
        ]
    except SourceError as exc:
        raise _failed(exc) from None


async def fetch(
    export: AwsExport,
    periods: Sequence[str],
    folder: Path,
    *,
    required: Sequence[str],
    max_files: int,
    max_bytes: int,
    org_slug: str,
) -> FetchedFiles:
    """Manifests of ``periods`` and their data files in ``folder`` (see the module docstring)."""
    hint = f"; store the organization's AWS credentials again (PUT /api/v1/organizations/{org_slug}/credentials/aws)"
    try:
        manifests = [await _manifest(export, period, required) for period in periods]
    except SourceError as exc:
        raise _failed(exc, hint if exc.code in ("aws_credentials_invalid", "aws_access_denied") else "") from None
    formats = {m.fmt for m in manifests if m.data_keys}
    if len(formats) > 1:
        raise StepFailedError("the billing periods' files have different formats", code="aws_manifest_invalid")
    fmt: FileFormat = formats.pop() if formats else "parquet"
    wanted = [(m, key) for m in manifests for key in m.data_keys]
    if len(wanted) > max_files:
        raise StepFailedError(
            f"the manifests list {len(wanted)} files; a load takes at most {max_files}", code="aws_too_many_files"
        )
    try:
        total = await _check_sizes(export, manifests, max_bytes)
    except SourceError as exc:
        raise _failed(exc, hint if exc.code in ("aws_credentials_invalid", "aws_access_denied") else "") from None
    paths = tuple(folder / f"part-{i:05d}{_EXTENSIONS[fmt]}" for i in range(len(wanted)))
    gate = asyncio.Semaphore(_PARALLEL_DOWNLOADS)

    async def download(index: int) -> int:
        manifest, key = wanted[index]
        async with gate:
            try:
                return await export.bucket.download(key, paths[index])
            except SourceNotFoundError:
                raise _missing_file(export, manifest, key) from None

    try:
        await asyncio.gather(*(download(i) for i in range(len(wanted))))
    except SourceError as exc:
        raise _failed(exc, hint if exc.code in ("aws_credentials_invalid", "aws_access_denied") else "") from None
    columns = frozenset(c for m in manifests for c in m.columns)
    return FetchedFiles(tuple(manifests), paths, fmt, columns, total)
