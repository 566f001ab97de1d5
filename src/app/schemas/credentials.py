"""Bodies of the org credential routes: a GCP service-account key file in, metadata out.

The key file is validated strictly: Google's documented fields only, each bounded, the private key
an unencrypted PEM private key that parses, the token endpoint Google's own over https (it is
where the key's signed assertions are sent). Errors name the field and the rule, never the value.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

MAX_KEY_FILE_BYTES = 16 * 1024
_PEM_BEGIN, _PEM_END = "-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----"
_DOMAIN = r"^[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?)+$"
_TOKEN_HOSTS = {"oauth2.googleapis.com", "accounts.google.com", "www.googleapis.com"}


def _https_url(value: str, field: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or parts.username or parts.password:
        raise ValueError(f"{field} must be an https URL")
    return value


class GcpServiceAccountKey(BaseModel):
    """A service account's JSON key file, as Google issues it (``gcloud iam service-accounts keys create``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: Literal["service_account"]
    project_id: str = Field(
        pattern=r"^(?:[a-z][a-z0-9.\-]{0,61}[a-z0-9]:)?[a-z][a-z0-9\-]{4,28}[a-z0-9]$", description="GCP project id."
    )
    private_key_id: str = Field(pattern=r"^[0-9a-f]{40}$", description="Id of the key (40 hex digits).")
    private_key: SecretStr = Field(description="Unencrypted PEM private key (-----BEGIN PRIVATE KEY-----).")
    client_email: str = Field(
        max_length=254,
        pattern=r"^[a-z][a-z0-9\-]{4,29}@[a-z0-9][a-z0-9.:\-]{0,200}\.iam\.gserviceaccount\.com$",
        description="The service account, NAME@PROJECT.iam.gserviceaccount.com.",
    )
    client_id: str = Field(pattern=r"^[0-9]{1,32}$", description="Numeric id of the service account.")
    universe_domain: str | None = Field(None, max_length=253, pattern=_DOMAIN)  # before token_uri: it checks it
    token_uri: str = Field(max_length=2048, description="Google's OAuth token endpoint (https).")
    auth_uri: str | None = Field(None, max_length=2048)
    auth_provider_x509_cert_url: str | None = Field(None, max_length=2048)
    client_x509_cert_url: str | None = Field(None, max_length=2048)

    @field_validator("private_key")
    @classmethod
    def _pem_private_key(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value().strip()
        if len(text) > 8192:
            raise ValueError("private_key is longer than 8192 characters")
        if not text.startswith(_PEM_BEGIN) or not text.endswith(_PEM_END):
            raise ValueError(f"private_key must be an unencrypted PEM private key ({_PEM_BEGIN} ... {_PEM_END})")
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            key = load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            raise ValueError("private_key does not parse as a PEM private key") from None
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
            raise ValueError("private_key must be an RSA key of at least 2048 bits")
        return SecretStr(text + "\n")

    @field_validator("auth_uri", "auth_provider_x509_cert_url", "client_x509_cert_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        return None if value is None else _https_url(value, "the URL")

    @field_validator("token_uri")
    @classmethod
    def _google_token_endpoint(cls, value: str, info: ValidationInfo) -> str:
        parts = urlsplit(_https_url(value, "token_uri"))
        universe = info.data.get("universe_domain")
        allowed = _TOKEN_HOSTS | ({f"oauth2.{universe}"} if universe else set())
        if (parts.hostname or "").lower() not in allowed or parts.port not in (None, 443):
            raise ValueError("token_uri must be Google's token endpoint, https://oauth2.googleapis.com/token")
        return value

    def document(self) -> dict[str, str]:
        """The key file to store (encrypted): the validated fields, secret included."""
        data = self.model_dump(exclude_none=True, exclude={"private_key"})
        data["private_key"] = self.private_key.get_secret_value()
        return data


class CredentialResponse(BaseModel):
    """What is known about an org's stored credentials; never the key itself."""

    org_slug: str
    credential_id: str
    provider: str
    credential_type: str
    principal: str | None = Field(description="The service account's e-mail (client_email).")
    project_id: str | None
    status: Literal["ACTIVE", "REVOKED"]
    created_at: datetime
    updated_at: datetime | None
    last_validated_at: datetime | None
