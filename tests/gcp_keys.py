"""Service-account key files for tests: the shape Google issues, with a freshly generated RSA key.

Nothing here talks to Google: building ``google.oauth2`` credentials from such a file only parses
the key, and the tests never ask for a token.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@functools.lru_cache(maxsize=8)
def _pem(seed: str) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def key_file(name: str = "loader", project: str = "customer-proj", **overrides: Any) -> dict[str, Any]:
    email = f"{name}@{project}.iam.gserviceaccount.com"
    data: dict[str, Any] = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": hashlib.sha1(email.encode()).hexdigest(),  # an id, not a security measure
        "private_key": _pem(email),
        "client_email": email,
        "client_id": str(int(hashlib.sha256(email.encode()).hexdigest()[:15], 16)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email.replace('@', '%40')}",
        "universe_domain": "googleapis.com",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def secret_fragments(data: dict[str, Any]) -> list[str]:
    """Pieces of the private key that must never show up anywhere but encrypted."""
    body = "".join(line for line in str(data["private_key"]).splitlines() if not line.startswith("-----"))
    return [body[i : i + 32] for i in range(0, len(body) - 32, max(1, len(body) // 8))]
