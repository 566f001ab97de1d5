"""Deterministic demo data for an AWS Data Exports *CUR 2.0* export (table ``COST_AND_USAGE_REPORT``).

The generator writes, under a local directory that stands for the root of an S3 bucket, exactly the
objects one delivery (one *execution*) of a CUR 2.0 export puts into the customer's bucket: the data
files of one billing period and, after them, the period's ``Manifest.json``. Uploading the tree key by
key to an S3 server reproduces the delivery byte for byte. Rows are generated inside DuckDB with SQL
over ``range()`` and an integer hash (no ``random()``, no Python per row), so 1,000,000 rows take a
few seconds, and the same arguments always give the same rows, the same manifest bytes and, with the
same DuckDB build, the same data-file bytes.

Sources (checked with the public documentation; what could not be read in full is said so)
-----------------------------------------------------------------------------------------
* Columns and types: "Data Exports table dictionary -- Cost and Usage Report (CUR) 2.0",
  https://docs.aws.amazon.com/cur/latest/userguide/table-dictionary-cur2.html and its column pages
  (``table-dictionary-cur2-bill``, ``-identity``, ``-line-item``, ``-pricing``, ``-product``,
  ``-reservation``, ``-savings-plan``, ``-discount``, ``-resource-tags``). Types used: ``string``,
  ``double``, ``timestamp`` (bill and usage dates, UTC), ``map<string,string>`` (``product``,
  ``resource_tags``, ``cost_category``) and ``map<string,double>`` for ``discount`` -- the dictionary
  says *map <string, double>* for ``discount``, not string values. The rate columns
  (``line_item_unblended_rate``, ``line_item_blended_rate``, ``line_item_net_unblended_rate``,
  ``pricing_public_on_demand_rate``) are ``string`` in the dictionary and are written as strings
  (``"0.1920000000"``); every cost and amount is ``double``. The column *set* and order are those of
  the default "all columns" query of an export with table configuration ``INCLUDE_RESOURCES=TRUE``,
  ``TIME_GRANULARITY=HOURLY``, no split cost allocation, capacity reservation or IAM principal data
  (the ``SELECT ... FROM COST_AND_USAGE_REPORT`` list AWS users paste into ``aws_bcmdataexports_export``;
  e.g. public Terraform in the code index). Where a reservation page could not be read in full
  (``reservation_number_of_reservations``, ``..._units_per_reservation`` and the other count
  columns) the legacy CUR Athena type ``string`` is used. Map keys are normalised the CUR way
  (``resource_tags['user_team']``, ``product['product_name']``, ``cost_category['environment']``),
  as public CUR 2.0 queries read them.
* S3 layout: "Understanding export delivery",
  https://docs.aws.amazon.com/cur/latest/userguide/dataexports-export-delivery.html -- data in
  ``s3://<bucket>/<prefix>/<export-name>/data/BILLING_PERIOD=YYYY-MM/``, manifest in
  ``s3://<bucket>/<prefix>/<export-name>/metadata/BILLING_PERIOD=YYYY-MM/<export-name>-Manifest.json``,
  delivered only after all data files; refreshed at least daily; a closed period may be updated in
  the two weeks after it ends; delivery preference *overwrite* (``OVERWRITE_REPORT``) or *create
  new* (``CREATE_NEW_REPORT``, API reference ``S3OutputConfigurations``). Data file names
  ``<export-name>-<part-number>.<extension>`` (``-00001.snappy.parquet``, ``-00001.csv.gz``).
* Manifest: "Data Exports manifest file reference",
  https://docs.aws.amazon.com/cur/latest/userguide/dataexports-manifest.html -- top-level
  ``executionId`` ("the same value that appears in the delivery path when your export uses the
  create new report option"), ``exportArn``, ``columns`` (objects with ``name`` and ``type``),
  ``dataFiles`` (full S3 URIs, "we recommend identifying which files to ingest by programmatically
  reading this list") and ``additionalOutputFiles`` (Athena/Redshift integration files; empty here).
  The rest of that table (the name of the billing-period field) and the exact sentence placing the
  execution folder in create-new mode were not readable in the stored copy: the generator writes
  ``billingPeriod: {"start", "end"}`` (the legacy CUR manifest shape) and puts a create-new execution
  under ``.../BILLING_PERIOD=YYYY-MM/<executionId>/`` for both data and manifest. A loader should
  take the billing period from the ``BILLING_PERIOD=`` partition of the key and the files from
  ``dataFiles``, and should look for manifests at both depths, taking the newest.

Delivery layouts (``layout``)
-----------------------------
* ``"overwrite"``: ``<prefix>/<export>/data/BILLING_PERIOD=YYYY-MM/<export>-00001.snappy.parquet``
  (``-00002`` ... when more than ``max_rows_per_file`` rows) and
  ``<prefix>/<export>/metadata/BILLING_PERIOD=YYYY-MM/<export>-Manifest.json``. Earlier data files
  of the period are deleted first, so a delivery with fewer parts leaves no stale part behind.
* ``"create_new"``: ``.../data/BILLING_PERIOD=YYYY-MM/<executionId>/<export>-00001...`` and
  ``.../metadata/BILLING_PERIOD=YYYY-MM/<executionId>/<export>-Manifest.json``; older executions stay.
* ``fmt``: ``"parquet"`` (snappy, DuckDB ``COPY ... (FORMAT parquet, COMPRESSION snappy)``; maps as
  Parquet MAP, timestamps as TIMESTAMP, UTC, no zone), ``"csv"`` (gzip, header row, maps as JSON
  object text, timestamps ``YYYY-MM-DDTHH:MM:SSZ``, NULL as an empty field) or ``"jsonl"`` (gzip,
  one JSON object per line, ``.jsonl.gz`` -- not an AWS format, offered for the loader's JSON path;
  maps as objects, timestamps as in CSV). Either way a delivery is the whole truth for its period:
  load it by replacing the period, never by appending. DuckDB's ``read_parquet``/``read_csv`` detect
  ``BILLING_PERIOD=`` as a Hive partition and add a ``BILLING_PERIOD`` column unless given
  ``hive_partitioning = false``; it is not a column of the files.

Data model
----------
* **Organisation.** Payer (management) account :data:`DEMO_PAYER_ACCOUNT_ID` ``acme-management``
  and two linked usage accounts, ``345678901234`` ``acme-production`` and ``456789012345``
  ``acme-staging`` (:data:`DEMO_ACCOUNTS`). Currency USD throughout, ``bill_bill_type``
  ``Anniversary`` (``Refund`` on refund lines), ``bill_invoicing_entity`` ``Amazon Web Services,
  Inc.``, ``bill_billing_entity`` ``AWS`` or ``AWS Marketplace``. ``bill_invoice_id`` is ``""``
  until the period is final (``invoice_final=True``: one invoice number per billing entity).
  ``bill_billing_period_start_date`` is the 1st of the month 00:00, ``..._end_date`` the 1st of the
  next month 00:00 (exclusive), both UTC.
* **Catalog** (fixed, independent of the seed): 35 SKUs -- Amazon EC2 instance hours (m5.xlarge,
  c6i.2xlarge, m6i.large, Windows m5.large; t3.medium and r6g.xlarge in staging), EBS gp3 volumes
  and snapshots, NAT gateway hours and bytes (product code ``AmazonEC2``), Amazon S3 storage and
  request tiers, Amazon RDS PostgreSQL instances and storage, AWS Lambda GB-seconds and requests,
  Amazon CloudFront data transfer and requests, AWS Data Transfer (internet, inter-region,
  inter-AZ; product code ``AWSDataTransfer``), a Marketplace SaaS product (``Nimbus Observability
  Pro``, seller ``Nimbus Observability, Inc.``), a Compute Savings Plan and AWS Support (Business),
  in ``us-east-1``, ``us-west-2``, ``eu-central-1`` (CloudFront: no region). Each SKU has real-shaped
  ``line_item_usage_type`` (``BoxUsage:m5.xlarge``, ``USW2-BoxUsage:c6i.2xlarge``,
  ``TimedStorage-ByteHrs``, ``USE1-USW2-AWS-Out-Bytes``...), ``line_item_operation``,
  ``product_servicecode``, ``product_product_family``, ``pricing_unit``, a public on-demand rate
  (at most 10 decimals) and a ``product`` map. Zonal SKUs put each resource in a fixed availability
  zone. Resources (instance, volume, snapshot, NAT gateway ids, bucket names, RDS/Lambda/CloudFront
  ARNs) are fixed per (seed, SKU); about 78 % of them carry tags ``user_team`` and ``user_env``,
  some also ``user_app`` and ``aws_created_by``, the rest have an empty ``resource_tags`` map. Every
  row of a linked account has ``cost_category`` ``{business_unit, environment}``.
* **Time.** Hourly granularity. A delivery of period ``P`` through day ``T`` holds the usage days
  ``P.1 .. T``; hourly rows start on an hour boundary of their day and end one hour later
  (``identity_time_interval`` ``start/end``). Monthly rows (Tax, RIFee, the Support Fee) start at
  the period start and end at the period end. The *usage day* of a row is
  ``DATE(line_item_usage_start_date)``, so monthly rows belong to day 1.
* **A day's rows** (``N = rows_per_day``, at least 100), before corrections:

  - ``N // 12`` ``SavingsPlanCoveredUsage`` rows (c6i, m6i, Lambda GB-s of the production account;
    ``line_item_unblended_cost`` = on-demand cost, ``savings_plan_savings_plan_rate`` 28 % / 17 %
    below on-demand, ``savings_plan_savings_plan_effective_cost`` = amount x SP rate) and as many
    ``SavingsPlanNegation`` rows (same line, cost negated, description ``SavingsPlanNegation used by
    AccountId : ... and UsageSku : ...``);
  - 24 ``SavingsPlanRecurringFee`` rows, one per hour, of a fixed hourly commitment
    ``C = max($0.01, N // 12 x $0.15 / 24)`` rounded to cents; ``savings_plan_used_commitment`` =
    ``min(C, effective cost of the hour)``;
  - ``N // 15`` ``DiscountedUsage`` rows of the m5.xlarge reservation (unblended cost 0, rate
    ``0.0000000000``, ``reservation_effective_cost`` = hours x $0.121, public on-demand cost = hours
    x $0.192, reservation ARN, ``pricing_term`` ``Reserved``);
  - ``max(1, N // 100)`` Marketplace ``Usage`` rows (billing entity ``AWS Marketplace``);
  - ``max(1, N // 250)`` ``Credit`` rows (``AWS Activate credits``, -$0.10 .. -$2.50 each);
  - ``N // 20`` ``EdpDiscount`` rows: the first ``N // 20`` AWS usage rows of the day each get a
    discount line (same account, SKU, resource and hour) of -5 % of their cost, rounded half up to
    the micro-dollar (``discount`` map ``{"edp_discount": cost}``, ``discount_total_discount`` =
    cost). Discounts are separate negative lines, as with ``INCLUDE_MANUAL_DISCOUNT_COMPATIBILITY``;
    usage rows keep an empty ``discount`` map and ``line_item_net_unblended_cost`` equals
    ``line_item_unblended_cost`` on every row, so summing either column counts each discount once;
  - the remaining rows are AWS ``Usage`` rows over the catalog (weights per SKU); instance, NAT and
    RDS hours have amount 1.0; storage, requests, transfer and GB-seconds follow a log-normal
    quantile table (three spreads, 1024 quantiles, integer factors) with a weekend dip of 15 %.

  So a day has exactly ``N`` rows plus one ``Refund`` row if it is restated; day 1 also holds the
  monthly rows: one ``RIFee`` (``ceil((N // 15) / 24)`` reserved m5.xlarge instances x hours in the
  month x $0.121), one Support ``Fee`` for the payer (10 % of the month-to-date AWS charges, at
  least $100) and one ``Tax`` row per (usage account, product code) with a positive month-to-date
  base (``Tax for product code ...``, ``line_item_tax_type`` ``USSalesTax``, 8.25 %, half up).
  Fee, Support and Tax depend on the delivery's month-to-date total, so every later delivery
  restates day 1 -- as AWS does.
* **Restatements.** Each usage day ``D`` gets a correction batch ``L = 1 + hash(seed, D) mod 4``
  days after it: a delivery through day ``T`` includes it iff ``T >= D + L``. The batch re-rates
  about 3 % of the day's ``Usage`` rows (amount x 50..95 %) and adds one ``Refund`` row (bill type
  ``Refund``, between -N x $0.0005 and -N x $0.0025). Two deliveries through ``T1 < T2`` therefore differ on every day
  ``D <= T1`` with ``T1 < D + L <= T2`` (always day ``T1`` when ``T2 >= T1 + 4``), on day 1, and by the
  new days ``T1+1 .. T2``. The rows of a day depend only on ``(seed, N, D)`` and whether its batch
  is included, never on the other days of the window.
* **Money.** Amounts are integers: usage in 1e-4 units, rates in 1e-10 USD, costs in micro-dollars
  (``cost = round_half_up(amount x rate)``), written as DOUBLE ``micros / 1e6`` -- at most 6
  decimals, so ``CAST(line_item_unblended_cost AS DECIMAL(18, 6))`` recovers the integer exactly.
  :class:`DeliveryStats` holds rows and ``SUM(line_item_unblended_cost)`` per (usage day, currency)
  and overall as exact :class:`~decimal.Decimal`, summed over the generated integers, not read back
  from the files. Signs are AWS's: usage, fees, tax and covered usage positive; negation, EDP
  discount, credit and refund negative; DiscountedUsage 0.
* **Identity.** ``identity_line_item_id`` is a 32-character ``[a-p]`` string hashed from (seed, day,
  kind, index), unique within the delivery; like AWS's it is not stable across deliveries'
  meaning. Data rows are ordered by (usage start, line item kind, index).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal

import duckdb

Layout = Literal["overwrite", "create_new"]
Fmt = Literal["parquet", "csv", "jsonl"]

DEMO_BUCKET = "acme-billing-exports"
DEMO_PREFIX = "cur2"
DEMO_EXPORT_NAME = "acme-cur2-hourly"
DEMO_PAYER_ACCOUNT_ID = "210987654321"
DEMO_ACCOUNTS: dict[str, str] = {
    "210987654321": "acme-management",
    "345678901234": "acme-production",
    "456789012345": "acme-staging",
}
"""Account id -> account name: the payer (management) account first, then the two linked accounts."""

CURRENCY = "USD"
MIN_ROWS_PER_DAY = 100
MAX_ROWS_PER_DAY = 1_000_000
DEFAULT_MAX_ROWS_PER_FILE = 500_000
EXTENSIONS: dict[str, str] = {"parquet": ".snappy.parquet", "csv": ".csv.gz", "jsonl": ".jsonl.gz"}

EDP_DISCOUNT_BP = 500  # 5 %
TAX_RATE_BP = 825  # 8.25 %
SUPPORT_RATE_PCT = 10
SUPPORT_MINIMUM_MICROS = 100_000_000
SP_HOURLY_PER_COVERED_ROW_MICROS = 150_000
CORRECTION_PER_MILLE = 30
MAX_CORRECTION_LAG_DAYS = 4

_MICROS = 1_000_000
_Q = 10_000  # usage amounts are integers in 1e-4 units
_E10 = 10**10
_M31 = 2_147_483_647
_DAY_KEY_BASE = 730_000
_SLOTS = 1024
_QUANTILES = 1024
_SIGMAS = (0.35, 0.8, 1.4)
_TS = "%Y-%m-%dT%H:%M:%SZ"
_TS_MS = "%Y-%m-%dT%H:%M:%S.000Z"
_INVOICING_ENTITY = "Amazon Web Services, Inc."

# the AWS types of the 114 columns of the export, in file order
# fmt: off
CUR2_COLUMNS: tuple[tuple[str, str], ...] = (
    ("bill_bill_type", "string"), ("bill_billing_entity", "string"),
    ("bill_billing_period_end_date", "timestamp"), ("bill_billing_period_start_date", "timestamp"),
    ("bill_invoice_id", "string"), ("bill_invoicing_entity", "string"), ("bill_payer_account_id", "string"),
    ("bill_payer_account_name", "string"), ("cost_category", "map<string,string>"),
    ("discount", "map<string,double>"), ("discount_bundled_discount", "double"), ("discount_total_discount", "double"),
    ("identity_line_item_id", "string"), ("identity_time_interval", "string"),
    ("line_item_availability_zone", "string"), ("line_item_blended_cost", "double"),
    ("line_item_blended_rate", "string"), ("line_item_currency_code", "string"), ("line_item_legal_entity", "string"),
    ("line_item_line_item_description", "string"), ("line_item_line_item_type", "string"),
    ("line_item_net_unblended_cost", "double"), ("line_item_net_unblended_rate", "string"),
    ("line_item_normalization_factor", "double"), ("line_item_normalized_usage_amount", "double"),
    ("line_item_operation", "string"), ("line_item_product_code", "string"), ("line_item_resource_id", "string"),
    ("line_item_tax_type", "string"), ("line_item_unblended_cost", "double"), ("line_item_unblended_rate", "string"),
    ("line_item_usage_account_id", "string"), ("line_item_usage_account_name", "string"),
    ("line_item_usage_amount", "double"), ("line_item_usage_end_date", "timestamp"),
    ("line_item_usage_start_date", "timestamp"), ("line_item_usage_type", "string"), ("pricing_currency", "string"),
    ("pricing_lease_contract_length", "string"), ("pricing_offering_class", "string"),
    ("pricing_public_on_demand_cost", "double"), ("pricing_public_on_demand_rate", "string"),
    ("pricing_purchase_option", "string"), ("pricing_rate_code", "string"), ("pricing_rate_id", "string"),
    ("pricing_term", "string"), ("pricing_unit", "string"), ("product", "map<string,string>"),
    ("product_comment", "string"), ("product_fee_code", "string"), ("product_fee_description", "string"),
    ("product_from_location", "string"), ("product_from_location_type", "string"),
    ("product_from_region_code", "string"), ("product_instance_family", "string"), ("product_instance_type", "string"),
    ("product_instancesku", "string"), ("product_location", "string"), ("product_location_type", "string"),
    ("product_operation", "string"), ("product_pricing_unit", "string"), ("product_product_family", "string"),
    ("product_region_code", "string"), ("product_servicecode", "string"), ("product_sku", "string"),
    ("product_to_location", "string"), ("product_to_location_type", "string"), ("product_to_region_code", "string"),
    ("product_usagetype", "string"), ("reservation_amortized_upfront_cost_for_usage", "double"),
    ("reservation_amortized_upfront_fee_for_billing_period", "double"), ("reservation_availability_zone", "string"),
    ("reservation_effective_cost", "double"), ("reservation_end_time", "string"),
    ("reservation_modification_status", "string"), ("reservation_net_amortized_upfront_cost_for_usage", "double"),
    ("reservation_net_amortized_upfront_fee_for_billing_period", "double"),
    ("reservation_net_effective_cost", "double"), ("reservation_net_recurring_fee_for_usage", "double"),
    ("reservation_net_unused_amortized_upfront_fee_for_billing_period", "double"),
    ("reservation_net_unused_recurring_fee", "double"), ("reservation_net_upfront_value", "double"),
    ("reservation_normalized_units_per_reservation", "string"), ("reservation_number_of_reservations", "string"),
    ("reservation_recurring_fee_for_usage", "double"), ("reservation_reservation_a_r_n", "string"),
    ("reservation_start_time", "string"), ("reservation_subscription_id", "string"),
    ("reservation_total_reserved_normalized_units", "string"), ("reservation_total_reserved_units", "string"),
    ("reservation_units_per_reservation", "string"),
    ("reservation_unused_amortized_upfront_fee_for_billing_period", "double"),
    ("reservation_unused_normalized_unit_quantity", "double"), ("reservation_unused_quantity", "double"),
    ("reservation_unused_recurring_fee", "double"), ("reservation_upfront_value", "double"),
    ("resource_tags", "map<string,string>"),
    ("savings_plan_amortized_upfront_commitment_for_billing_period", "double"), ("savings_plan_end_time", "string"),
    ("savings_plan_instance_type_family", "string"),
    ("savings_plan_net_amortized_upfront_commitment_for_billing_period", "double"),
    ("savings_plan_net_recurring_commitment_for_billing_period", "double"),
    ("savings_plan_net_savings_plan_effective_cost", "double"), ("savings_plan_offering_type", "string"),
    ("savings_plan_payment_option", "string"), ("savings_plan_purchase_term", "string"),
    ("savings_plan_recurring_commitment_for_billing_period", "double"), ("savings_plan_region", "string"),
    ("savings_plan_savings_plan_a_r_n", "string"), ("savings_plan_savings_plan_effective_cost", "double"),
    ("savings_plan_savings_plan_rate", "double"), ("savings_plan_start_time", "string"),
    ("savings_plan_total_commitment_to_date", "double"), ("savings_plan_used_commitment", "double"),
)
# fmt: on

DUCKDB_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "double": "DOUBLE",
    "timestamp": "TIMESTAMP",
    "map<string,string>": "MAP(VARCHAR, VARCHAR)",
    "map<string,double>": "MAP(VARCHAR, DOUBLE)",
}
"""AWS column type -> the DuckDB type of the column in the Parquet files written here."""

# line item kinds (internal codes; also the sort rank inside one usage hour)
K_USAGE, K_MARKETPLACE, K_DISCOUNTED, K_SP_COVERED, K_SP_NEGATION, K_SP_FEE = 0, 1, 2, 3, 4, 5
K_EDP, K_CREDIT, K_REFUND, K_TAX, K_RI_FEE, K_SUPPORT = 6, 7, 8, 9, 10, 11
LINE_ITEM_TYPES: dict[int, str] = {
    K_USAGE: "Usage",
    K_MARKETPLACE: "Usage",
    K_DISCOUNTED: "DiscountedUsage",
    K_SP_COVERED: "SavingsPlanCoveredUsage",
    K_SP_NEGATION: "SavingsPlanNegation",
    K_SP_FEE: "SavingsPlanRecurringFee",
    K_EDP: "EdpDiscount",
    K_CREDIT: "Credit",
    K_REFUND: "Refund",
    K_TAX: "Tax",
    K_RI_FEE: "RIFee",
    K_SUPPORT: "Fee",
}
_RESOURCE_KINDS = (K_USAGE, K_DISCOUNTED, K_SP_COVERED, K_SP_NEGATION, K_EDP)

# slot pools
_POOL_USAGE, _POOL_MARKETPLACE, _POOL_RI, _POOL_SP = 0, 1, 2, 3


# --------------------------------------------------------------------------------------------------
# Public results
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DayTotals:
    """Rows and exact ``SUM(line_item_unblended_cost)`` of one (usage day, currency)."""

    rows: int
    cost: Decimal


@dataclass(frozen=True)
class DeliveryStats:
    """What one delivery wrote: exact totals from the generated integers, and the S3 keys."""

    export_name: str
    bucket: str
    period: date  # first day of the billing period
    through_day: date  # last usage day included
    execution_id: str
    layout: str
    fmt: str
    rows: int
    total_cost: Decimal
    totals: dict[tuple[date, str], DayTotals] = field(default_factory=dict)  # (usage day, currency)
    restated_days: tuple[date, ...] = ()  # days whose correction batch is included
    data_keys: tuple[str, ...] = ()  # S3 keys (relative to the bucket root), in part order
    manifest_key: str = ""

    @property
    def billing_period(self) -> str:
        return f"{self.period.year:04d}-{self.period.month:02d}"

    def cost_by_day(self, currency: str = CURRENCY) -> dict[date, Decimal]:
        return {day: t.cost for (day, cur), t in sorted(self.totals.items()) if cur == currency}

    def rows_by_day(self, currency: str = CURRENCY) -> dict[date, int]:
        return {day: t.rows for (day, cur), t in sorted(self.totals.items()) if cur == currency}


@dataclass(frozen=True)
class DeliverySpec:
    """Arguments of one planned delivery (see :func:`demo_deliveries`)."""

    period: date
    through_day: date
    execution_id: str


# --------------------------------------------------------------------------------------------------
# Static catalog (independent of the seed)
# --------------------------------------------------------------------------------------------------

_REGIONS: dict[str, str] = {
    "us-east-1": "US East (N. Virginia)",
    "us-west-2": "US West (Oregon)",
    "eu-central-1": "EU (Frankfurt)",
}
_ACCOUNT_IDS = tuple(DEMO_ACCOUNTS)
_PAYER, _PROD, _STAGING = 0, 1, 2
_COST_CATEGORIES: dict[int, tuple[tuple[str, str], ...]] = {
    _PAYER: (("business_unit", "Shared services"), ("environment", "Production")),
    _PROD: (("business_unit", "Retail"), ("environment", "Production")),
    _STAGING: (("business_unit", "Retail"), ("environment", "Non-production")),
}
_TEAMS: dict[int, tuple[str, ...]] = {_PROD: ("web", "payments", "platform", "data"), _STAGING: ("web", "platform")}
_ENVS: dict[int, str] = {_PROD: "production", _STAGING: "staging"}
_APPS = ("storefront", "checkout", "catalog", "search", "ingest")
_CREATORS = ("IAMUser:AIDA5BQ3EXAMPLE7XKZ2:terraform", "AssumedRole:AROA5BQ3EXAMPLEQ7V3M:ci-deployer")


@dataclass(frozen=True)
class _Sku:
    key: str
    account: int
    product_code: str
    service: str
    family: str
    usage_type: str
    operation: str
    region: str | None
    pricing_unit: str
    rate: str  # USD per pricing unit, at most 10 decimals
    description: str
    amount: float | tuple[float, int, bool]  # fixed amount, or (median, spread class, whole units)
    pools: tuple[tuple[int, float], ...]
    resources: tuple[str, int] = ("", 0)
    zonal: bool = False
    instance_type: str | None = None
    instance_family: str | None = None
    norm: float | None = None
    sp_rate: str | None = None
    ri_rate: str | None = None
    entity: str = "AWS"
    legal: str = _INVOICING_ENTITY
    servicecode: str | None = None
    location: str | None = None
    to_region: str | None = None
    to_location: str | None = None
    attrs: tuple[tuple[str, str], ...] = ()


def _ec2(
    key: str,
    account: int,
    itype: str,
    region: str,
    rate: str,
    weight: float,
    n: int,
    norm: float,
    family: str,
    *,
    ut: str,
    os: str = "Linux",
    op: str = "RunInstances",
    ri_rate: str | None = None,
    sp_rate: str | None = None,
    sp_weight: float = 0.0,
) -> _Sku:
    vcpu = {"medium": "2", "large": "2", "xlarge": "4", "2xlarge": "8"}[itype.split(".")[1]]
    pools = [(_POOL_USAGE, weight)]
    if ri_rate:
        pools.append((_POOL_RI, 1.0))
    if sp_rate:
        pools.append((_POOL_SP, sp_weight))
    return _Sku(
        key,
        account,
        "AmazonEC2",
        "Amazon Elastic Compute Cloud",
        "Compute Instance",
        ut,
        op,
        region,
        "Hrs",
        rate,
        f"${rate} per On Demand {os} {itype} Instance Hour",
        1.0,
        tuple(pools),
        resources=("ec2", n),
        zonal=True,
        instance_type=itype,
        instance_family=family,
        norm=norm,
        ri_rate=ri_rate,
        sp_rate=sp_rate,
        attrs=(("operating_system", os), ("tenancy", "Shared"), ("vcpu", vcpu), ("instance_type", itype)),
    )


_U = _POOL_USAGE
_USE1, _USW2, _EUC1 = "us-east-1", "us-west-2", "eu-central-1"
_NIMBUS_CODE = "8hq3u2x7nzd4gkw0c5v1m9tbe"

# fmt: off
_SKUS: tuple[_Sku, ...] = (
    _ec2("ec2-m5xl", _PROD, "m5.xlarge", _USE1, "0.192", 6.0, 24, 8.0, "General purpose",
         ut="BoxUsage:m5.xlarge", ri_rate="0.121"),
    _ec2("ec2-c6i2xl", _PROD, "c6i.2xlarge", _USW2, "0.34", 4.0, 16, 16.0, "Compute optimized",
         ut="USW2-BoxUsage:c6i.2xlarge", sp_rate="0.2448", sp_weight=5.0),
    _ec2("ec2-m6il", _PROD, "m6i.large", _EUC1, "0.115", 3.0, 12, 4.0, "General purpose",
         ut="EUC1-BoxUsage:m6i.large", sp_rate="0.0828", sp_weight=3.0),
    _ec2("ec2-m5l-win", _PROD, "m5.large", _USE1, "0.188", 2.0, 6, 4.0, "General purpose",
         ut="BoxUsage:m5.large", os="Windows", op="RunInstances:0002"),
    _Sku("ebs-gp3-use1", _PROD, "AmazonEC2", "Amazon Elastic Compute Cloud", "Storage", "EBS:VolumeUsage.gp3",
         "CreateVolume-Gp3", _USE1, "GB-Mo", "0.08",
         "$0.08 per GB-month of General Purpose (gp3) provisioned storage - US East (N. Virginia)",
         (0.274, 1, False), ((_U, 5.0),), resources=("ebs", 40), zonal=True,
         attrs=(("volume_api_name", "gp3"), ("storage_media", "SSD-backed"))),
    _Sku("ebs-gp3-usw2", _PROD, "AmazonEC2", "Amazon Elastic Compute Cloud", "Storage", "USW2-EBS:VolumeUsage.gp3",
         "CreateVolume-Gp3", _USW2, "GB-Mo", "0.08",
         "$0.08 per GB-month of General Purpose (gp3) provisioned storage - US West (Oregon)",
         (0.274, 1, False), ((_U, 3.0),), resources=("ebs", 24), zonal=True,
         attrs=(("volume_api_name", "gp3"), ("storage_media", "SSD-backed"))),
    _Sku("ebs-snap", _PROD, "AmazonEC2", "Amazon Elastic Compute Cloud", "Storage Snapshot", "EBS:SnapshotUsage",
         "CreateSnapshot", _USE1, "GB-Mo", "0.05", "$0.05 per GB-Month of snapshot data stored - US East (N. Virginia)",
         (0.685, 1, False), ((_U, 2.0),), resources=("snap", 10)),
    _Sku("nat-hours", _PROD, "AmazonEC2", "Amazon Elastic Compute Cloud", "NAT Gateway", "NatGateway-Hours",
         "NatGateway", _USE1, "Hrs", "0.045", "$0.045 per NAT Gateway Hour", 1.0, ((_U, 2.0),),
         resources=("nat", 2), zonal=True),
    _Sku("nat-bytes", _PROD, "AmazonEC2", "Amazon Elastic Compute Cloud", "NAT Gateway", "NatGateway-Bytes",
         "NatGateway", _USE1, "GB", "0.045", "$0.045 per GB Data Processed by NAT Gateways",
         (3.0, 2, False), ((_U, 2.0),), resources=("nat", 2), zonal=True),
    _Sku("s3-std", _PROD, "AmazonS3", "Amazon Simple Storage Service", "Storage", "TimedStorage-ByteHrs",
         "StandardStorage", _USE1, "GB-Mo", "0.023", "$0.023 per GB - first 50 TB / month of storage used",
         (2.74, 1, False), ((_U, 4.0),), resources=("s3", 5), attrs=(("storage_class", "General Purpose"),)),
    _Sku("s3-put", _PROD, "AmazonS3", "Amazon Simple Storage Service", "API Request", "Requests-Tier1",
         "PutObject", _USE1, "Requests", "0.000005", "$0.005 per 1,000 PUT, COPY, POST, or LIST requests",
         (20000.0, 2, True), ((_U, 2.0),), resources=("s3", 5)),
    _Sku("s3-get", _PROD, "AmazonS3", "Amazon Simple Storage Service", "API Request", "Requests-Tier2",
         "GetObject", _USE1, "Requests", "0.0000004", "$0.0004 per 1,000 GET and all other requests",
         (150000.0, 2, True), ((_U, 3.0),), resources=("s3", 5)),
    _Sku("rds-r6gl", _PROD, "AmazonRDS", "Amazon Relational Database Service", "Database Instance",
         "Multi-AZUsage:db.r6g.large", "CreateDBInstance:0014", _USE1, "Hrs", "0.45",
         "$0.45 per RDS db.r6g.large Multi-AZ instance hour (or partial hour) running PostgreSQL", 1.0,
         ((_U, 3.0),), resources=("rds", 2), zonal=True, instance_type="db.r6g.large",
         instance_family="Memory optimized", norm=4.0,
         attrs=(("database_engine", "PostgreSQL"), ("deployment_option", "Multi-AZ"))),
    _Sku("rds-gp3", _PROD, "AmazonRDS", "Amazon Relational Database Service", "Database Storage",
         "RDS:Multi-AZ-GP3-Storage", "CreateDBInstance:0014", _USE1, "GB-Mo", "0.23",
         "$0.23 per GB-month of provisioned gp3 storage running Multi-AZ", (0.685, 0, False), ((_U, 2.0),),
         resources=("rds", 2), attrs=(("database_engine", "PostgreSQL"),)),
    _Sku("lambda-gbs", _PROD, "AWSLambda", "AWS Lambda", "Serverless", "Lambda-GB-Second", "Invoke", _USE1,
         "Lambda-GB-Second", "0.0000166667", "AWS Lambda - Total Compute - US East (N. Virginia)",
         (5000.0, 2, False), ((_U, 3.0), (_POOL_SP, 2.0)), resources=("lambda", 12), sp_rate="0.0000138334"),
    _Sku("lambda-req", _PROD, "AWSLambda", "AWS Lambda", "Serverless", "Request", "Invoke", _USE1, "Requests",
         "0.0000002", "AWS Lambda - Total Requests - US East (N. Virginia)", (40000.0, 2, True), ((_U, 3.0),),
         resources=("lambda", 12)),
    _Sku("cf-us-out", _PROD, "AmazonCloudFront", "Amazon CloudFront", "Data Transfer",
         "US-DataTransfer-Out-Bytes", "GET", None, "GB", "0.085",
         "$0.085 per GB - first 10 TB / month data transfer out (United States)", (12.0, 2, False),
         ((_U, 3.0),), resources=("cf", 3), location="United States", to_location="External"),
    _Sku("cf-eu-out", _PROD, "AmazonCloudFront", "Amazon CloudFront", "Data Transfer",
         "EU-DataTransfer-Out-Bytes", "GET", None, "GB", "0.085",
         "$0.085 per GB - first 10 TB / month data transfer out (Europe)", (6.0, 2, False), ((_U, 2.0),),
         resources=("cf", 3), location="Europe", to_location="External"),
    _Sku("cf-us-req", _PROD, "AmazonCloudFront", "Amazon CloudFront", "Request", "US-Requests-Tier1", "GET", None,
         "Requests", "0.00000075", "$0.0075 per 10,000 HTTP Requests (United States)", (300000.0, 2, True),
         ((_U, 2.0),), resources=("cf", 3), location="United States"),
    _Sku("dt-out", _PROD, "AWSDataTransfer", "AWS Data Transfer", "Data Transfer", "DataTransfer-Out-Bytes",
         "RunInstances", _USE1, "GB", "0.09",
         "$0.090 per GB - first 10 TB / month data transfer out beyond the global free tier", (8.0, 2, False),
         ((_U, 3.0),), resources=("ec2", 10), to_location="External"),
    _Sku("dt-use1-usw2", _PROD, "AWSDataTransfer", "AWS Data Transfer", "Data Transfer", "USE1-USW2-AWS-Out-Bytes",
         "RunInstances", _USE1, "GB", "0.02", "$0.02 per GB - US East (N. Virginia) data transfer to US West (Oregon)",
         (20.0, 1, False), ((_U, 2.0),), resources=("ec2", 6), to_region=_USW2),
    _Sku("dt-regional", _PROD, "AWSDataTransfer", "AWS Data Transfer", "Data Transfer",
         "DataTransfer-Regional-Bytes", "InterZone-In", _USE1, "GB", "0.01",
         "$0.010 per GB - regional data transfer - in/out/between EC2 AZs or using elastic IPs or ELB",
         (30.0, 1, False), ((_U, 2.0),), resources=("ec2", 8), to_region=_USE1),
    _ec2("ec2-t3m", _STAGING, "t3.medium", _USE1, "0.0416", 4.0, 10, 2.0, "General purpose",
         ut="BoxUsage:t3.medium"),
    _ec2("ec2-r6gxl", _STAGING, "r6g.xlarge", _USW2, "0.2016", 1.5, 4, 8.0, "Memory optimized",
         ut="USW2-BoxUsage:r6g.xlarge"),
    _Sku("ebs-gp3-stg", _STAGING, "AmazonEC2", "Amazon Elastic Compute Cloud", "Storage", "EBS:VolumeUsage.gp3",
         "CreateVolume-Gp3", _USE1, "GB-Mo", "0.08",
         "$0.08 per GB-month of General Purpose (gp3) provisioned storage - US East (N. Virginia)",
         (0.137, 1, False), ((_U, 2.0),), resources=("ebs", 14), zonal=True,
         attrs=(("volume_api_name", "gp3"), ("storage_media", "SSD-backed"))),
    _Sku("s3-std-stg", _STAGING, "AmazonS3", "Amazon Simple Storage Service", "Storage", "TimedStorage-ByteHrs",
         "StandardStorage", _USE1, "GB-Mo", "0.023", "$0.023 per GB - first 50 TB / month of storage used",
         (0.9, 1, False), ((_U, 1.5),), resources=("s3", 3), attrs=(("storage_class", "General Purpose"),)),
    _Sku("s3-get-stg", _STAGING, "AmazonS3", "Amazon Simple Storage Service", "API Request", "Requests-Tier2",
         "GetObject", _USE1, "Requests", "0.0000004", "$0.0004 per 1,000 GET and all other requests",
         (20000.0, 2, True), ((_U, 1.0),), resources=("s3", 3)),
    _Sku("rds-t4gm-stg", _STAGING, "AmazonRDS", "Amazon Relational Database Service", "Database Instance",
         "InstanceUsage:db.t4g.medium", "CreateDBInstance:0014", _USE1, "Hrs", "0.065",
         "$0.065 per RDS db.t4g.medium Single-AZ instance hour (or partial hour) running PostgreSQL", 1.0,
         ((_U, 1.5),), resources=("rds", 1), zonal=True, instance_type="db.t4g.medium",
         instance_family="General purpose", norm=2.0, attrs=(("database_engine", "PostgreSQL"),)),
    _Sku("lambda-gbs-stg", _STAGING, "AWSLambda", "AWS Lambda", "Serverless", "Lambda-GB-Second", "Invoke", _USE1,
         "Lambda-GB-Second", "0.0000166667", "AWS Lambda - Total Compute - US East (N. Virginia)",
         (800.0, 2, False), ((_U, 1.5),), resources=("lambda", 6)),
    _Sku("lambda-req-stg", _STAGING, "AWSLambda", "AWS Lambda", "Serverless", "Request", "Invoke", _USE1,
         "Requests", "0.0000002", "AWS Lambda - Total Requests - US East (N. Virginia)", (6000.0, 2, True),
         ((_U, 1.0),), resources=("lambda", 6)),
    _Sku("dt-out-stg", _STAGING, "AWSDataTransfer", "AWS Data Transfer", "Data Transfer", "DataTransfer-Out-Bytes",
         "RunInstances", _USE1, "GB", "0.09",
         "$0.090 per GB - first 10 TB / month data transfer out beyond the global free tier", (1.5, 2, False),
         ((_U, 1.0),), resources=("ec2", 4), to_location="External"),
    _Sku("mkt-nimbus", _PROD, _NIMBUS_CODE, "Nimbus Observability Pro", "SaaS", "USE1-MP:hosts", "Hourly", _USE1,
         "Hrs", "0.045", "Nimbus Observability Pro - monitored host hour", (30.0, 0, True),
         ((_POOL_MARKETPLACE, 3.0),), entity="AWS Marketplace", legal="Nimbus Observability, Inc."),
    _Sku("mkt-nimbus-stg", _STAGING, _NIMBUS_CODE, "Nimbus Observability Pro", "SaaS", "USE1-MP:hosts", "Hourly",
         _USE1, "Hrs", "0.045", "Nimbus Observability Pro - monitored host hour", (8.0, 0, True),
         ((_POOL_MARKETPLACE, 1.0),), entity="AWS Marketplace", legal="Nimbus Observability, Inc."),
    _Sku("sp-fee", _PROD, "ComputeSavingsPlans", "Savings Plans for AWS Compute usage", "Savings Plans",
         "ComputeSP:1yrNoUpfront", "", None, "Hrs", "0", "1 year No Upfront Compute Savings Plan", 1.0, ()),
    _Sku("support", _PAYER, "AWSSupportBusiness", "AWS Support (Business)", "AWS Support", "Dollar", "", None,
         "Dollar", "0", "AWS Support (Business) - monthly fee", 1.0, ()),
)
# fmt: on
_SKU_INDEX = {s.key: i for i, s in enumerate(_SKUS)}
_RI_SKU = _SKU_INDEX["ec2-m5xl"]
_SP_FEE_SKU = _SKU_INDEX["sp-fee"]
_SUPPORT_SKU = _SKU_INDEX["support"]

_BUCKETS: dict[int, tuple[str, ...]] = {
    _PROD: ("acme-prod-assets", "acme-prod-logs", "acme-prod-backups", "acme-data-lake", "acme-prod-static"),
    _STAGING: ("acme-staging-assets", "acme-staging-logs", "acme-staging-artifacts"),
}
_DATABASES: dict[int, tuple[str, ...]] = {_PROD: ("orders-prod", "catalog-prod"), _STAGING: ("orders-staging",)}
_FUNCTIONS = (
    "checkout-api",
    "cart-api",
    "search-indexer",
    "image-resizer",
    "order-events",
    "email-sender",
    "fraud-score",
    "price-sync",
    "session-cleanup",
    "report-builder",
    "webhook-relay",
    "auth-token",
)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _h(*parts: object) -> int:
    """A stable 64-bit hash of its arguments (blake2b), for the small seed-dependent dimensions."""
    digest = hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _uuid(*parts: object) -> str:
    h = hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:32]}"


def _e10(rate: str) -> int:
    value = Decimal(rate) * _E10
    if value != value.to_integral_value():
        raise ValueError(f"rate {rate} has more than 10 decimals")
    return int(value)


def _rate_str(e10: int) -> str:
    sign = "-" if e10 < 0 else ""
    return f"{sign}{abs(e10) // _E10}.{abs(e10) % _E10:010d}"


def _lit(value: object) -> str:
    """A SQL literal for the small dimension tables (no user input reaches it unescaped)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, date | datetime):
        return f"'{value.isoformat(sep=' ') if isinstance(value, datetime) else value.isoformat()}'"
    if isinstance(value, list | tuple):
        if not value:
            return "[]::VARCHAR[]"
        return "[" + ", ".join(_lit(v) for v in value) + "]"
    return "'" + str(value).replace("'", "''") + "'"


