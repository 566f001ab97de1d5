"""Request and response bodies of the organization routes."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator
from starlette.convertors import StringConvertor, register_url_convertor

from src.app.schemas.common import Page
from src.core.security.api_keys import ORG_SLUG_PATTERN

__all__ = ["ORG_SLUG_PATTERN"]
RESERVED_SLUGS = ("dryrun", "onboard")  # paths of their own under /api/v1/organizations


class _OrgPathConvertor(StringConvertor):
    """``GET /api/v1/organizations/{org_slug:org}`` never matches the reserved words, so the paths
    ``…/dryrun`` and ``…/onboard`` serve POST only (405 with ``Allow: POST`` otherwise). Any other
    segment still reaches the route, whose parameter validation answers 422 for a bad slug."""

    regex = f"(?!(?:{'|'.join(RESERVED_SLUGS)})$)[^/]+"


register_url_convertor("org", _OrgPathConvertor())
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

    @field_validator("org_slug")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_SLUGS:
            raise ValueError(f"{value!r} is reserved")
        return value

    @field_validator("company_name")
    @classmethod
    def _printable(cls, value: str) -> str:
        if any(ord(ch) < 32 for ch in value):
            raise ValueError("must not contain control characters")
        return value


class Limits(BaseModel):
    daily_run_limit: int | None
    monthly_run_limit: int | None
    concurrent_run_limit: int | None


class OnboardResponse(BaseModel):
    org_slug: str
    api_key: str = Field(description="Shown once; store it now.")
    key_id: str = Field(description="Id of that key (named 'default').")
    key_name: str
    dataset_id: str
    dataset_created: bool
    subscription_plan: str
    limits: Limits
    billing_export_table: str | None


class DryRunCheck(BaseModel):
    check: str
    passed: bool
    message: str


class DryRunResponse(BaseModel):
    valid: bool
    checks: list[DryRunCheck]


class OrgResponse(BaseModel):
    org_slug: str
    company_name: str
    admin_email: str
    status: str
    subscription_plan: str | None
    org_dataset: str | None
    billing_export_table: str | None
    limits: Limits
    created_at: datetime
    updated_at: datetime | None


class OrgDetail(OrgResponse):
    """The profile as the admin's lifecycle routes answer it."""

    billing_source_set_by: str | None
    suspended_at: datetime | None
    suspended_reason: str | None


class OrgSummary(BaseModel):
    org_slug: str
    company_name: str
    admin_email: str
    status: str
    subscription_plan: str | None
    org_dataset: str | None
    created_at: datetime
    suspended_at: datetime | None
    suspended_reason: str | None


class OrgListResponse(Page):
    organizations: list[OrgSummary]
    limit: int
    offset: int


class BillingSourceRequest(_Body):
    billing_export_table: str | None = Field(
        description="project.dataset.table of the GCP standard usage cost export; null clears it.",
        pattern=TABLE_PATTERN,
    )


class BillingSourceResponse(BaseModel):
    org_slug: str
    billing_export_table: str | None
    set_by: str | None = Field(description="admin or org; null when cleared.")


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


class CostTotals(BaseModel):
    row_count: int
    gross_cost: float
    credits: float
    net_cost: float


class DailyCostsResponse(Page):
    org_slug: str
    view: str = Field("provider", description="provider: the providers' own cost tables.")
    start_date: date
    end_date: date
    group_by: Literal["service", "project", "sku"] | None
    provider: Literal["gcp", "aws", "both"]
    table: str = Field(description="The GCP cost table (the AWS one when provider=aws).")
    tables: dict[str, str] = Field(description="Provider -> the cost table read.")
    days: list[DailyCost] = Field(description="One page of rows, by day, provider, currency (and group).")
    currencies: list[str] = Field(description="Currencies in the window; amounts of different ones are never added.")
    totals_currency: str | None = Field(description="Currency of `totals`; null when the window holds several.")
    totals: CostTotals | None = Field(
        description="Sums over the whole window (every page); null when it holds several currencies."
    )
    totals_by_currency: dict[str, CostTotals] = Field(description="Currency -> sums over the providers asked for.")
    totals_by_provider: dict[str, dict[str, CostTotals]] = Field(description="Provider -> currency -> sums.")


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


class FocusTotals(BaseModel):
    row_count: int
    billed_cost: float
    effective_cost: float
    list_cost: float
    contracted_cost: float


class FocusDailyCostsResponse(Page):
    org_slug: str
    view: str = Field("focus", description="focus: the FOCUS table (focus_cost), all providers.")
    start_date: date
    end_date: date
    group_by: Literal["service_category", "service_name", "provider", "sub_account"] | None
    provider: Literal["gcp", "aws", "both"]
    table: str
    days: list[FocusDailyCost] = Field(description="One page of rows, by day, currency (and group).")
    currencies: list[str] = Field(description="Billing currencies in the window; never added together.")
    totals_currency: str | None = Field(description="BillingCurrency of `totals`; null when the window holds several.")
    totals: FocusTotals | None = Field(
        description="Sums over the whole window (every page); null when it holds several currencies."
    )
    totals_by_currency: dict[str, FocusTotals] = Field(description="BillingCurrency -> sums.")


class UsageToday(BaseModel):
    date: date
    runs: int
    limit: int
    remaining: int
    resets_at: str


class UsageMonth(BaseModel):
    month: str = Field(description="YYYY-MM (UTC).")
    runs: int
    limit: int
    remaining: int
    resets_at: str


class UsageConcurrent(BaseModel):
    running: int
    slots_in_use: int
    limit: int


class UsageWarehouse(BaseModel):
    month: str = Field(description="YYYY-MM (UTC).")
    runs: int = Field(description="Runs this month that recorded warehouse statistics.")
    bytes_processed: int | None = Field(description="Null on DuckDB, which reports none.")
    bytes_billed: int | None
    slot_ms: int | None
    price_per_tib_usd: float = Field(description="On-demand price per TiB (setting BIGQUERY_PRICE_PER_TIB_USD).")
    estimated_cost_usd: float | None = Field(description="bytes_billed / 2^40 x price_per_tib_usd.")


class UsageResponse(BaseModel):
    org_slug: str
    today: UsageToday
    month: UsageMonth
    concurrent: UsageConcurrent
    warehouse: UsageWarehouse
