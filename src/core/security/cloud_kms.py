"""Google Cloud KMS encryption (``KMS_KEY_NAME``), on the official google-cloud-kms client.

Imported only when KMS_KEY_NAME is set. Every request and response is integrity-checked with
CRC32C (as Google recommends), the organization is bound to each ciphertext as additional
authenticated data, and transient failures (503/500/429/504, a dropped connection) are retried
with backoff for a bounded time. ``KMS_API_ENDPOINT`` points the client elsewhere with the REST
transport: a plaintext ``http://`` endpoint (the tests' local fake of KMS's REST API) is called
with anonymous credentials; an ``https://`` one (e.g. a regional endpoint) with the service's own.

Errors leave this module as project errors with generic messages (they can end up in a run's
step log); Google's own text goes to the log only. Nothing here logs plaintext or ciphertext.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import google_crc32c
from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import kms

from src.core.blocking import BlockingCalls, default_calls
from src.core.errors import ServiceError, ServiceUnavailableError
from src.core.security.kms import DecryptionError

log = logging.getLogger(__name__)

KEY_NAME_RE = re.compile(r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$")
_TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.InternalServerError,
    gexc.TooManyRequests,
    gexc.DeadlineExceeded,
    OSError,  # REST transport: requests' ConnectionError / Timeout (unreachable, reset, timed out)
)


def crc32c(data: bytes) -> int:
    return int(google_crc32c.value(data))


class IntegrityError(ServiceError):
    status_code = 500
    code = "kms_integrity_error"


class EncryptionError(ServiceError):
    status_code = 500
    code = "encryption_failed"


class CloudKms:
    def __init__(
        self,
        key_name: str,
        *,
        api_endpoint: str | None = None,
        retry_timeout_seconds: float = 15.0,
        attempt_timeout_seconds: float = 10.0,
        retry_initial_seconds: float = 0.1,
        calls: BlockingCalls | None = None,
    ) -> None:
        self._calls = calls or default_calls()
        if not KEY_NAME_RE.fullmatch(key_name):
            raise ServiceError(
                "KMS_KEY_NAME must look like projects/P/locations/L/keyRings/R/cryptoKeys/K", code="config_error"
            )
        self.key_name = key_name
        self._retry = gretry.Retry(
            predicate=gretry.if_exception_type(*_TRANSIENT),
            initial=retry_initial_seconds,
            maximum=2.0,
            multiplier=2.0,
            timeout=retry_timeout_seconds,
        )
        self._attempt_timeout = attempt_timeout_seconds
        if api_endpoint:
            self._client = kms.KeyManagementServiceClient(
                credentials=AnonymousCredentials() if api_endpoint.startswith("http://") else None,
                transport="rest",
                client_options=ClientOptions(api_endpoint=api_endpoint),
            )
        else:
            self._client = kms.KeyManagementServiceClient()

    async def _call(self, fn: Any, request: dict[str, Any], failure: type[ServiceError]) -> Any:
        what = "decrypt" if failure is DecryptionError else "encrypt"
        try:
            return await self._calls.run(fn, request=request, retry=self._retry, timeout=self._attempt_timeout)
        except (*_TRANSIENT, gexc.RetryError) as exc:
            log.warning("Cloud KMS unavailable", extra={"kms_call": what, "error": _describe(exc)})
            raise ServiceUnavailableError("Cloud KMS is unavailable; retry shortly", code="kms_unavailable") from None
        except gexc.GoogleAPICallError as exc:
            # Refused: unknown key, no permission, or (decrypt) a ciphertext that does not
            # authenticate under this key and org.
            log.warning("Cloud KMS refused the request", extra={"kms_call": what, "error": _describe(exc)})
            raise failure(f"Cloud KMS could not {what} the stored secret") from None

    async def encrypt(self, plaintext: bytes, *, aad: bytes) -> bytes:
        response = await self._call(
            self._client.encrypt,
            {
                "name": self.key_name,
                "plaintext": plaintext,
                "plaintext_crc32c": crc32c(plaintext),
                "additional_authenticated_data": aad,
                "additional_authenticated_data_crc32c": crc32c(aad),
            },
            EncryptionError,
        )
        if not response.verified_plaintext_crc32c or not response.verified_additional_authenticated_data_crc32c:
            raise IntegrityError("Cloud KMS did not verify the request checksums")
        ciphertext = bytes(response.ciphertext)
        if response.ciphertext_crc32c is None or int(response.ciphertext_crc32c) != crc32c(ciphertext):
            raise IntegrityError("ciphertext checksum mismatch in the Cloud KMS response")
        name = str(response.name)
        if name != self.key_name and not name.startswith(self.key_name + "/cryptoKeyVersions/"):
            raise IntegrityError("Cloud KMS answered for another key")
        return ciphertext

    async def decrypt(self, ciphertext: bytes, *, aad: bytes) -> bytes:
        response = await self._call(
            self._client.decrypt,
            {
                "name": self.key_name,
                "ciphertext": ciphertext,
                "ciphertext_crc32c": crc32c(ciphertext),
                "additional_authenticated_data": aad,
                "additional_authenticated_data_crc32c": crc32c(aad),
            },
            DecryptionError,
        )
        plaintext = bytes(response.plaintext)
        if response.plaintext_crc32c is None or int(response.plaintext_crc32c) != crc32c(plaintext):
            raise IntegrityError("plaintext checksum mismatch in the Cloud KMS response")
        return plaintext

    async def close(self) -> None:
        await self._calls.run(self._client.transport.close)


def _describe(exc: BaseException) -> str:
    """Google's error text for the log (first line, bounded); it never holds the payload."""
    cause = exc.cause if isinstance(exc, gexc.RetryError) and exc.cause is not None else exc
    message = getattr(cause, "message", None) or str(cause)
    return f"{type(cause).__name__}: {str(message).splitlines()[0][:300] if message else ''}"