def _values(rows: Sequence[Sequence[object]]) -> str:
    return ",\n".join("(" + ", ".join(_lit(v) for v in row) + ")" for row in rows)


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _allot(weights: Sequence[tuple[int, float]], slots: int = _SLOTS) -> list[int]:
    """Slot -> item: each item gets a share of ``slots`` proportional to its weight (largest remainder)."""
    total = sum(w for _, w in weights)
    exact = [(item, w * slots / total) for item, w in weights]
    counts = {item: max(1, int(share)) for item, share in exact}
    remainders = sorted(exact, key=lambda x: (-(x[1] - int(x[1])), x[0]))
    i = 0
    while sum(counts.values()) < slots:
        counts[remainders[i % len(remainders)][0]] += 1
        i += 1
    while sum(counts.values()) > slots:
        biggest = max(counts, key=lambda k: (counts[k], -k))
        counts[biggest] -= 1
    out: list[int] = []
    for item, _w in weights:
        out += [item] * counts[item]
    return out


def correction_lag(day: date, seed: int) -> int:
    """Days after usage day ``day`` when its correction batch (re-rates and a refund) is delivered."""
    return 1 + _h("lag", seed, day.isoformat()) % MAX_CORRECTION_LAG_DAYS


def is_restated(day: date, through_day: date, seed: int) -> bool:
    """Whether a delivery through ``through_day`` includes the correction batch of ``day``."""
    return through_day >= day + timedelta(days=correction_lag(day, seed))


