"""boto3 clients for an organization's AWS account (S3 reads, STS identity), never the service's own.

Every client is built with explicit credentials — the org's access key pair, or temporary
credentials of the org's role — so boto3's default credential chain (environment, ~/.aws, instance
metadata: the platform's own identity) is never what reads an org's data. The one use of the
platform's identity is to call ``sts:AssumeRole`` on an org's role, with the org's own external
id (AWS's cross-account pattern; the external id keeps an org from naming another org's role).

``AWS_ENDPOINT_URL`` (setting ``aws_endpoint_url``) points S3 and STS at another server, with
path-style addressing: the local S3 server of the demo and of the tests. Blocking calls run on a
small thread pool of this object's own; boto errors leave it as ``errors.SourceError`` subclasses
whose messages name the bucket, key or role and the error code, never a secret.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from src.core.aws.manifest import S3Object
from src.core.aws.source import AwsSource
from src.core.errors import (
    SourceAccessDeniedError,
    SourceCredentialsError,
    SourceError,
    SourceNotFoundError,
    TransientSourceError,
)
from src.core.settings import Settings

T = TypeVar("T")

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException",
    "InvalidToken", "UnrecognizedClientException", "AuthFailure", "TokenRefreshRequired",
}  # fmt: skip
_DENIED_CODES = {"AccessDenied", "AccessDeniedException", "AllAccessDisabled", "AccountProblem", "Forbidden", "403"}
_MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "NotFound", "404", "NoSuchEntity"}
_TRANSIENT_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeoutException", "InternalError",
    "ServiceUnavailable", "503", "500", "RequestLimitExceeded", "IDPCommunicationError",
}  # fmt: skip
ROLE_SESSION_SECONDS = 3600
_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    """An org's way into its AWS account: an access key pair, or a role assumed with an external id."""

    kind: Literal["access_key", "assume_role"]
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    role_arn: str | None = None
    external_id: str | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    account: str
    arn: str


def translate(exc: Exception, what: str) -> SourceError:
    """A boto/botocore exception -> our error (the message: what was asked, and AWS's error code)."""
    from botocore import exceptions as bexc

    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, bexc.ClientError):
        error = exc.response.get("Error", {}) or {}
        code = str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")
        if code in _CREDENTIAL_CODES:
            return SourceCredentialsError(f"{what}: AWS refused the credentials ({code})")
        if code in _DENIED_CODES:
            return SourceAccessDeniedError(f"{what}: access denied ({code})")
        if code in _MISSING_CODES:
            return SourceNotFoundError(f"{what}: does not exist ({code})")
        if code in _TRANSIENT_CODES or code.startswith("5"):
            return TransientSourceError(f"{what}: AWS is unavailable ({code}); retry later")
        return SourceError(f"{what}: AWS error {code or type(exc).__name__}")
    if isinstance(exc, bexc.NoCredentialsError | bexc.PartialCredentialsError):
        return SourceCredentialsError(f"{what}: no usable AWS credentials")
    if isinstance(exc, bexc.EndpointConnectionError | bexc.ConnectionError | bexc.ReadTimeoutError):
        return TransientSourceError(f"{what}: cannot reach AWS ({type(exc).__name__}); retry later")
    if isinstance(exc, bexc.ParamValidationError):
        return SourceError(f"{what}: invalid request to AWS")
    return SourceError(f"{what}: {type(exc).__name__}")


