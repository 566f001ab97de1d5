"""Bodies of the AWS routes: an org's AWS credentials in (metadata out), its AWS source.

Credentials are validated strictly (AWS's formats; errors name the field and the rule, never the
value) and the secret never comes back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from src.core.aws.source import BUCKET_PATTERN, EXPORT_NAME_PATTERN, PREFIX_PATTERN, REGION_PATTERN

MAX_CREDENTIALS_BYTES = 4 * 1024


class AwsCredentialsRequest(BaseModel):
    """An IAM user's access key pair, or a role the service assumes with the org's external id."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    access_key_id: str | None = Field(
        None, pattern=r"^AKIA[A-Z0-9]{16}$", description="Long-term access key id (AKIA...)."
    )
    secret_access_key: SecretStr | None = Field(None, description="Its secret access key (40 characters).")
    role_arn: str | None = Field(
        None,
        pattern=r"^arn:aws(-[a-z]+)*:iam::\d{12}:role/[A-Za-z0-9_+=,.@\-/]{1,512}$",
        description="Role to assume: arn:aws:iam::ACCOUNT:role/NAME.",
    )
    external_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_+=,.@:/\-]{2,1224}$", description="Must be convergence-<org_slug>."
    )

    @model_validator(mode="after")
    def _one_kind(self) -> AwsCredentialsRequest:
        keys = self.access_key_id is not None or self.secret_access_key is not None
        role = self.role_arn is not None or self.external_id is not None
        if keys == role:
            raise ValueError("give either access_key_id and secret_access_key, or role_arn and external_id")
        if keys and (self.access_key_id is None or self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together")
        if role and (self.role_arn is None or self.external_id is None):
            raise ValueError("role_arn and external_id go together")
        secret = self.secret_access_key.get_secret_value() if self.secret_access_key else None
        if secret is not None and (len(secret) != 40 or not secret.replace("/", "").replace("+", "").isalnum()):
            raise ValueError("secret_access_key must be 40 characters of A-Z, a-z, 0-9, / and +")
        return self

    def document(self) -> dict[str, str]:
        """What is stored (encrypted): the validated fields, secret included."""
        if self.role_arn is not None and self.external_id is not None:
            return {"role_arn": self.role_arn, "external_id": self.external_id}
        assert self.access_key_id is not None and self.secret_access_key is not None
        return {"access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key.get_secret_value()}


class AwsCredentialResponse(BaseModel):
    """What is known about an org's stored AWS credentials; never the secret."""

    org_slug: str
    credential_id: str
    provider: str
    credential_type: Literal["access_key", "assume_role"]
    principal: str | None = Field(description="The ARN the credentials act as (STS GetCallerIdentity).")
    account_id: str | None
    external_id: str | None = Field(description="For a role: the external id its trust policy must require.")
    status: Literal["ACTIVE", "REVOKED"]
    created_at: datetime
    updated_at: datetime | None
    last_validated_at: datetime | None


class AwsSourceRequest(BaseModel):
    """Where the org's AWS Data Export (table COST_AND_USAGE_REPORT, CUR 2.0) delivers."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    bucket: str = Field(pattern=BUCKET_PATTERN, description="The export's S3 bucket.")
    prefix: str = Field("", max_length=512, description="The export's S3 path prefix (may be empty).")
    export_name: str = Field(pattern=EXPORT_NAME_PATTERN, description="The export's name.")
    region: str = Field(pattern=REGION_PATTERN, description="The bucket's region, e.g. us-east-1.")

    @model_validator(mode="after")
    def _prefix(self) -> AwsSourceRequest:
        import re

        prefix = self.prefix.strip("/")
        if prefix and not re.fullmatch(PREFIX_PATTERN, prefix):
            raise ValueError("prefix must be S3 key segments of letters, digits and !_.*'()- separated by /")
        object.__setattr__(self, "prefix", prefix)
        return self


class AwsSourceResponse(BaseModel):
    org_slug: str
    bucket: str | None
    prefix: str | None
    export_name: str | None
    region: str | None
    export_uri: str | None
    set_by: Literal["admin", "org"] | None
    billing_periods: list[str] | None = Field(None, description="Billing periods the export has delivered.")
    latest_manifest: str | None = None