def billing_period(period: date) -> str:
    return f"{period.year:04d}-{period.month:02d}"


def export_root(export_name: str = DEMO_EXPORT_NAME, prefix: str = DEMO_PREFIX) -> str:
    return f"{prefix.strip('/')}/{export_name}" if prefix.strip("/") else export_name


def data_dir_key(
    period: date,
    *,
    export_name: str = DEMO_EXPORT_NAME,
    prefix: str = DEMO_PREFIX,
    layout: Layout = "overwrite",
    execution_id: str = "",
) -> str:
    """S3 key prefix (no trailing slash) of a delivery's data files."""
    key = f"{export_root(export_name, prefix)}/data/BILLING_PERIOD={billing_period(period)}"
    return f"{key}/{execution_id}" if layout == "create_new" else key


def manifest_key(
    period: date,
    *,
    export_name: str = DEMO_EXPORT_NAME,
    prefix: str = DEMO_PREFIX,
    layout: Layout = "overwrite",
    execution_id: str = "",
) -> str:
    """S3 key of a delivery's ``Manifest.json``."""
    folder = f"{export_root(export_name, prefix)}/metadata/BILLING_PERIOD={billing_period(period)}"
    if layout == "create_new":
        folder = f"{folder}/{execution_id}"
    return f"{folder}/{export_name}-Manifest.json"


