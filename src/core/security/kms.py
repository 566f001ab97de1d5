"""Encryption of stored secrets (key copies, webhook URLs, cloud credentials).

Two backends with one interface: a local AES-GCM key file for development (created 0600 on first
start) and Google Cloud KMS when ``KMS_KEY_NAME`` is set. Additional authenticated data binds every
ciphertext to its organization: a ciphertext copied to another org's row does not decrypt.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from src.core.blocking import BlockingCalls
from src.core.errors import ServiceError
from src.core.settings import Settings


class DecryptionError(ServiceError):
    status_code = 500
    code = "decryption_failed"


class Encryptor(Protocol):
    key_name: str

    async def encrypt(self, plaintext: bytes, *, aad: bytes) -> bytes: ...
    async def decrypt(self, ciphertext: bytes, *, aad: bytes) -> bytes: ...
    async def close(self) -> None: ...


def aad_for_org(org_slug: str, purpose: str) -> bytes:
    return f"convergence:{purpose}:{org_slug}".encode()


async def encrypt_text(kms: Encryptor, text: str, *, org_slug: str, purpose: str) -> str:
    return base64.b64encode(await kms.encrypt(text.encode(), aad=aad_for_org(org_slug, purpose))).decode()


async def decrypt_text(kms: Encryptor, blob: str, *, org_slug: str, purpose: str) -> str:
    return (await kms.decrypt(base64.b64decode(blob), aad=aad_for_org(org_slug, purpose))).decode()


def load_or_create_key_file(path: Path) -> bytes:
    """Read the 32-byte key; create it with mode 0600 if missing (atomic: O_EXCL)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = base64.b64decode(path.read_bytes().strip())
        if len(key) != 32:
            raise ServiceError(f"local KMS key file {path} is not a base64 32-byte key") from None
        return key
    key = AESGCM.generate_key(bit_length=256)
    with os.fdopen(fd, "wb") as handle:
        handle.write(base64.b64encode(key) + b"\n")
    return key


class LocalAesGcm:
    """Development stand-in for Cloud KMS: AES-256-GCM with a key file."""

    key_name = "local:aes-256-gcm"

    def __init__(self, key_file: Path) -> None:
        self._aead = AESGCM(load_or_create_key_file(key_file))

    async def encrypt(self, plaintext: bytes, *, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    async def decrypt(self, ciphertext: bytes, *, aad: bytes) -> bytes:
        try:
            return self._aead.decrypt(ciphertext[:12], ciphertext[12:], aad)
        except (InvalidTag, ValueError):
            raise DecryptionError("stored secret could not be decrypted") from None

    async def close(self) -> None:
        return None


def build_encryptor(settings: Settings, calls: BlockingCalls | None = None) -> Encryptor:
    """Cloud KMS when KMS_KEY_NAME is set (client imported lazily), else the local key file."""
    if settings.kms_key_name:
        from src.core.security.cloud_kms import CloudKms

        return CloudKms(settings.kms_key_name, api_endpoint=settings.kms_api_endpoint, calls=calls)
    return LocalAesGcm(settings.local_kms_key_path)
