"""The real ``CloudKms`` (google-cloud-kms, REST transport) against the local KMS fake.

Nothing of ours is faked: the client's request and response serialization, CRC32C fields, path
templates, retries and exception mapping all run; only the server is a stand-in.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator

import pytest

from src.core.errors import ServiceError, ServiceUnavailableError
from src.core.security.cloud_kms import CloudKms, EncryptionError, IntegrityError
from src.core.security.kms import DecryptionError, aad_for_org, decrypt_text, encrypt_text
from tests.kms_fake import KmsFake

KEY = "projects/test-proj/locations/global/keyRings/convergence/cryptoKeys/secrets"


@pytest.fixture(scope="module")
def fake() -> Iterator[KmsFake]:
    with KmsFake() as server:
        server.add_key(KEY)
        yield server


@pytest.fixture
def kms(fake: KmsFake) -> Iterator[CloudKms]:
    fake.reset()
    client = CloudKms(KEY, api_endpoint=fake.endpoint, retry_timeout_seconds=2.0, retry_initial_seconds=0.01)
    yield client
    asyncio.run(client.close())


def test_round_trip_binds_the_org_as_aad(kms: CloudKms, fake: KmsFake) -> None:
    async def flow() -> tuple[str, str]:
        blob = await encrypt_text(kms, "secret value ✓", org_slug="acme", purpose="api_key")
        return blob, await decrypt_text(kms, blob, org_slug="acme", purpose="api_key")

    blob, text = asyncio.run(flow())
    assert text == "secret value ✓"
    assert "secret value" not in base64.b64decode(blob).decode("latin-1")
    assert [c.method for c in fake.calls] == ["encrypt", "decrypt"]
    assert all(c.aad == aad_for_org("acme", "api_key") and c.status == 200 for c in fake.calls)


def test_another_orgs_aad_does_not_decrypt(kms: CloudKms) -> None:
    async def flow() -> None:
        blob = await encrypt_text(kms, "acme's secret", org_slug="acme", purpose="gcp_credentials")
        await decrypt_text(kms, blob, org_slug="globex", purpose="gcp_credentials")

    with pytest.raises(DecryptionError) as info:
        asyncio.run(flow())
    assert "acme's secret" not in info.value.message


def test_another_purpose_does_not_decrypt(kms: CloudKms) -> None:
    async def flow() -> None:
        blob = await encrypt_text(kms, "x", org_slug="acme", purpose="api_key")
        await decrypt_text(kms, blob, org_slug="acme", purpose="gcp_credentials")

    with pytest.raises(DecryptionError):
        asyncio.run(flow())


def test_corrupted_ciphertext_does_not_decrypt(kms: CloudKms) -> None:
    async def flow() -> None:
        ciphertext = bytearray(await kms.encrypt(b"payload", aad=b"aad"))
        ciphertext[-1] ^= 0x01
        await kms.decrypt(bytes(ciphertext), aad=b"aad")

    with pytest.raises(DecryptionError):
        asyncio.run(flow())


@pytest.mark.parametrize("how", ["checksum", "no_checksum", "unverified", "name"])
def test_encrypt_response_failing_integrity_checks_is_refused(kms: CloudKms, fake: KmsFake, how: str) -> None:
    fake.corrupt_next(how)  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        asyncio.run(kms.encrypt(b"payload", aad=b"aad"))


@pytest.mark.parametrize("how", ["checksum", "no_checksum"])
def test_decrypt_response_with_a_wrong_checksum_is_refused(kms: CloudKms, fake: KmsFake, how: str) -> None:
    ciphertext = asyncio.run(kms.encrypt(b"payload", aad=b"aad"))
    fake.corrupt_next(how)  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        asyncio.run(kms.decrypt(ciphertext, aad=b"aad"))


def test_transient_503s_are_retried_then_succeed(kms: CloudKms, fake: KmsFake) -> None:
    fake.fail_next(2, status=503)
    assert asyncio.run(kms.encrypt(b"payload", aad=b"aad"))
    assert [c.status for c in fake.calls] == [503, 503, 200]


def test_a_429_and_a_500_are_retried_too(kms: CloudKms, fake: KmsFake) -> None:
    ciphertext = asyncio.run(kms.encrypt(b"payload", aad=b"aad"))
    fake.fail_next(1, status=429)
    fake.fail_next(1, status=500)
    assert asyncio.run(kms.decrypt(ciphertext, aad=b"aad")) == b"payload"
    assert [c.status for c in fake.calls] == [200, 429, 500, 200]


def test_persistent_503_gives_service_unavailable_after_bounded_retries(fake: KmsFake) -> None:
    fake.reset()
    kms = CloudKms(KEY, api_endpoint=fake.endpoint, retry_timeout_seconds=0.5, retry_initial_seconds=0.01)
    fake.fail_always(503)
    started = time.monotonic()
    try:
        with pytest.raises(ServiceUnavailableError) as info:
            asyncio.run(kms.encrypt(b"payload", aad=b"aad"))
        elapsed, attempts = time.monotonic() - started, fake.count("encrypt")
    finally:
        fake.reset()
        asyncio.run(kms.close())
    assert elapsed < 4
    assert 2 <= attempts < 60  # retried, and the retries stopped
    assert info.value.status_code == 503


def test_unknown_key_is_an_error_not_a_retry(fake: KmsFake) -> None:
    fake.reset()
    kms = CloudKms(KEY.replace("secrets", "missing"), api_endpoint=fake.endpoint, retry_timeout_seconds=2.0)
    try:
        with pytest.raises(EncryptionError) as info:
            asyncio.run(kms.encrypt(b"payload", aad=b"aad"))
        with pytest.raises(DecryptionError):
            asyncio.run(kms.decrypt(b"x" * 40, aad=b"aad"))
    finally:
        asyncio.run(kms.close())
    assert [c.status for c in fake.calls] == [404, 404]
    assert "missing" not in info.value.message  # Google's text goes to the log, not into errors


def test_unreachable_endpoint_is_unavailable_not_a_raw_driver_error() -> None:
    from tests.server import free_port

    kms = CloudKms(KEY, api_endpoint=f"http://127.0.0.1:{free_port()}", retry_timeout_seconds=0.3)
    try:
        with pytest.raises(ServiceUnavailableError):
            asyncio.run(kms.encrypt(b"payload", aad=b"aad"))
    finally:
        asyncio.run(kms.close())


def test_malformed_key_name_is_refused_at_construction() -> None:
    with pytest.raises(ServiceError, match="KMS_KEY_NAME"):
        CloudKms("projects/p/keyRings/r", api_endpoint="http://127.0.0.1:9")


def test_settings_refuse_a_malformed_key_name() -> None:
    from pydantic import ValidationError

    from src.core.settings import Settings

    with pytest.raises(ValidationError):
        Settings(kms_key_name="my-key")
    assert Settings(kms_key_name=KEY).kms_key_name == KEY