def export_arn(export_name: str = DEMO_EXPORT_NAME, payer_account_id: str = DEMO_PAYER_ACCOUNT_ID) -> str:
    return f"arn:aws:bcm-data-exports:us-east-1:{payer_account_id}:export/{export_name}-{_uuid('export', export_name)}"


def execution_id_for(period: date, through_day: date, seed: int = 42) -> str:
    """A deterministic execution id (UUID-shaped) for the delivery of ``period`` through ``through_day``."""
    return _uuid("execution", seed, billing_period(period), through_day.isoformat())


def demo_deliveries(today: date, *, seed: int = 42) -> tuple[DeliverySpec, DeliverySpec]:
    """The two deliveries of the current month the demo uses.

    The first covers the month through ``today - 5 days`` (at least day 1), the second through
    ``today``; the second restates day 1 (tax, fees) and every day whose correction batch falls
    between the two (always the first delivery's last day once ``today`` is the 6th or later). On
    the 1st of a month both cover day 1 only and differ by their execution id alone.
    """
    period = _month_start(today)
    first_through = max(period, today - timedelta(days=5))
    first_id = execution_id_for(period, first_through, seed)
    if first_through == today:  # the 1st: the same day twice, two executions
        first_id = _uuid("execution", seed, billing_period(period), today.isoformat(), "earlier")
    return (
        DeliverySpec(period, first_through, first_id),
        DeliverySpec(period, today, execution_id_for(period, today, seed)),
    )


