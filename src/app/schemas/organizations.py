"""Request and response bodies of the organization routes."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

from src.core.security.api_keys import ORG_SLUG_PATTERN

__all__ = ["ORG_SLUG_PATTERN"]
TABLE_PATTERN = r"^[a-z][a-z0-9\-]{4,61}[a-z0-9]\.[A-Za-z_][A-Za-z0-9_]{0,1023}\.[A-Za-z_][A-Za-z0-9_]{0,1023}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OnboardRequest(_Body):
    org_slug: str = Field(pattern=ORG_SLUG_PATTERN, description="Lowercase letters, digits, underscore; 3-50.")
    company_name: str = Field(min_length=1, max_length=200)
    admin_email: EmailStr
    subscription_plan: str = Field(
        "STARTER", min_length=1, max_length=40, description="STARTER, PROFESSIONAL or SCALE."
    )
    billing_export_table: str | None = Field(
        None, pattern=TABLE_PATTERN, description="project.dataset.gcp_billing_export_v1_<ACCOUNT_ID>"
    )

    @field_validator("subscription_plan")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("company_name")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(ord(ch) < 32 for ch in value):
            raise ValueError("must not contain control characters")
        return value


class OnboardResponse(BaseModel):
    org_slug: str
    api_key: str = Field(description="Shown once; store it now.")
    dataset_id: str
    dataset_created: bool
    subscription_plan: str
    limits: dict[str, int]
    billing_export_table: str | None


class DryRunResponse(BaseModel):
    valid: bool
    checks: list[dict[str, Any]]


class OrgResponse(BaseModel):
    org_slug: str
    company_name: str
    admin_email: str
    status: str
    subscription_plan: str | None
    org_dataset: str | None
    billing_export_table: str | None
    limits: dict[str, int | None]
    created_at: datetime
    updated_at: datetime | None


class BillingSourceRequest(_Body):
    billing_export_table: str | None = Field(
        description="project.dataset.table of the GCP standard usage cost export; null clears it.",
        pattern=TABLE_PATTERN,
    )


class DailyCost(BaseModel):
    usage_date: date
    provider: Literal["gcp", "aws"]
    currency: str | None
    group_id: str | None = None
    group_name: str | None = None
    row_count: int
    gross_cost: float
    credits: float
    net_cost: float


class DailyCostsResponse(BaseModel):
    org_slug: str
    view: str = Field("provider", description="provider: the providers' own cost tables.")
    start_date: date
    end_date: date
    group_by: str | None
    provider: Literal["gcp", "aws", "both"]
    table: str = Field(description="The GCP cost table (the AWS one when provider=aws).")
    tables: dict[str, str] = Field(description="Provider -> the cost table read.")
    days: list[DailyCost]
    currencies: list[str] = Field(description="Currencies in the window; amounts of different ones are never added.")
    totals_currency: str | None = Field(description="Currency of `totals`; null when the window holds several.")
    totals: dict[str, float] | None = Field(description="Sums over the window; null when it holds several currencies.")
    totals_by_currency: dict[str, dict[str, float]] = Field(description="Currency -> sums over both providers.")
    totals_by_provider: dict[str, dict[str, dict[str, float]]] = Field(description="Provider -> currency -> sums.")


class FocusDailyCost(BaseModel):
    usage_date: date
    currency: str = Field(description="BillingCurrency of the amounts of this row.")
    group_id: str | None = None
    group_name: str | None = None
    row_count: int
    billed_cost: float
    effective_cost: float
    list_cost: float
    contracted_cost: float


class FocusDailyCostsResponse(BaseModel):
    org_slug: str
    view: str = Field("focus", description="focus: the FOCUS table (focus_cost), all providers.")
    start_date: date
    end_date: date
    group_by: str | None
    provider: Literal["gcp", "aws", "both"]
    table: str
    days: list[FocusDailyCost]
    currencies: list[str] = Field(description="Billing currencies in the window; never added together.")
    totals_currency: str | None = Field(description="BillingCurrency of `totals`; null when the window holds several.")
    totals: dict[str, float] | None = Field(description="Sums over the window; null when it holds several currencies.")
    totals_by_currency: dict[str, dict[str, float]] = Field(description="BillingCurrency -> sums.")
