"""Bodies of the API-key routes: create, rotate, revoke, list. A key is shown once, on the answer
that issued it; listings never carry the key, its hash or its ciphertext."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from starlette.convertors import StringConvertor, register_url_convertor

from src.app.schemas.common import Page, WholeNumber
from src.core.security import scopes

KEY_ID_PATTERN = r"^key_[0-9a-f]{16}$"
KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,63}$"
Scope = Literal["pipelines:run", "pipelines:read", "org:read", "org:write"]


class _KeyIdConvertor(StringConvertor):
    """Routes write ``{key_id:key_id}``: it matches key ids only, so ``DELETE …/api-keys/rotate`` is
    a 405 (that path exists, for POST) rather than an invalid key id."""

    regex = KEY_ID_PATTERN.strip("^$")


register_url_convertor("key_id", _KeyIdConvertor())
assert set(get_args(Scope)) == set(scopes.ALL)  # kept in step with the catalogue


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _unique(value: list[Scope] | None) -> list[Scope] | None:
    return None if value is None else list(dict.fromkeys(value))


class CreateKeyRequest(_Body):
    name: str = Field(pattern=KEY_NAME_PATTERN, description="Unique among the org's active keys, e.g. 'dashboard'.")
    scopes: list[Scope] | None = Field(
        None, min_length=1, max_length=len(scopes.ALL), description="Default: the calling key's scopes (at most)."
    )
    expires_at: AwareDatetime | None = Field(None, description="The key stops working then (default: never).")

    _unique_scopes = field_validator("scopes")(_unique)


class RotateRequest(_Body):
    key_id: str | None = Field(
        None,
        pattern=KEY_ID_PATTERN,
        description="The key to replace (default: the calling key; the admin must name it when the org has several).",
    )
    grace_period_seconds: WholeNumber = Field(
        0, ge=0, description="How long the replaced key keeps working (0 = revoked at once)."
    )
    scopes: list[Scope] | None = Field(
        None,
        min_length=1,
        max_length=len(scopes.ALL),
        description="The new key's scopes (default: the replaced key's), within the calling key's.",
    )

    _unique_scopes = field_validator("scopes")(_unique)


class KeyView(BaseModel):
    key_id: str
    name: str | None
    key_prefix: str | None = Field(description="The org part and the first 4 secret characters.")
    status: Literal["ACTIVE", "EXPIRED", "REVOKED"]
    scopes: list[str]
    created_at: datetime
    created_by: str | None = Field(description="admin or org.")
    last_used_at: datetime | None
    expires_at: datetime | None = Field(description="Set by an expiry or a rotation's grace period.")
    revoked_at: datetime | None
    revoked_reason: str | None
    rotated_from_key_id: str | None = Field(description="The key this one replaced.")
    replaced_by_key_id: str | None = Field(description="Set once a rotation replaced this key.")


class KeyListResponse(Page):
    org_slug: str
    keys: list[KeyView]


class IssuedKeyResponse(KeyView):
    org_slug: str
    api_key: str = Field(description="Shown once; store it now.")


class RotatedKeyResponse(IssuedKeyResponse):
    replaced_key_id: str
    previous_key_expires_at: datetime | None = Field(description="When the replaced key stops working.")
    grace_period_seconds: int


class RevokedKeyResponse(KeyView):
    org_slug: str
    revoked: bool = Field(description="False when the key was not active any more.")