# --------------------------------------------------------------------------------------------------
# Dimension tables
# --------------------------------------------------------------------------------------------------


def _resource_rows(seed: int) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for c, sku in enumerate(_SKUS):
        kind, count = sku.resources
        acct = _ACCOUNT_IDS[sku.account]
        region = sku.region or _USE1
        if not kind:
            rows.append((c, 0, None, None, [], []))
            continue
        for r in range(count):
            h = _h("resource", seed, sku.key, r)
            hex16 = f"{h:016x}"
            if kind == "ec2":
                rid = f"i-0{hex16[:16]}"
            elif kind == "ebs":
                rid = f"vol-0{hex16[:16]}"
            elif kind == "snap":
                rid = f"arn:aws:ec2:{region}:{acct}:snapshot/snap-0{hex16}"
            elif kind == "nat":
                rid = f"arn:aws:ec2:{region}:{acct}:natgateway/nat-0{hex16}"
            elif kind == "s3":
                rid = _BUCKETS[sku.account][r]
            elif kind == "rds":
                rid = f"arn:aws:rds:{region}:{acct}:db:{_DATABASES[sku.account][r]}"
            elif kind == "lambda":
                rid = f"arn:aws:lambda:{region}:{acct}:function:{_FUNCTIONS[r]}"
            else:  # CloudFront
                dist = "".join("ABCDEFGHJKLMNPQRSTUVWXYZ23456789"[(h >> (5 * i)) % 32] for i in range(12))
                rid = f"arn:aws:cloudfront::{acct}:distribution/E{dist}"
            az = f"{region}{'abc'[h % 3]}" if sku.zonal else None
            keys: list[str] = []
            vals: list[str] = []
            t = _h("tags", seed, sku.key, r)
            if t % 100 < 78:
                keys += ["user_team", "user_env"]
                vals += [_TEAMS[sku.account][(t >> 8) % len(_TEAMS[sku.account])], _ENVS[sku.account]]
                if (t >> 16) % 100 < 35:
                    keys.append("user_app")
                    vals.append(_APPS[(t >> 24) % len(_APPS)])
                if (t >> 32) % 100 < 45:
                    keys.append("aws_created_by")
                    vals.append(_CREATORS[(t >> 40) % len(_CREATORS)])
            rows.append((c, r, rid, az, keys, vals))
    return rows


def _combo_rows(seed: int) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for c, s in enumerate(_SKUS):
        rate = _e10(s.rate)
        if isinstance(s.amount, tuple):
            median, cls, integral = s.amount
            fixed_q, median_q = None, round(median * _Q)
        else:
            fixed_q, median_q, cls, integral = round(s.amount * _Q), None, -1, False
        sp = _e10(s.sp_rate) if s.sp_rate else None
        ri = _e10(s.ri_rate) if s.ri_rate else None
        location = s.location or (_REGIONS[s.region] if s.region else None)
        keys = ["product_name", "servicename"] + (["region"] if s.region else []) + [k for k, _ in s.attrs]
        vals = [s.service, s.service] + ([s.region] if s.region else []) + [v for _, v in s.attrs]
        sku_id = "".join("ABCDEFGHJKMNPQRSTUVWXYZ23456789"[(_h("sku", s.key) >> (5 * i)) % 31] for i in range(12))
        rows.append(
            (
                c,
                s.account,
                s.product_code,
                s.servicecode or s.product_code,
                s.service,
                s.family,
                s.usage_type,
                s.operation or None,
                s.region,
                location,
                "AWS Region" if s.region else ("AWS Edge Location" if location else None),
                s.pricing_unit,
                rate,
                _rate_str(rate),
                _rate_str(-rate),
                sp,
                _rate_str(sp) if sp is not None else None,
                ri,
                _rate_str(ri) if ri is not None else None,
                fixed_q,
                median_q,
                cls,
                integral,
                max(1, s.resources[1]),
                s.zonal,
                s.instance_type,
                s.instance_family,
                s.instance_type.split(".")[0] if s.sp_rate and s.instance_type else None,
                s.norm,
                s.entity,
                s.legal,
                s.description,
                sku_id,
                str(100_000_000 + _h("rate-id", s.key) % 900_000_000),
                location if s.to_location or s.to_region else None,
                ("AWS Region" if s.region else "AWS Edge Location") if s.to_location or s.to_region else None,
                s.region if s.to_location or s.to_region else None,
                s.to_location or (_REGIONS[s.to_region] if s.to_region else None),
                ("External" if s.to_location else "AWS Region") if s.to_location or s.to_region else None,
                s.to_region,
                keys,
                vals,
            )
        )
    return rows


_COMBO_COLUMNS = (
    "id INTEGER, acct INTEGER, pcode VARCHAR, scode VARCHAR, service VARCHAR, family VARCHAR, usage_type VARCHAR, "
    "operation VARCHAR, region VARCHAR, location VARCHAR, location_type VARCHAR, pricing_unit VARCHAR, "
    "rate_e10 BIGINT, rate_str VARCHAR, neg_rate_str VARCHAR, sp_e10 BIGINT, sp_str VARCHAR, ri_e10 BIGINT, "
    "ri_str VARCHAR, fixed_q BIGINT, median_q BIGINT, cls INTEGER, integral BOOLEAN, n_res INTEGER, zonal BOOLEAN, "
    "itype VARCHAR, ifamily VARCHAR, sp_family VARCHAR, norm DOUBLE, entity VARCHAR, legal VARCHAR, "
    "description VARCHAR, sku VARCHAR, rate_id VARCHAR, from_location VARCHAR, from_location_type VARCHAR, "
    "from_region VARCHAR, to_location VARCHAR, to_location_type VARCHAR, to_region VARCHAR, pkeys VARCHAR[], "
    "pvals VARCHAR[]"
)


def _quantile_rows() -> list[tuple[int, int, int]]:
    normal = statistics.NormalDist()
    rows = []
    for cls, sigma in enumerate(_SIGMAS):
        for k in range(_QUANTILES):
            z = normal.inv_cdf((k + 0.5) / _QUANTILES)
            rows.append((cls, k, round(math.exp(sigma * z) * _MICROS)))
    return rows


def _slot_rows() -> list[tuple[int, int, int]]:
    rows = []
    for pool in (_POOL_USAGE, _POOL_MARKETPLACE, _POOL_RI, _POOL_SP):
        weights = [(c, w) for c, s in enumerate(_SKUS) for p, w in s.pools if p == pool]
        rows += [(pool, slot, combo) for slot, combo in enumerate(_allot(weights))]
    return rows


