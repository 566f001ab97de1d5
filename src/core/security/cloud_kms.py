"""Google Cloud KMS encryption (``KMS_KEY_NAME``), on the official google-cloud-kms client.

Imported only when KMS_KEY_NAME is set. Every request and response is integrity-checked with
CRC32C (as Google recommends), the organization is bound to each ciphertext as additional
authenticated data, and transient failures are retried a bounded number of times.
``KMS_API_ENDPOINT`` points the client (REST transport, anonymous credentials) at another endpoint:
the tests use a local fake that serves KMS's REST API.
"""

from __future__ import annotations

import asyncio
from typing import Any

import google_crc32c
from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import kms

from src.core.errors import ServiceError, ServiceUnavailableError
from src.core.security.kms import DecryptionError

_RETRY = gretry.Retry(
    predicate=gretry.if_exception_type(gexc.ServiceUnavailable, gexc.InternalServerError, gexc.TooManyRequests),
    initial=0.1,
    maximum=2.0,
    multiplier=2.0,
    timeout=15.0,
)
_TIMEOUT = 10.0


def crc32c(data: bytes) -> int:
    return int(google_crc32c.value(data))


class IntegrityError(ServiceError):
    status_code = 500
    code = "kms_integrity_error"


class CloudKms:
    def __init__(self, key_name: str, *, api_endpoint: str | None = None) -> None:
        self.key_name = key_name
        if api_endpoint:
            self._client = kms.KeyManagementServiceClient(
                credentials=AnonymousCredentials(),
                transport="rest",
                client_options=ClientOptions(api_endpoint=api_endpoint),
            )
        else:
            self._client = kms.KeyManagementServiceClient()

    async def _call(self, fn: Any, request: dict[str, Any]) -> Any:
        try:
            return await asyncio.to_thread(fn, request=request, retry=_RETRY, timeout=_TIMEOUT)
        except (gexc.ServiceUnavailable, gexc.InternalServerError, gexc.TooManyRequests, gexc.RetryError) as exc:
            raise ServiceUnavailableError(f"Cloud KMS unavailable: {type(exc).__name__}") from None
        except gexc.GoogleAPICallError as exc:
            raise DecryptionError(f"Cloud KMS refused the request: {type(exc).__name__}") from None

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
        )
        if not response.verified_plaintext_crc32c or not response.verified_additional_authenticated_data_crc32c:
            raise IntegrityError("Cloud KMS did not verify the request checksums")
        if int(response.ciphertext_crc32c) != crc32c(response.ciphertext):
            raise IntegrityError("ciphertext checksum mismatch in the Cloud KMS response")
        if not str(response.name).startswith(self.key_name):
            raise IntegrityError("Cloud KMS answered for another key")
        return bytes(response.ciphertext)

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
        )
        if int(response.plaintext_crc32c) != crc32c(response.plaintext):
            raise IntegrityError("plaintext checksum mismatch in the Cloud KMS response")
        return bytes(response.plaintext)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.transport.close)