class AwsClients:
    """Builds per-org S3/STS clients (see the module docstring); one per process, from the lifespan."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="aws")
        self._roles: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
        self._session: Any = None  # one boto3 session: its loader parses the service models once
        self._lock = threading.Lock()  # boto3 sessions are not thread-safe; the clients they make are

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _call(self, fn: Callable[[], T], what: str) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except Exception as exc:  # noqa: BLE001 - every boto error is translated here
            raise translate(exc, what) from None

    def _config(self) -> Any:
        from botocore.config import Config

        timeout = self._settings.aws_timeout_seconds
        return Config(
            connect_timeout=min(timeout, 10.0),
            read_timeout=timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"} if self._settings.aws_endpoint_url else None,
        )

    def _client(self, service: str, keys: dict[str, str] | None, region: str, *, platform: bool = False) -> Any:
        """A client signing with ``keys`` (an explicit key pair: boto3's credential chain, the
        platform's identity, is not consulted) — or, only when asked for by name, with that chain."""
        import boto3

        if not platform and not (keys and keys.get("aws_access_key_id") and keys.get("aws_secret_access_key")):
            raise SourceCredentialsError("no AWS credentials of the organization to sign with")
        with self._lock:
            if self._session is None:
                self._session = boto3.session.Session()
            return self._session.client(
                service,
                region_name=region,
                endpoint_url=self._settings.aws_endpoint_url,
                config=self._config(),
                **(keys or {}),
            )

    def _org_keys(self, creds: AwsCredentials, org_slug: str) -> dict[str, str]:
        """Blocking (called on the pool): the key pair to sign the org's requests with."""
        if creds.kind == "access_key":
            if not creds.access_key_id or not creds.secret_access_key:
                raise SourceCredentialsError("the stored AWS access key pair is incomplete")
            return {"aws_access_key_id": creds.access_key_id, "aws_secret_access_key": creds.secret_access_key}
        if not creds.role_arn or not creds.external_id:
            raise SourceCredentialsError("the stored AWS role has no ARN or external id")
        cache_key = (creds.role_arn, creds.external_id)
        cached = self._roles.get(cache_key)
        if cached is not None and cached[0] > time.time() + 300:
            return cached[1]
        # The platform's own identity, used for this one call only (AssumeRole with the org's external id).
        sts = self._client("sts", None, self._settings.aws_default_region, platform=True)
        found = sts.assume_role(
            RoleArn=creds.role_arn,
            RoleSessionName=f"convergence-{org_slug}"[:64],
            ExternalId=creds.external_id,
            DurationSeconds=ROLE_SESSION_SECONDS,
        )["Credentials"]
        keys = {
            "aws_access_key_id": found["AccessKeyId"],
            "aws_secret_access_key": found["SecretAccessKey"],
            "aws_session_token": found["SessionToken"],
        }
        self._roles[cache_key] = (found["Expiration"].timestamp(), keys)
        return keys

    async def identity(self, creds: AwsCredentials, *, org_slug: str) -> Identity:
        """Who the credentials are (STS GetCallerIdentity; a role is assumed first)."""
        what = f"role {creds.role_arn}" if creds.kind == "assume_role" else "the access key"

        def call() -> Identity:
            sts = self._client("sts", self._org_keys(creds, org_slug), self._settings.aws_default_region)
            found = sts.get_caller_identity()
            return Identity(account=str(found["Account"]), arn=str(found["Arn"]))

        return await self._call(call, what)

    async def bucket(self, creds: AwsCredentials, *, bucket: str, region: str, org_slug: str) -> S3Bucket:
        keys = await self._call(lambda: self._org_keys(creds, org_slug), f"role {creds.role_arn}")
        client = await self._call(lambda: self._client("s3", keys, region), f"s3://{bucket}")
        return S3Bucket(self, client, bucket)


class S3Bucket:
    """Reads of one bucket with one org's credentials."""

    def __init__(self, clients: AwsClients, client: Any, bucket: str) -> None:
        self._clients = clients
        self._s3 = client
        self.name = bucket

    def uri(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    async def list(self, prefix: str, *, limit: int = 100_000) -> list[S3Object]:
        """Objects under ``prefix`` (paginated), at most ``limit``."""

        def call() -> list[S3Object]:
            found: list[S3Object] = []
            pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
            for page in pages:
                for item in page.get("Contents", []):
                    found.append(S3Object(str(item["Key"]), int(item.get("Size") or 0), item["LastModified"]))
                    if len(found) >= limit:
                        return found
            return found

        return await self._clients._call(call, self.uri(prefix))

    async def read(self, key: str, *, max_bytes: int) -> bytes:
        def call() -> bytes:
            response = self._s3.get_object(Bucket=self.name, Key=key)
            if int(response.get("ContentLength") or 0) > max_bytes:
                response["Body"].close()
                raise SourceError(f"{self.uri(key)} is larger than {max_bytes} bytes")
            return bytes(response["Body"].read())

        return await self._clients._call(call, self.uri(key))

    async def size(self, key: str) -> int:
        return await self._clients._call(
            lambda: int(self._s3.head_object(Bucket=self.name, Key=key)["ContentLength"]), self.uri(key)
        )

    async def download(self, key: str, path: Path) -> int:
        """Copy an object to a local file, streamed in 1 MiB chunks over one connection (boto3's
        threaded transfer kept ~25 MiB more resident for the same speed here); its size in bytes."""

        def call() -> int:
            path.parent.mkdir(parents=True, exist_ok=True)
            body = self._s3.get_object(Bucket=self.name, Key=key)["Body"]
            size = 0
            try:
                with path.open("wb") as handle:
                    for chunk in body.iter_chunks(_CHUNK):
                        handle.write(chunk)
                        size += len(chunk)
            finally:
                body.close()
            return size

        return await self._clients._call(call, self.uri(key))


@dataclass(frozen=True, slots=True)
class AwsExport:
    """An org's export and a bucket client with the org's credentials."""

    source: AwsSource
    bucket: S3Bucket