def _create_dimensions(con: duckdb.DuckDBPyConnection, seed: int) -> None:
    con.execute(f"CREATE TEMP TABLE combos_raw({_COMBO_COLUMNS})")
    con.execute(f"INSERT INTO combos_raw VALUES {_values(_combo_rows(seed))}")
    con.execute(
        "CREATE TEMP TABLE combos AS SELECT * EXCLUDE (pkeys, pvals), map(pkeys, pvals) AS product FROM combos_raw"
    )
    con.execute(
        "CREATE TEMP TABLE resources_raw(combo INTEGER, r INTEGER, rid VARCHAR, az VARCHAR, "
        "tkeys VARCHAR[], tvals VARCHAR[])"
    )
    con.execute(f"INSERT INTO resources_raw VALUES {_values(_resource_rows(seed))}")
    con.execute("CREATE TEMP TABLE resources AS SELECT combo, r, rid, az, map(tkeys, tvals) AS tags FROM resources_raw")
    accounts = [
        (i, acct, DEMO_ACCOUNTS[acct], [k for k, _ in _COST_CATEGORIES[i]], [v for _, v in _COST_CATEGORIES[i]])
        for i, acct in enumerate(_ACCOUNT_IDS)
    ]
    con.execute(
        "CREATE TEMP TABLE accounts_raw(idx INTEGER, id VARCHAR, name VARCHAR, ckeys VARCHAR[], cvals VARCHAR[])"
    )
    con.execute(f"INSERT INTO accounts_raw VALUES {_values(accounts)}")
    con.execute(
        "CREATE TEMP TABLE accounts AS SELECT idx, id, name, map(ckeys, cvals) AS cost_category FROM accounts_raw"
    )
    con.execute("CREATE TEMP TABLE slots(pool INTEGER, slot INTEGER, combo INTEGER)")
    con.execute(f"INSERT INTO slots VALUES {_values(_slot_rows())}")
    con.execute("CREATE TEMP TABLE lnq(cls INTEGER, k INTEGER, mult BIGINT)")
    con.execute(f"INSERT INTO lnq VALUES {_values(_quantile_rows())}")


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    period: date
    period_end: date  # first day of the next month
    through: date
    rows_per_day: int
    seed: int
    n_usage: int
    n_marketplace: int
    n_discounted: int
    n_sp_covered: int
    n_edp: int
    n_credit: int
    sp_commitment_micros: int
    n_reserved: int

    @classmethod
    def of(cls, period: date, through: date, rows_per_day: int, seed: int) -> _Plan:
        n = rows_per_day
        sp, ri, edp = n // 12, n // 15, n // 20
        credit, mkt = max(1, n // 250), max(1, n // 100)
        usage = n - 24 - 2 * sp - ri - edp - credit - mkt
        commitment = max(10_000, round(sp * SP_HOURLY_PER_COVERED_ROW_MICROS / 24 / 10_000) * 10_000)
        return cls(
            period,
            _next_month(period),
            through,
            n,
            seed,
            usage,
            mkt,
            ri,
            sp,
            edp,
            credit,
            commitment,
            max(1, math.ceil(ri / 24)),
        )

    @property
    def days(self) -> list[date]:
        return [self.period + timedelta(days=i) for i in range((self.through - self.period).days + 1)]

    @property
    def hours_in_period(self) -> int:
        return (self.period_end - self.period).days * 24

    @property
    def period_key(self) -> int:
        return self.period.toordinal() - _DAY_KEY_BASE


def _create_line_items(con: duckdb.DuckDBPyConnection, plan: _Plan) -> None:
    """Build table ``li``: one narrow row per line item, all money as integers."""
    seed_mix = _h("seed", plan.seed) % _M31
    con.execute(f"CREATE OR REPLACE TEMP MACRO m31(x) AS (xor(x, x >> 16) * 1103515245 + 12345) % {_M31}")
    con.execute(
        "CREATE OR REPLACE TEMP MACRO hh(k, s) AS m31((m31(m31(CAST(k AS BIGINT) % 2147483647) "
        f"+ (CAST(k AS BIGINT) // 2147483647) % 65536 * 7919 + {seed_mix}) + CAST(s AS BIGINT) * 40503) % {_M31})"
    )
    day_rows = [
        (d.toordinal() - _DAY_KEY_BASE, d, 85 if d.weekday() >= 5 else 100, is_restated(d, plan.through, plan.seed))
        for d in plan.days
    ]
    con.execute("CREATE TEMP TABLE days(dord BIGINT, day DATE, day_pct BIGINT, restated BOOLEAN)")
    con.execute(f"INSERT INTO days VALUES {_values(day_rows)}")
    u, m, du, spc = plan.n_usage, plan.n_marketplace, plan.n_discounted, plan.n_sp_covered
    con.execute(f"""
CREATE TEMP TABLE li AS
WITH base AS (
    SELECT d.dord, d.day, d.day_pct, d.restated, r.i,
           CASE WHEN r.i < {u} THEN {K_USAGE} WHEN r.i < {u + m} THEN {K_MARKETPLACE}
                WHEN r.i < {u + m + du} THEN {K_DISCOUNTED} ELSE {K_SP_COVERED} END AS kind
    FROM days d CROSS JOIN range({u + m + du + spc}) r(i)
), drawn AS (
    SELECT *, hh(k, 1) AS ha, hh(k, 2) AS hb, hh(k, 3) AS hc
    FROM (SELECT *, (dord * 16 + kind) * 1048576 + i AS k FROM base)
), sized AS (
    SELECT d.dord, d.day, d.kind, d.i, s.combo, CAST((d.ha // 1024) % 24 AS INTEGER) AS hour,
           CAST((d.hb // 1024) % c.n_res AS INTEGER) AS r, c.rate_e10, c.sp_e10, c.ri_e10, c.integral,
           CASE WHEN c.fixed_q IS NOT NULL THEN c.fixed_q
                ELSE greatest(1, c.median_q * q.mult // 1000000 * d.day_pct // 100) END AS raw_q,
           d.kind = {K_USAGE} AND d.restated AND d.hc % 1000 < {CORRECTION_PER_MILLE} AS corrected,
           50 + (d.hc // 1000) % 46 AS correction_pct
    FROM drawn d
    JOIN slots s ON s.pool = d.kind AND s.slot = d.ha % 1024
    JOIN combos c ON c.id = s.combo
    LEFT JOIN lnq q ON q.cls = c.cls AND q.k = d.hb % 1024
), amounts AS (
    SELECT *, CASE WHEN integral THEN greatest(10000, (q1 + 5000) // 10000 * 10000) ELSE q1 END AS amount_q
    FROM (SELECT *, CASE WHEN corrected THEN greatest(1, raw_q * correction_pct // 100) ELSE raw_q END AS q1
          FROM sized)
)
SELECT kind, i, dord, day, CAST(day AS TIMESTAMP) + to_hours(hour) AS start_ts,
       CAST(day AS TIMESTAMP) + to_hours(hour + 1) AS end_ts, combo, r, amount_q,
       CASE WHEN kind = {K_DISCOUNTED} THEN 0 ELSE (amount_q * rate_e10 + 50000000) // 100000000 END AS cost,
       (amount_q * rate_e10 + 50000000) // 100000000 AS od,
       CASE WHEN kind = {K_DISCOUNTED} THEN (amount_q * ri_e10 + 50000000) // 100000000
            WHEN kind = {K_SP_COVERED} THEN (amount_q * sp_e10 + 50000000) // 100000000 END AS eff,
       CAST(NULL AS BIGINT) AS aux
FROM amounts
""")
    # the negation of every covered line, and an EDP discount line for the first usage rows of each day
    con.execute(f"""
INSERT INTO li
SELECT {K_SP_NEGATION}, i, dord, day, start_ts, end_ts, combo, r, amount_q, -cost, 0, NULL, NULL
FROM li WHERE kind = {K_SP_COVERED}
UNION ALL
SELECT {K_EDP}, i, dord, day, start_ts, end_ts, combo, r, amount_q,
       -((cost * {EDP_DISCOUNT_BP} + 5000) // 10000), NULL, NULL, NULL
FROM li WHERE kind = {K_USAGE} AND i < {plan.n_edp}
""")
    # hourly Savings Plan fee, credits, refunds of restated days
    commitment = plan.sp_commitment_micros
    con.execute(f"""
INSERT INTO li
SELECT {K_SP_FEE}, h.i, d.dord, d.day, CAST(d.day AS TIMESTAMP) + to_hours(h.i),
       CAST(d.day AS TIMESTAMP) + to_hours(h.i + 1), {_SP_FEE_SKU}, 0, 10000, {commitment}, NULL, NULL,
       least({commitment}, coalesce(e.used, 0))
FROM days d CROSS JOIN range(24) h(i)
LEFT JOIN (SELECT day, hour(start_ts) AS hr, sum(eff) AS used FROM li WHERE kind = {K_SP_COVERED}
           GROUP BY ALL) e ON e.day = d.day AND e.hr = h.i
UNION ALL
SELECT kind, i, dord, day, CAST(day AS TIMESTAMP) + to_hours(hour), CAST(day AS TIMESTAMP) + to_hours(hour + 1),
       combo, r, NULL, cost, NULL, NULL, NULL
FROM (
    SELECT x.kind, x.i, x.dord, x.day, s.combo, CAST((hh(x.k, 2) // 1024) % 24 AS INTEGER) AS hour,
           CAST(hh(x.k, 3) % c.n_res AS INTEGER) AS r,
           CASE WHEN x.kind = {K_CREDIT} THEN -(hh(x.k, 4) % 2400000 + 100000)
                ELSE -(hh(x.k, 4) % {plan.rows_per_day * 2_000} + {plan.rows_per_day * 500}) END AS cost
    FROM (
        SELECT {K_CREDIT} AS kind, c.i, d.dord, d.day, (d.dord * 16 + {K_CREDIT}) * 1048576 + c.i AS k
        FROM days d CROSS JOIN range({plan.n_credit}) c(i)
        UNION ALL
        SELECT {K_REFUND}, 0, d.dord, d.day, (d.dord * 16 + {K_REFUND}) * 1048576 FROM days d WHERE d.restated
    ) x
    JOIN slots s ON s.pool = {_POOL_USAGE} AND s.slot = hh(x.k, 1) % 1024
    JOIN combos c ON c.id = s.combo
)
""")
    # monthly rows on day 1: RI fee, then Support (on month-to-date AWS charges), then Tax on everything
    start = datetime.combine(plan.period, time(0))
    end = datetime.combine(plan.period_end, time(0))
    monthly = f"{plan.period_key}, DATE '{plan.period.isoformat()}', TIMESTAMP '{start}', TIMESTAMP '{end}'"
    ri_q = plan.hours_in_period * plan.n_reserved * _Q
    con.execute(f"""
INSERT INTO li
SELECT {K_RI_FEE}, 0, {monthly}, {_RI_SKU}, 0, {ri_q}, ({ri_q} * ri_e10 + 50000000) // 100000000, NULL, NULL, NULL
FROM combos WHERE id = {_RI_SKU}
""")
    con.execute(f"""
INSERT INTO li
SELECT {K_SUPPORT}, 0, {monthly}, {_SUPPORT_SKU}, 0, NULL,
       greatest({SUPPORT_MINIMUM_MICROS}, sum(l.cost) * {SUPPORT_RATE_PCT} // 100), NULL, NULL, NULL
FROM li l JOIN combos c ON c.id = l.combo WHERE c.entity = 'AWS'
""")
    con.execute(f"""
INSERT INTO li
SELECT {K_TAX}, CAST(row_number() OVER (ORDER BY acct, pcode) - 1 AS BIGINT), {monthly}, combo, 0, NULL,
       (base * {TAX_RATE_BP} + 5000) // 10000, NULL, NULL, NULL
FROM (SELECT c.acct, c.pcode, min(l.combo) AS combo, sum(l.cost) AS base
      FROM li l JOIN combos c ON c.id = l.combo GROUP BY ALL)
WHERE base > 0
""")
    con.execute("CREATE TEMP TABLE ordered AS SELECT *, row_number() OVER (ORDER BY start_ts, kind, i) AS rn FROM li")


def _projection(plan: _Plan, invoice_final: bool) -> dict[str, str]:
    """SQL expression of every CUR 2.0 column over ``ordered l``, ``combos c``, ``accounts a``, ``resources res``."""
    start = datetime.combine(plan.period, time(0))
    end = datetime.combine(plan.period_end, time(0))
    payer = _ACCOUNT_IDS[_PAYER]
    prod = _ACCOUNT_IDS[_PROD]
    seed = plan.seed
    ri_arn = f"arn:aws:ec2:us-east-1:{prod}:reserved-instances/{_uuid('ri', seed)}"
    sp_arn = f"arn:aws:savingsplans::{prod}:savingsplan/{_uuid('sp', seed)}"
    ri_start = start - timedelta(days=137) + timedelta(hours=14, minutes=22, seconds=5)
    sp_start = start - timedelta(days=211) + timedelta(hours=9, minutes=3, seconds=41)
    invoice_aws = str(1_000_000_000 + _h("invoice", seed, billing_period(plan.period), "AWS") % 9_000_000_000)
    invoice_mkt = str(1_000_000_000 + _h("invoice", seed, billing_period(plan.period), "MP") % 9_000_000_000)
    commitment = plan.sp_commitment_micros
    hours = plan.hours_in_period
    reserved = plan.n_reserved

    def kinds(*ks: int) -> str:
        return "l.kind IN (" + ", ".join(str(k) for k in ks) + ")"

    def ri_fee(value: str) -> str:
        return f"CASE WHEN l.kind = {K_RI_FEE} THEN {_lit(value)} END"

    subscription = str(_h("ri-sub", seed) % 9_000_000_000 + 10**9)
    on_demand = kinds(K_USAGE, K_MARKETPLACE, K_SP_COVERED)
    usage_like = kinds(K_USAGE, K_MARKETPLACE, K_DISCOUNTED, K_SP_COVERED, K_SP_NEGATION, K_EDP)
    resource = kinds(*_RESOURCE_KINDS)
    ri = kinds(K_DISCOUNTED, K_RI_FEE)
    sp = kinds(K_SP_COVERED, K_SP_NEGATION, K_SP_FEE)
    cost = "l.cost / 1000000.0"
    amount = "l.amount_q / 10000.0"
    rate = (
        f"CASE WHEN {kinds(K_USAGE, K_MARKETPLACE, K_SP_COVERED)} THEN c.rate_str "
        f"WHEN l.kind = {K_SP_NEGATION} THEN c.neg_rate_str WHEN l.kind = {K_DISCOUNTED} THEN '0.0000000000' "
        f"WHEN l.kind = {K_SP_FEE} THEN {_lit(_rate_str(commitment * 10_000))} "
        f"WHEN l.kind = {K_RI_FEE} THEN c.ri_str END"
    )
    type_case = "CASE l.kind " + " ".join(f"WHEN {k} THEN {_lit(v)}" for k, v in LINE_ITEM_TYPES.items()) + " END"
    description = (
        f"CASE WHEN {kinds(K_USAGE, K_MARKETPLACE, K_SP_COVERED)} THEN c.description "
        f"WHEN l.kind = {K_DISCOUNTED} THEN 'USD 0.0 hourly fee per Linux/UNIX (Amazon VPC), ' || c.itype "
        "|| ' instance' "
        f"WHEN l.kind = {K_SP_NEGATION} THEN 'SavingsPlanNegation used by AccountId : ' || a.id "
        "|| ' and UsageSku : ' || c.sku "
        f"WHEN l.kind = {K_SP_FEE} THEN c.description "
        f"WHEN l.kind = {K_EDP} THEN 'Enterprise Discount Program discount' "
        f"WHEN l.kind = {K_CREDIT} THEN 'AWS Activate credits' "
        f"WHEN l.kind = {K_REFUND} THEN 'Refund: SLA credit and usage correction - ' || c.service "
        f"WHEN l.kind = {K_TAX} THEN 'Tax for product code ' || c.pcode "
        f"WHEN l.kind = {K_RI_FEE} THEN 'USD ' || {_lit(_SKUS[_RI_SKU].ri_rate)} "
        "|| ' hourly fee per Linux/UNIX (Amazon VPC), ' "
        f"|| c.itype || ' instance' "
        f"ELSE c.description END"
    )
    empty_str_map = "map([]::VARCHAR[], []::VARCHAR[])"
    hexid = "printf('%08x%08x%08x%08x', hh(l.key, 11), hh(l.key, 12), hh(l.key, 13), hh(l.key, 14))"
    null_s, null_d = "CAST(NULL AS VARCHAR)", "CAST(NULL AS DOUBLE)"
    return {
        "bill_bill_type": f"CASE WHEN l.kind = {K_REFUND} THEN 'Refund' ELSE 'Anniversary' END",
        "bill_billing_entity": "c.entity",
        "bill_billing_period_end_date": f"TIMESTAMP '{end}'",
        "bill_billing_period_start_date": f"TIMESTAMP '{start}'",
        "bill_invoice_id": (
            f"CASE WHEN c.entity = 'AWS' THEN {_lit(invoice_aws)} ELSE {_lit(invoice_mkt)} END"
            if invoice_final
            else "''"
        ),
        "bill_invoicing_entity": _lit(_INVOICING_ENTITY),
        "bill_payer_account_id": _lit(payer),
        "bill_payer_account_name": _lit(DEMO_ACCOUNTS[payer]),
        "cost_category": "a.cost_category",
        "discount": f"CASE WHEN l.kind = {K_EDP} THEN map(['edp_discount'], [{cost}]) "
        "ELSE map([]::VARCHAR[], []::DOUBLE[]) END",
        "discount_bundled_discount": null_d,
        "discount_total_discount": f"CASE WHEN l.kind = {K_EDP} THEN {cost} END",
        "identity_line_item_id": f"translate({hexid}, '0123456789abcdef', 'abcdefghijklmnop')",
        "identity_time_interval": f"strftime(l.start_ts, '{_TS}') || '/' || strftime(l.end_ts, '{_TS}')",
        "line_item_availability_zone": f"CASE WHEN {resource} AND c.zonal THEN res.az END",
        "line_item_blended_cost": cost,
        "line_item_blended_rate": rate,
        "line_item_currency_code": _lit(CURRENCY),
        "line_item_legal_entity": "c.legal",
        "line_item_line_item_description": description,
        "line_item_line_item_type": type_case,
        "line_item_net_unblended_cost": cost,
        "line_item_net_unblended_rate": rate,
        "line_item_normalization_factor": f"CASE WHEN {usage_like} OR l.kind = {K_RI_FEE} THEN c.norm END",
        "line_item_normalized_usage_amount": f"CASE WHEN ({usage_like} OR l.kind = {K_RI_FEE}) AND c.norm IS NOT NULL "
        f"THEN {amount} * c.norm END",
        "line_item_operation": f"CASE WHEN l.kind <> {K_TAX} THEN c.operation END",
        "line_item_product_code": "c.pcode",
        "line_item_resource_id": f"CASE WHEN {resource} THEN res.rid END",
        "line_item_tax_type": f"CASE WHEN l.kind = {K_TAX} THEN 'USSalesTax' END",
        "line_item_unblended_cost": cost,
        "line_item_unblended_rate": rate,
        "line_item_usage_account_id": "a.id",
        "line_item_usage_account_name": "a.name",
        "line_item_usage_amount": amount,
        "line_item_usage_end_date": "l.end_ts",
        "line_item_usage_start_date": "l.start_ts",
        "line_item_usage_type": f"CASE WHEN l.kind = {K_RI_FEE} THEN 'HeavyUsage:' || c.itype "
        f"WHEN l.kind <> {K_TAX} THEN c.usage_type END",
        "pricing_currency": _lit(CURRENCY),
        "pricing_lease_contract_length": f"CASE WHEN {ri} THEN '1yr' END",
        "pricing_offering_class": f"CASE WHEN {ri} THEN 'standard' END",
        "pricing_public_on_demand_cost": f"CASE WHEN {kinds(K_USAGE, K_MARKETPLACE, K_DISCOUNTED, K_SP_COVERED)} "
        "THEN l.od / 1000000.0 ELSE 0.0 END",
        "pricing_public_on_demand_rate": f"CASE WHEN {kinds(K_USAGE, K_MARKETPLACE, K_DISCOUNTED, K_SP_COVERED)} "
        "THEN c.rate_str END",
        "pricing_purchase_option": f"CASE WHEN {ri} THEN 'No Upfront' END",
        "pricing_rate_code": f"CASE WHEN {on_demand} THEN c.sku || '.JRTCKXETXF.6YS6EN2CT7' "
        f"WHEN {ri} THEN c.sku || '.4NA7Y494T4.6YS6EN2CT7' END",
        "pricing_rate_id": f"CASE WHEN {kinds(K_USAGE, K_MARKETPLACE, K_DISCOUNTED, K_SP_COVERED)} THEN c.rate_id END",
        "pricing_term": f"CASE WHEN {on_demand} THEN 'OnDemand' WHEN {ri} THEN 'Reserved' END",
        "pricing_unit": f"CASE WHEN {usage_like} OR {kinds(K_SP_FEE, K_RI_FEE)} THEN c.pricing_unit END",
        "product": f"CASE WHEN l.kind <> {K_TAX} THEN c.product ELSE {empty_str_map} END",
        "product_comment": null_s,
        "product_fee_code": null_s,
        "product_fee_description": null_s,
        "product_from_location": f"CASE WHEN l.kind <> {K_TAX} THEN c.from_location END",
        "product_from_location_type": f"CASE WHEN l.kind <> {K_TAX} THEN c.from_location_type END",
        "product_from_region_code": f"CASE WHEN l.kind <> {K_TAX} THEN c.from_region END",
        "product_instance_family": f"CASE WHEN l.kind <> {K_TAX} THEN c.ifamily END",
        "product_instance_type": f"CASE WHEN l.kind <> {K_TAX} THEN c.itype END",
        "product_instancesku": null_s,
        "product_location": f"CASE WHEN l.kind <> {K_TAX} THEN c.location END",
        "product_location_type": f"CASE WHEN l.kind <> {K_TAX} THEN c.location_type END",
        "product_operation": f"CASE WHEN l.kind <> {K_TAX} THEN c.operation END",
        "product_pricing_unit": f"CASE WHEN l.kind <> {K_TAX} THEN c.pricing_unit END",
        "product_product_family": f"CASE WHEN l.kind <> {K_TAX} THEN c.family END",
        "product_region_code": f"CASE WHEN l.kind <> {K_TAX} THEN c.region END",
        "product_servicecode": "c.scode",
        "product_sku": f"CASE WHEN l.kind <> {K_TAX} THEN c.sku END",
        "product_to_location": f"CASE WHEN l.kind <> {K_TAX} THEN c.to_location END",
        "product_to_location_type": f"CASE WHEN l.kind <> {K_TAX} THEN c.to_location_type END",
        "product_to_region_code": f"CASE WHEN l.kind <> {K_TAX} THEN c.to_region END",
        "product_usagetype": f"CASE WHEN l.kind <> {K_TAX} THEN c.usage_type END",
        "reservation_amortized_upfront_cost_for_usage": f"CASE WHEN l.kind = {K_DISCOUNTED} THEN 0.0 END",
        "reservation_amortized_upfront_fee_for_billing_period": f"CASE WHEN l.kind = {K_RI_FEE} THEN 0.0 END",
        "reservation_availability_zone": null_s,
        "reservation_effective_cost": f"CASE WHEN l.kind = {K_DISCOUNTED} THEN l.eff / 1000000.0 END",
        "reservation_end_time": f"CASE WHEN {ri} THEN {_lit((ri_start + timedelta(days=365)).strftime(_TS_MS))} END",
        "reservation_modification_status": f"CASE WHEN {ri} THEN 'Original' END",
        "reservation_net_amortized_upfront_cost_for_usage": null_d,
        "reservation_net_amortized_upfront_fee_for_billing_period": null_d,
        "reservation_net_effective_cost": null_d,
        "reservation_net_recurring_fee_for_usage": null_d,
        "reservation_net_unused_amortized_upfront_fee_for_billing_period": null_d,
        "reservation_net_unused_recurring_fee": null_d,
        "reservation_net_upfront_value": null_d,
        "reservation_normalized_units_per_reservation": ri_fee(str(8 * hours)),
        "reservation_number_of_reservations": ri_fee(str(reserved)),
        "reservation_recurring_fee_for_usage": f"CASE WHEN l.kind = {K_DISCOUNTED} THEN l.eff / 1000000.0 END",
        "reservation_reservation_a_r_n": f"CASE WHEN {ri} THEN {_lit(ri_arn)} END",
        "reservation_start_time": f"CASE WHEN {ri} THEN {_lit(ri_start.strftime(_TS_MS))} END",
        "reservation_subscription_id": f"CASE WHEN {ri} THEN {_lit(subscription)} END",
        "reservation_total_reserved_normalized_units": ri_fee(str(8 * hours * reserved)),
        "reservation_total_reserved_units": ri_fee(str(hours * reserved)),
        "reservation_units_per_reservation": ri_fee(str(hours)),
        "reservation_unused_amortized_upfront_fee_for_billing_period": null_d,
        "reservation_unused_normalized_unit_quantity": null_d,
        "reservation_unused_quantity": null_d,
        "reservation_unused_recurring_fee": null_d,
        "reservation_upfront_value": f"CASE WHEN l.kind = {K_RI_FEE} THEN 0.0 END",
        "resource_tags": f"CASE WHEN {resource} THEN res.tags ELSE {empty_str_map} END",
        "savings_plan_amortized_upfront_commitment_for_billing_period": f"CASE WHEN l.kind = {K_SP_FEE} THEN 0.0 END",
        "savings_plan_end_time": f"CASE WHEN {sp} THEN {_lit((sp_start + timedelta(days=365)).strftime(_TS_MS))} END",
        "savings_plan_instance_type_family": f"CASE WHEN {kinds(K_SP_COVERED, K_SP_NEGATION)} THEN c.sp_family END",
        "savings_plan_net_amortized_upfront_commitment_for_billing_period": null_d,
        "savings_plan_net_recurring_commitment_for_billing_period": null_d,
        "savings_plan_net_savings_plan_effective_cost": null_d,
        "savings_plan_offering_type": f"CASE WHEN {sp} THEN 'ComputeSavingsPlans' END",
        "savings_plan_payment_option": f"CASE WHEN {sp} THEN 'No Upfront' END",
        "savings_plan_purchase_term": f"CASE WHEN {sp} THEN '1yr' END",
        "savings_plan_recurring_commitment_for_billing_period": f"CASE WHEN l.kind = {K_SP_FEE} THEN {cost} END",
        "savings_plan_region": f"CASE WHEN {kinds(K_SP_COVERED, K_SP_NEGATION)} THEN c.location END",
        "savings_plan_savings_plan_a_r_n": f"CASE WHEN {sp} THEN {_lit(sp_arn)} END",
        "savings_plan_savings_plan_effective_cost": f"CASE WHEN l.kind = {K_SP_COVERED} THEN l.eff / 1000000.0 END",
        "savings_plan_savings_plan_rate": f"CASE WHEN l.kind = {K_SP_COVERED} THEN c.sp_e10 / 10000000000.0 END",
        "savings_plan_start_time": f"CASE WHEN {sp} THEN {_lit(sp_start.strftime(_TS_MS))} END",
        "savings_plan_total_commitment_to_date": f"CASE WHEN l.kind = {K_SP_FEE} THEN {cost} END",
        "savings_plan_used_commitment": f"CASE WHEN l.kind = {K_SP_FEE} THEN l.aux / 1000000.0 END",
    }


def _select_sql(plan: _Plan, invoice_final: bool, fmt: Fmt, lo: int, hi: int) -> str:
    exprs = _projection(plan, invoice_final)
    cols = []
    for name, aws_type in CUR2_COLUMNS:
        expr = f"CAST({exprs[name]} AS {DUCKDB_TYPES[aws_type]})"
        if fmt != "parquet" and aws_type == "timestamp":
            expr = f"strftime({expr}, '{_TS}')"
        elif fmt == "csv" and aws_type.startswith("map"):
            expr = f"CAST(to_json({expr}) AS VARCHAR)"
        cols.append(f"{expr} AS {name}")
    return (
        "SELECT " + ",\n       ".join(cols) + "\n"
        f"FROM (SELECT *, (dord * 16 + kind) * 1048576 + i AS key FROM ordered WHERE rn BETWEEN {lo} AND {hi}) l\n"
        "JOIN combos c ON c.id = l.combo\n"
        "JOIN accounts a ON a.idx = c.acct\n"
        "LEFT JOIN resources res ON res.combo = l.combo AND res.r = l.r\n"
        "ORDER BY l.rn"
    )


def _copy_options(fmt: Fmt) -> str:
    if fmt == "parquet":
        return "FORMAT parquet, COMPRESSION snappy, ROW_GROUP_SIZE 122880"
    if fmt == "csv":
        return "FORMAT csv, HEADER true, COMPRESSION gzip"
    return "FORMAT json, COMPRESSION gzip"


def _clear_files(folder: Path) -> None:
    if folder.is_dir():
        for child in sorted(folder.iterdir()):
            if child.is_file():
                child.unlink()


def _manifest(plan: _Plan, *, bucket: str, export_name: str, execution_id: str, data_keys: Iterable[str]) -> str:
    document = {
        "executionId": execution_id,
        "exportArn": export_arn(export_name),
        "billingPeriod": {
            "start": datetime.combine(plan.period, time(0)).strftime(_TS_MS),
            "end": datetime.combine(plan.period_end, time(0)).strftime(_TS_MS),
        },
        "columns": [{"name": name, "type": aws_type} for name, aws_type in CUR2_COLUMNS],
        "dataFiles": [f"s3://{bucket}/{key}" for key in data_keys],
        "additionalOutputFiles": [],
    }
    return json.dumps(document, indent=2) + "\n"


def _as_date(value: date | int, period: date) -> date:
    return period.replace(day=value) if isinstance(value, int) else value


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def write_delivery(
    root: Path | str,
    *,
    period: date,
    through_day: date | int,
    execution_id: str,
    export_name: str = DEMO_EXPORT_NAME,
    layout: Layout = "overwrite",
    fmt: Fmt = "parquet",
    rows_per_day: int = 2000,
    seed: int = 42,
    bucket: str = DEMO_BUCKET,
    prefix: str = DEMO_PREFIX,
    max_rows_per_file: int = DEFAULT_MAX_ROWS_PER_FILE,
    invoice_final: bool = False,
) -> DeliveryStats:
    """Write one delivery (execution) of billing period ``period`` through usage day ``through_day``.

    ``root`` stands for the bucket: every object is written to ``root / <S3 key>``; the manifest,
    listing ``s3://<bucket>/<key>`` of each data file, is written last. ``period`` is any day of the
    month; ``through_day`` a date in that month or a day-of-month number.
    """
    period = _month_start(period)
    through = _as_date(through_day, period)
    if _month_start(through) != period:
        raise ValueError(f"through_day {through} is not in billing period {billing_period(period)}")
    if not MIN_ROWS_PER_DAY <= rows_per_day <= MAX_ROWS_PER_DAY:
        raise ValueError(f"rows_per_day must be between {MIN_ROWS_PER_DAY} and {MAX_ROWS_PER_DAY}")
    if layout not in ("overwrite", "create_new"):
        raise ValueError(f"unknown layout {layout!r}")
    if fmt not in EXTENSIONS:
        raise ValueError(f"unknown fmt {fmt!r}")
    if not execution_id or "/" in execution_id:
        raise ValueError("execution_id must be a non-empty string without '/'")
    if max_rows_per_file < 1:
        raise ValueError("max_rows_per_file must be positive")
    root = Path(root)
    plan = _Plan.of(period, through, rows_per_day, seed)
    key_args = {"export_name": export_name, "prefix": prefix, "layout": layout, "execution_id": execution_id}
    data_dir = data_dir_key(period, **key_args)  # type: ignore[arg-type]
    manifest = manifest_key(period, **key_args)  # type: ignore[arg-type]

    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        _create_dimensions(con, seed)
        _create_line_items(con, plan)
        total_rows = int(con.execute("SELECT count(*) FROM ordered").fetchone()[0])  # type: ignore[index]
        per_day = con.execute("SELECT day, count(*), sum(cost) FROM li GROUP BY day ORDER BY day").fetchall()
        folder = root / data_dir
        if layout == "overwrite":
            _clear_files(folder)
        elif folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        data_keys: list[str] = []
        parts = max(1, math.ceil(total_rows / max_rows_per_file))
        for part in range(parts):
            key = f"{data_dir}/{export_name}-{part + 1:05d}{EXTENSIONS[fmt]}"
            lo, hi = part * max_rows_per_file + 1, min(total_rows, (part + 1) * max_rows_per_file)
            target = str(root / key).replace("'", "''")
            con.execute(f"COPY ({_select_sql(plan, invoice_final, fmt, lo, hi)}) TO '{target}' ({_copy_options(fmt)})")
            data_keys.append(key)
    finally:
        con.close()

    manifest_path = root / manifest
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = manifest_path.with_name(manifest_path.name + ".tmp")
    tmp.write_text(
        _manifest(plan, bucket=bucket, export_name=export_name, execution_id=execution_id, data_keys=data_keys),
        encoding="utf-8",
    )
    tmp.replace(manifest_path)

    totals = {(day, CURRENCY): DayTotals(int(rows), Decimal(int(cost)).scaleb(-6)) for day, rows, cost in per_day}
    return DeliveryStats(
        export_name=export_name,
        bucket=bucket,
        period=period,
        through_day=through,
        execution_id=execution_id,
        layout=layout,
        fmt=fmt,
        rows=total_rows,
        total_cost=sum((t.cost for t in totals.values()), Decimal(0)),
        totals=totals,
        restated_days=tuple(d for d in plan.days if is_restated(d, through, seed)),
        data_keys=tuple(data_keys),
        manifest_key=manifest,
    )
