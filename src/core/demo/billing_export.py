"""Deterministic demo data for the GCP Cloud Billing *standard usage cost* export.

The generator writes newline-delimited JSON whose rows look like Google's table
``gcp_billing_export_v1_<BILLING_ACCOUNT_ID>`` (schema: ``configs/gcp/cost/billing_export_schema.json``;
every line has exactly that schema's columns, in that order, nested records as objects, repeated
records as lists, NULL as ``null``, timestamps as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` in UTC).
Everything is computed with ``random.Random`` from the standard library; the same
``(seed, end_date, days, rows_per_day, include_late)`` always gives a byte-identical file.

Data model
----------
* **Window.** The ``days`` UTC days ending at ``end_date`` (inclusive). Every row of usage day ``D``
  has ``usage_start_time`` on an hour boundary inside ``D`` and ``usage_end_time`` one hour later,
  so ``DATE(usage_start_time)`` (UTC) is ``D``.
* **Per-day randomness.** Each usage day draws from its own generators, seeded from
  ``(seed, D)``: the rows of a day do not depend on the window around it, so two windows that
  overlap agree on the shared days (as a re-extract of a trailing window expects).
* **The first export of a day** (``rows_per_day`` = N rows, all with one ``export_time`` 2–6 hours
  after the day ends) holds, in this order:

  - ``N - tax - adj - rnd`` rows of ``cost_type = "regular"``;
  - ``adj = max(1, N // 500)`` rows of ``"adjustment"`` (goodwill, SLA, price corrections; mostly
    negative, ``adjustment_info`` filled);
  - ``rnd = max(1, N // 1000)`` rows of ``"rounding_error"`` (± less than one cent);
  - ``tax = max(1, N // 250)`` rows of ``"tax"`` (positive; together about 3 % of the regular cost).

  ``rows_per_day`` must be at least 10.
* **Late corrections (a ledger).** A usage day ``D`` gets corrections iff
  ``(D.toordinal() + seed) % 4 == 0`` -- exactly one day in any four consecutive days. Such a day has
  ``late = max(2, N // 50)`` more rows, all with one later ``export_time`` (first export + 1–3 days):
  ``late - max(1, late // 4)`` additional ``"regular"`` usage rows (usage reported late) and
  ``max(1, late // 4)`` negative ``"adjustment"`` rows (``PARTIAL_CORRECTION`` /
  ``USAGE_CORRECTION``) that take back part of the cost of a row of the first export (same project,
  SKU, hour and invoice month). Nothing is updated in place: the true total of a day is the sum of
  all its rows. A day therefore has ``N`` rows, or ``N + max(2, N // 50)`` rows on a correction day.
  With ``include_late=False`` the late rows are left out and every other byte stays the same (the
  late rows use a generator of their own): the state before the late export arrived.
* **Invoice month.** ``invoice.month`` is the usage month (``YYYYMM``), except that about 12 % of
  the rows of the first two days of a month are billed on the previous month's invoice and about
  12 % of the rows of the last two days on the next month's, so invoice months cross calendar months.
* **Who and what.** The demo billing account :data:`DEMO_BILLING_ACCOUNT_ID` plus two reseller
  sub-accounts (:data:`RESELLER_SUBACCOUNT_IDS`), nine projects in folders under three
  organizations, ten services (Compute Engine, Cloud Storage, BigQuery, Cloud SQL, Kubernetes Engine,
  Cloud Run, Networking, Cloud Logging, Cloud Pub/Sub and a Marketplace product sold as
  ``THIRD_PARTY_RESELLER`` with ``seller_name`` and ``publisher_type = "Third-party"``), several SKUs
  each, seven regions. Service IDs are Google's; SKU IDs and names are realistic but illustrative.
* **Money.** ``cost``, ``cost_at_list`` and credit amounts are FLOAT values with at most 6 decimals
  (generated as integer micro-dollars). Regular rows: ``cost >= 0``, ``cost_at_list >= cost``,
  heavy-tailed (log-normal usage). About 30 % of regular rows carry credits (about 5 % carry two or
  three); credit amounts are negative and their sum never exceeds the row's cost in magnitude.
  Currency ``USD``, conversion rate 1.0. :class:`GeneratorStats` totals are the exact decimal sums
  of what was written.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from random import Random
from typing import Any, cast

DEMO_BILLING_ACCOUNT_ID = "01A2B3-C4D5E6-F7A8B9"
"""The demo billing account; its export table is ``gcp_billing_export_v1_01A2B3_C4D5E6_F7A8B9``."""

RESELLER_SUBACCOUNT_IDS = ("01B7C2-3D4E5F-6A7B8C", "01C9D0-E1F2A3-B4C5D6")
"""Reseller sub-accounts whose usage appears in the demo account's export."""

MIN_ROWS_PER_DAY = 10
LATE_DAY_PERIOD = 4
INVOICE_SHIFT_PROBABILITY = 0.12
CREDIT_PROBABILITY = 0.30
MULTI_CREDIT_PROBABILITY = 0.05
TAX_RATE = 0.03
RESERVOIR_SIZE = 512
MIN_CREDITED_COST_MICROS = 100

_MICROS = 1_000_000
_GIB = float(2**30)
_TIB = float(2**40)
_HOUR = 3600.0
_MONTH_SECONDS = 730.0 * 3600.0
_SEPARATORS = (",", ":")
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_WRITE_BUFFER = 1 << 20

_GOOGLE = "GOOGLE"
_RESELLER = "THIRD_PARTY_RESELLER"


def export_table_name(account_id: str = DEMO_BILLING_ACCOUNT_ID) -> str:
    """Name of the standard usage cost export table of a billing account."""
    return "gcp_billing_export_v1_" + account_id.replace("-", "_")


@dataclass(frozen=True)
class GeneratorStats:
    """What a generation wrote: row count, window and exact money totals."""

    rows: int
    days: int
    first_day: date
    last_day: date
    total_cost: float
    total_credits: float
    correction_rows: int


# --------------------------------------------------------------------------------------------------
# Static catalog (independent of the seed)
# --------------------------------------------------------------------------------------------------

# key: (service id, description, transaction_type, seller_name, negotiated discount off list)
_SERVICES: dict[str, tuple[str, str, str, str | None, float]] = {
    "gce": ("6F81-5844-456A", "Compute Engine", _GOOGLE, None, 0.10),
    "gcs": ("95FF-2EF5-5EA1", "Cloud Storage", _GOOGLE, None, 0.05),
    "bq": ("24E6-581D-38E5", "BigQuery", _GOOGLE, None, 0.0),
    "sql": ("9662-B51E-5089", "Cloud SQL", _GOOGLE, None, 0.08),
    "gke": ("CCD8-9BF1-090E", "Kubernetes Engine", _GOOGLE, None, 0.0),
    "run": ("152E-C115-5142", "Cloud Run", _GOOGLE, None, 0.0),
    "net": ("E505-1604-58F8", "Networking", _GOOGLE, None, 0.0),
    "log": ("5490-F7B7-8DF6", "Cloud Logging", _GOOGLE, None, 0.0),
    "pubsub": ("A1E8-BE35-7EBC", "Cloud Pub/Sub", _GOOGLE, None, 0.0),
    "mkt": ("7C4B-9E21-D3A6", "Nimbus Observability Platform", _RESELLER, "Nimbus Observability, Inc.", 0.0),
}


@dataclass(frozen=True)
class _Sku:
    service: str
    ids: tuple[str, str, str]  # Americas, EMEA, APAC
    description: str  # may contain "{geo}"
    unit: str
    pricing_unit: str
    factor: float  # usage units per pricing unit
    price: float  # list price per pricing unit (USD)
    median: float  # median amount in pricing units per row (one hour of usage)
    sigma: float  # log-normal spread of the amount
    where: str  # zone | region | multi | global
    machine: str = ""  # machine family for compute.googleapis.com system labels
    credits: tuple[str, ...] = ()
    weight: float = 1.0


def _sku(
    service: str,
    ids: str,
    description: str,
    units: tuple[str, str, float],
    price: float,
    usage: tuple[float, float],
    where: str,
    **extra: Any,
) -> _Sku:
    id_list = ids.split("/")
    triple = (id_list[0], id_list[min(1, len(id_list) - 1)], id_list[-1])
    return _Sku(service, triple, description, units[0], units[1], units[2], price, usage[0], usage[1], where, **extra)


_CORE_HOUR = ("seconds", "hour", _HOUR)
_RAM_HOUR = ("byte-seconds", "gibibyte hour", _GIB * _HOUR)
_GIB_MONTH = ("byte-seconds", "gibibyte month", _GIB * _MONTH_SECONDS)
_GIB_BYTES = ("bytes", "gibibyte", _GIB)
_TIB_BYTES = ("bytes", "tebibyte", _TIB)
_COUNT = ("requests", "count", 1.0)

# fmt: off
_SKUS: tuple[_Sku, ...] = (
    _sku("gce", "CF4E-A0C7-E3BF/9FE0-8F60-A9F0/2D7A-1C0B-4E35", "E2 Instance Core running in {geo}",
         _CORE_HOUR, 0.021811, (6.0, 1.0), "zone", machine="e2", credits=("cud",), weight=3.0),
    _sku("gce", "F449-33EC-A5EF/1A3C-65D1-C7F2/8B21-97E4-0DA3", "E2 Instance Ram running in {geo}",
         _RAM_HOUR, 0.002923, (24.0, 1.0), "zone", machine="e2", credits=("cud",), weight=3.0),
    _sku("gce", "BB77-5FDA-69D9/3E5D-D8C0-2B41/C4A9-7F13-56E8", "N2 Instance Core running in {geo}",
         _CORE_HOUR, 0.031611, (16.0, 1.2), "zone", machine="n2", credits=("sud", "cud"), weight=2.0),
    _sku("gce", "7B75-B2E8-E2D5/54C8-0A2F-E9B7/E1F6-3D92-7C05", "N2 Instance Ram running in {geo}",
         _RAM_HOUR, 0.004237, (64.0, 1.2), "zone", machine="n2", credits=("sud", "cud"), weight=2.0),
    _sku("gce", "D973-5D65-BAB2", "Storage PD Capacity", _GIB_MONTH, 0.04, (0.7, 1.3), "zone"),
    _sku("gce", "B188-61DD-52E4", "SSD backed PD Capacity", _GIB_MONTH, 0.17, (0.3, 1.3), "zone"),
    _sku("gcs", "E5F0-6A5D-7BAD/F9E4-33A8-20C1/0B6E-4F7D-99A2", "Standard Storage {geo}",
         _GIB_MONTH, 0.026, (2.0, 1.5), "multi", credits=("free_tier",), weight=3.0),
    _sku("gcs", "A703-5CB6-E0BF/6C14-B2D9-81F0/3F8A-E05C-D427", "Nearline Storage {geo}",
         _GIB_MONTH, 0.01, (3.0, 1.2), "multi"),
    _sku("gcs", "1E85-9D3B-4A6F", "Multi-Region Standard Class A Operations",
         _COUNT, 0.000005, (20000.0, 1.5), "multi", credits=("free_tier",)),
    _sku("gcs", "22EB-AAE8-FBCD", "Download Worldwide Destinations (excluding Asia & Australia)",
         _GIB_BYTES, 0.12, (2.0, 1.8), "multi"),
    _sku("bq", "F17B-412E-CB64", "Analysis", _TIB_BYTES, 6.25, (0.02, 2.0), "multi",
         credits=("free_tier",), weight=4.0),
    _sku("bq", "5C7B-6E52-A2C4", "Active Logical Storage", _GIB_MONTH, 0.02, (5.0, 1.2), "multi",
         credits=("free_tier",), weight=2.0),
    _sku("bq", "9A87-E1C6-0F24", "Long Term Logical Storage", _GIB_MONTH, 0.01, (8.0, 1.0), "multi"),
    _sku("bq", "8E5C-4B1A-7F63", "Streaming Insert", _GIB_BYTES, 0.05, (1.0, 1.5), "multi"),
    _sku("sql", "9F2B-4E6A-C1D3/4D8E-7B02-A5F9/6A1C-E3B7-0D48",
         "Cloud SQL for PostgreSQL: Enterprise Edition - vCPU in {geo}",
         _CORE_HOUR, 0.0413, (8.0, 0.8), "region", credits=("cud_dollar",), weight=2.0),
    _sku("sql", "3B6D-92F1-E7A0/B5C2-18E4-6F3D/E8F0-5A2B-C916",
         "Cloud SQL for PostgreSQL: Enterprise Edition - RAM in {geo}",
         _RAM_HOUR, 0.007, (32.0, 0.8), "region", credits=("cud_dollar",), weight=2.0),
    _sku("sql", "0C9A-D4E3-18B5", "Cloud SQL for PostgreSQL: Zonal - Standard storage",
         _GIB_MONTH, 0.17, (0.35, 0.9), "region"),
    _sku("gke", "B561-BC63-4DC6", "Regional Kubernetes Clusters", _CORE_HOUR, 0.10, (1.0, 0.2), "region",
         credits=("free_tier",)),
    _sku("gke", "7E61-8A5D-F0C2/29B4-C6E1-3A7F/D03E-5F98-B2A1", "Autopilot Pod vCPU Requests in {geo}",
         _CORE_HOUR, 0.0445, (10.0, 1.2), "region", credits=("cud_dollar",), weight=2.0),
    _sku("gke", "E2A8-37D9-14FB/5F6C-A0B3-8E21/91D7-2C4E-F6A0", "Autopilot Pod Memory Requests in {geo}",
         _RAM_HOUR, 0.0049225, (40.0, 1.2), "region", credits=("cud_dollar",), weight=2.0),
    _sku("run", "CF89-4C5E-3F36", "CPU Allocation Time", _CORE_HOUR, 0.0864, (2.0, 1.5), "region",
         credits=("free_tier", "cud_dollar"), weight=2.0),
    _sku("run", "1F9B-7A82-D4C0", "Memory Allocation Time", _RAM_HOUR, 0.009, (4.0, 1.5), "region",
         credits=("free_tier", "cud_dollar"), weight=2.0),
    _sku("run", "6B3E-C9D1-205A", "Requests", _COUNT, 0.0000004, (100000.0, 1.8), "region",
         credits=("free_tier",)),
    _sku("net", "9DE9-9092-B3BC/C7FF-4F9E-C0DB/6B8F-0CCF-9B6D",
         "Network Internet Data Transfer Out from {geo} to Americas",
         _GIB_BYTES, 0.12, (3.0, 2.0), "region", weight=3.0),
    _sku("net", "DE9E-AFBC-A15A", "Network Inter Zone Data Transfer Out", _GIB_BYTES, 0.01, (20.0, 1.5), "region"),
    _sku("net", "2E39-5C4E-8A1B/A1F7-90D2-6C3E/4C5D-E8B6-17F9",
         "Cloud Load Balancer Forwarding Rule Minimum Service Charge in {geo}",
         _CORE_HOUR, 0.025, (1.0, 0.05), "region"),
    _sku("net", "6E94-25C8-1B07", "Static Ip Charge", _CORE_HOUR, 0.005, (2.0, 0.5), "region"),
    _sku("log", "143F-A1B0-E0BE", "Log Storage cost", _GIB_BYTES, 0.50, (0.2, 1.5), "global",
         credits=("free_tier",), weight=2.0),
    _sku("log", "0AC2-4EB4-34B1", "Log Retention cost", _GIB_MONTH, 0.01, (1.0, 1.0), "global"),
    _sku("pubsub", "8A3B-5E7C-9D21", "Message Delivery Basic", _TIB_BYTES, 40.0, (0.002, 1.5), "global",
         weight=2.0),
    _sku("pubsub", "4F2E-B8C1-6A90", "Subscriptions retained acknowledged messages", _GIB_MONTH, 0.27,
         (0.1, 1.0), "global"),
    _sku("mkt", "D6A1-3C8F-52E7", "Nimbus Observability Pro - Monitored host", _CORE_HOUR, 0.045,
         (20.0, 0.7), "global"),
)
# fmt: on

# region: (country, zones used, geo of the SKU, multi-region)
_REGIONS: dict[str, tuple[str, tuple[str, str], int, str]] = {
    "us-central1": ("US", ("us-central1-a", "us-central1-c"), 0, "us"),
    "us-east1": ("US", ("us-east1-b", "us-east1-c"), 0, "us"),
    "us-west1": ("US", ("us-west1-a", "us-west1-b"), 0, "us"),
    "europe-west1": ("BE", ("europe-west1-b", "europe-west1-d"), 1, "eu"),
    "europe-west3": ("DE", ("europe-west3-a", "europe-west3-c"), 1, "eu"),
    "asia-southeast1": ("SG", ("asia-southeast1-a", "asia-southeast1-b"), 2, "asia"),
    "asia-northeast1": ("JP", ("asia-northeast1-a", "asia-northeast1-b"), 2, "asia"),
}
_GEO_NAMES = ("Americas", "EMEA", "APAC")
_MULTI_NAMES = {"us": "US Multi-region", "eu": "Europe Multi-region", "asia": "Asia Multi-region"}
_MULTI_COUNTRY = {"us": "US", "eu": None, "asia": None}
_MULTI_GEO = {"us": 0, "eu": 1, "asia": 2}

# family: (machine type, cores, memory MiB, is_unused_reservation, weight)
_MACHINES: dict[str, tuple[tuple[str, int, int, bool, float], ...]] = {
    "e2": (
        ("e2-standard-4", 4, 16384, False, 5.0),
        ("e2-standard-8", 8, 32768, False, 3.0),
        ("e2-medium", 2, 4096, False, 2.0),
    ),
    "n2": (
        ("n2-standard-16", 16, 65536, False, 3.0),
        ("n2-highmem-8", 8, 65536, False, 2.0),
        ("n2-standard-32", 32, 131072, False, 1.0),
        ("n2-standard-16", 16, 65536, True, 0.3),
    ),
}

# organization / folder: (number, display name)
_ORGS = {
    "acme": ("512309847261", "acme-corp.example"),
    "globex": ("623410958372", "globex.example"),
    "initech": ("734521069483", "initech.example"),
}
_FOLDERS = {
    "prod": ("803344556677", "Production"),
    "nonprod": ("803344556688", "Non-production"),
    "shared": ("803344556699", "Shared"),
    "globex": ("914455667701", "Shop"),
    "initech": ("925566778812", "Analytics"),
}


@dataclass(frozen=True)
class _Project:
    id: str
    number: str
    name: str
    account: str
    org: str
    folder: str
    env: str
    team: str
    apps: tuple[str, ...]
    regions: tuple[str, ...]
    weight: float
    services: tuple[tuple[str, float], ...]


# fmt: off
# id, number, name, billing account, organization, folder, env, team, apps, regions, weight, (service, weight)...
_PROJECTS: tuple[_Project, ...] = (
    _Project("acme-prod-web", "482917365021", "Acme Prod Web", DEMO_BILLING_ACCOUNT_ID, "acme", "prod",
             "prod", "web", ("storefront", "checkout", "api-gateway"), ("us-central1", "us-east1"), 30.0,
             (("gce", 5), ("gcs", 2), ("run", 3), ("net", 3), ("log", 1), ("sql", 2), ("gke", 3))),
    _Project("acme-prod-data", "482917365187", "Acme Prod Data", DEMO_BILLING_ACCOUNT_ID, "acme", "prod",
             "prod", "data", ("warehouse", "ingest", "dbt"), ("us-central1",), 25.0,
             (("bq", 6), ("gcs", 3), ("sql", 2), ("pubsub", 2), ("log", 1), ("gce", 1))),
    _Project("acme-ml-training", "482917365302", "Acme ML Training", DEMO_BILLING_ACCOUNT_ID, "acme", "prod",
             "prod", "ml", ("trainer", "feature-store"), ("us-central1", "us-west1"), 12.0,
             (("gce", 6), ("gcs", 3), ("bq", 1), ("log", 0.5))),
    _Project("acme-staging", "482917365449", "Acme Staging", DEMO_BILLING_ACCOUNT_ID, "acme", "nonprod",
             "staging", "platform", ("storefront", "checkout"), ("us-east1",), 8.0,
             (("gce", 3), ("gke", 2), ("run", 2), ("sql", 1), ("log", 1), ("net", 1))),
    _Project("acme-dev-sandbox", "482917365513", "Acme Dev Sandbox", DEMO_BILLING_ACCOUNT_ID, "acme", "nonprod",
             "dev", "platform", ("playground",), ("us-west1",), 4.0,
             (("gce", 2), ("run", 1), ("gcs", 1), ("bq", 1), ("log", 0.5))),
    _Project("acme-shared-network", "482917365678", "Acme Shared Network", DEMO_BILLING_ACCOUNT_ID, "acme",
             "shared", "prod", "netops", ("edge", "vpn"), ("us-central1", "europe-west1"), 6.0,
             (("net", 6), ("log", 1), ("gce", 1))),
    _Project("acme-eu-prod", "482917365790", "Acme EU Prod", DEMO_BILLING_ACCOUNT_ID, "acme", "prod",
             "prod", "web", ("storefront", "checkout"), ("europe-west1", "europe-west3"), 8.0,
             (("gce", 3), ("run", 2), ("gcs", 2), ("sql", 2), ("net", 2), ("log", 1))),
    _Project("globex-shop-prod", "593028476134", "Globex Shop", RESELLER_SUBACCOUNT_IDS[0], "globex", "globex",
             "prod", "shop", ("shop-frontend", "orders"), ("asia-southeast1", "asia-northeast1"), 5.0,
             (("gce", 3), ("gcs", 2), ("sql", 1), ("net", 1), ("mkt", 1))),
    _Project("initech-analytics", "604139587245", "Initech Analytics", RESELLER_SUBACCOUNT_IDS[1], "initech",
             "initech", "prod", "bi", ("reports", "etl"), ("us-east1", "europe-west3"), 3.0,
             (("bq", 4), ("gcs", 2), ("log", 1), ("mkt", 1))),
)
# fmt: on

_ENV_TAG = {"prod": "production", "staging": "staging", "dev": "development"}

# credit kind: (type, name, full_name template, id template); {service}, {region}, {number}, {account}
# are filled per combo
_CREDITS: dict[str, tuple[str, str, str, str]] = {
    "sud": (
        "SUSTAINED_USAGE_DISCOUNT",
        "Sustained Usage Discount",
        "Sustained Usage Discount",
        "sustained-usage-discount",
    ),
    "cud": (
        "COMMITTED_USAGE_DISCOUNT",
        "Committed use discount: CPU and RAM",
        "Committed use discount: resource-based, 1 year, {region}",
        "projects/{number}/regions/{region}/commitments/cud-1y-general",
    ),
    "cud_dollar": (
        "COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE",
        "Committed use discount - dollar based",
        "Committed use discount: spend-based, 3 years, {service}",
        "billingAccounts/{account}/commitments/cud-spend-3y",
    ),
    "free_tier": ("FREE_TIER", "Free Tier", "Free Tier: {service} monthly allowance", "free-tier"),
    "promo": ("PROMOTION", "Innovators Plus credit", "Innovators Plus promotional credit", "promotion-innovators-plus"),
    "discount": (
        "DISCOUNT",
        "Enterprise agreement discount",
        "Enterprise agreement discount on {service}",
        "discount-enterprise-agreement",
    ),
    "reseller": ("DISCOUNT", "Reseller margin", "Reseller margin discount", "discount-reseller-margin"),
}

_TAX_SKU = {"id": "1B2C-9E4F-7A0D", "description": "Sales tax"}

# (description template, mode, type, sign): first-export adjustments
_ADJUSTMENTS: tuple[tuple[str, str, str, int], ...] = (
    ("Goodwill credit for support case {case}", "MANUAL_ADJUSTMENT", "GOODWILL", -1),
    ("SLA credit for {service} availability", "MANUAL_ADJUSTMENT", "SLA_VIOLATION", -1),
    ("General adjustment", "MANUAL_ADJUSTMENT", "GENERAL_ADJUSTMENT", -1),
    ("General adjustment", "MANUAL_ADJUSTMENT", "GENERAL_ADJUSTMENT", 1),
    ("Price correction for {sku}", "PARTIAL_CORRECTION", "PRICE_CORRECTION", -1),
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=_SEPARATORS)


@dataclass(frozen=True)
class _Combo:
    """One (project, SKU, location, machine type): precomputed dicts and JSON fragments of a row."""

    account: str
    service: dict[str, str]
    sku: dict[str, str]
    project: dict[str, Any]
    system_labels: list[dict[str, str]]
    location: dict[str, str | None]
    transaction_type: str
    seller_name: str | None
    publisher_type: str
    unit: str
    pricing_unit: str
    factor: float
    price: float
    net: float  # cost / cost_at_list
    median: float
    sigma: float
    integral: bool  # usage amount is a whole number
    credits: tuple[tuple[str, str], ...]  # JSON before / after the amount
    labels: tuple[str, ...]  # JSON options for "labels"
    tags: tuple[str, ...]  # JSON options for "tags"
    head: str = field(init=False)  # JSON up to the usage_start_time value
    middle: str = field(init=False)  # JSON from "usage_end_time" value end to the labels value
    tail: str = field(init=False)  # JSON from "system_labels" to the tags value
    seller: str = field(init=False)  # JSON from "transaction_type" to the export_time value
    unit_json: str = field(init=False)  # JSON between the usage amount and the amount in pricing units
    pricing_unit_json: str = field(init=False)  # JSON from "pricing_unit" to the credits value
    invoice_tail: str = field(init=False)  # JSON after the invoice month

    def __post_init__(self) -> None:
        head = (
            '{"billing_account_id":'
            + _dumps(self.account)
            + ',"service":'
            + _dumps(self.service)
            + ',"sku":'
            + _dumps(self.sku)
            + ',"usage_start_time":"'
        )
        middle = '","project":' + _dumps(self.project) + ',"labels":'
        tail = ',"system_labels":' + _dumps(self.system_labels) + ',"location":' + _dumps(self.location) + ',"tags":'
        seller = (
            ',"transaction_type":'
            + _dumps(self.transaction_type)
            + ',"seller_name":'
            + _dumps(self.seller_name)
            + ',"export_time":"'
        )
        fragments = {
            "head": head,
            "middle": middle,
            "tail": tail,
            "seller": seller,
            "unit_json": ',"unit":' + _dumps(self.unit) + ',"amount_in_pricing_units":',
            "pricing_unit_json": ',"pricing_unit":' + _dumps(self.pricing_unit) + '},"credits":',
            "invoice_tail": '","publisher_type":' + _dumps(self.publisher_type) + "}",
        }
        for name, value in fragments.items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class _Catalog:
    combos: tuple[_Combo, ...]
    cumulative: tuple[float, ...]
    total: float

    def pick(self, rng: Random) -> int:
        return bisect.bisect_right(self.cumulative, rng.random() * self.total)


def _project_record(p: _Project) -> dict[str, Any]:
    org_number, org_name = _ORGS[p.org]
    folder_number, folder_name = _FOLDERS[p.folder]
    return {
        "id": p.id,
        "number": p.number,
        "name": p.name,
        "labels": [
            {"key": "env", "value": p.env},
            {"key": "team", "value": p.team},
            {"key": "cost-center", "value": f"cc-{int(p.number[-3:]) % 90 + 100}"},
        ],
        "ancestry_numbers": f"/{org_number}/{folder_number}/",
        "ancestors": [
            {"resource_name": f"projects/{p.number}", "display_name": p.id},
            {"resource_name": f"folders/{folder_number}", "display_name": folder_name},
            {"resource_name": f"organizations/{org_number}", "display_name": org_name},
        ],
    }


def _label_options(p: _Project) -> tuple[str, ...]:
    env, team = ("env", p.env), ("team", p.team)
    sets: list[list[tuple[str, str]]] = [[], [], [env], [env, team]]
    for app in p.apps:
        sets += [[("app", app)], [("app", app), env], [("app", app), env, team], [("app", app), ("component", "api")]]
    return tuple(_dumps([{"key": k, "value": v} for k, v in s]) for s in sets)


def _tag_options(p: _Project) -> tuple[str, ...]:
    namespace = _ORGS[p.org][0]
    env_tag = {"key": "environment", "value": _ENV_TAG[p.env], "inherited": True, "namespace": namespace}
    data_tag = {
        "key": "data-classification",
        "value": "confidential" if p.team in ("data", "bi") else "internal",
        "inherited": False,
        "namespace": namespace,
    }
    return tuple(_dumps(t) for t in ([], [], [], [env_tag], [env_tag, data_tag]))


def _locations(p: _Project, where: str) -> list[tuple[dict[str, str | None], int]]:
    """Location records (and SKU geo index) a project uses for a SKU located at ``where``."""
    if where == "global":
        return [({"location": "global", "country": None, "region": None, "zone": None}, _MULTI_GEO["us"])]
    if where == "multi":
        multi = _REGIONS[p.regions[0]][3]
        return [
            ({"location": multi, "country": _MULTI_COUNTRY[multi], "region": None, "zone": None}, _MULTI_GEO[multi])
        ]
    out: list[tuple[dict[str, str | None], int]] = []
    for region in p.regions:
        country, zones, geo, _multi = _REGIONS[region]
        if where == "region":
            out.append(({"location": region, "country": country, "region": region, "zone": None}, geo))
        else:
            out += [({"location": z, "country": country, "region": region, "zone": z}, geo) for z in zones]
    return out


def _system_labels(machine: tuple[str, int, int, bool, float] | None) -> list[dict[str, str]]:
    if machine is None:
        return []
    spec, cores, memory, unused, _w = machine
    return [
        {"key": "compute.googleapis.com/cores", "value": str(cores)},
        {"key": "compute.googleapis.com/machine_spec", "value": spec},
        {"key": "compute.googleapis.com/memory", "value": str(memory)},
        {"key": "compute.googleapis.com/is_unused_reservation", "value": "true" if unused else "false"},
    ]


def _credit_templates(p: _Project, sku: _Sku, region: str | None) -> tuple[tuple[str, str], ...]:
    kinds = list(sku.credits) + (["promo", "discount"] if p.account == DEMO_BILLING_ACCOUNT_ID else ["reseller"])
    service_name = _SERVICES[sku.service][1]
    out = []
    for kind in kinds:
        ctype, name, full_name, cid = _CREDITS[kind]
        values = {"service": service_name, "region": region or "global", "number": p.number, "account": p.account}
        before = '{"name":' + _dumps(name) + ',"amount":'
        after = (
            ',"full_name":'
            + _dumps(full_name.format(**values))
            + ',"id":'
            + _dumps(cid.format(**values))
            + ',"type":'
            + _dumps(ctype)
            + "}"
        )
        out.append((before, after))
    return tuple(out)


def _combos_for(p: _Project, sku: _Sku, weight: float) -> Iterator[tuple[_Combo, float]]:
    service_id, service_name, txn, seller, discount = _SERVICES[sku.service]
    locations = _locations(p, sku.where)
    machines: Sequence[tuple[str, int, int, bool, float] | None] = _MACHINES.get(sku.machine, (None,))
    machine_total = sum(m[4] if m else 1.0 for m in machines)
    for location, geo in locations:
        geo_name = _MULTI_NAMES[str(location["location"])] if sku.where == "multi" else _GEO_NAMES[geo]
        for machine in machines:
            combo = _Combo(
                account=p.account,
                service={"id": service_id, "description": service_name},
                sku={"id": sku.ids[geo], "description": sku.description.format(geo=geo_name)},
                project=_project_record(p),
                system_labels=_system_labels(machine),
                location=location,
                transaction_type=txn,
                seller_name=seller,
                publisher_type="Google" if txn == _GOOGLE else "Third-party",
                unit=sku.unit,
                pricing_unit=sku.pricing_unit,
                factor=sku.factor,
                price=sku.price,
                net=1.0 - discount,
                median=sku.median,
                sigma=sku.sigma,
                integral=sku.unit in ("bytes", "requests"),
                credits=_credit_templates(p, sku, location["region"]),
                labels=_label_options(p),
                tags=_tag_options(p),
            )
            share = (machine[4] if machine else 1.0) / machine_total / len(locations)
            yield combo, weight * share


@lru_cache(maxsize=1)
def _catalog() -> _Catalog:
    combos: list[_Combo] = []
    cumulative: list[float] = []
    total = 0.0
    for p in _PROJECTS:
        service_total = sum(w for _s, w in p.services)
        for service, service_weight in p.services:
            skus = [s for s in _SKUS if s.service == service]
            sku_total = sum(s.weight for s in skus)
            for sku in skus:
                weight = p.weight * service_weight / service_total * sku.weight / sku_total
                for combo, w in _combos_for(p, sku, weight):
                    combos.append(combo)
                    total += w
                    cumulative.append(total)
    return _Catalog(tuple(combos), tuple(cumulative), total)


# --------------------------------------------------------------------------------------------------
# Per-day generation
# --------------------------------------------------------------------------------------------------


def _ts(value: datetime) -> str:
    return value.strftime(_TS_FORMAT)


def _month(day: date) -> str:
    return f"{day.year:04d}{day.month:02d}"


def _alternate_invoice_month(day: date) -> str | None:
    """The neighbouring invoice month some rows of a month-boundary day are billed on, else None."""
    if day.day <= 2:
        return _month(day.replace(day=1) - timedelta(days=1))
    if (day + timedelta(days=2)).month != day.month:
        return _month(day + timedelta(days=2))
    return None


@dataclass(frozen=True)
class _Day:
    day: date
    starts: tuple[str, ...]
    ends: tuple[str, ...]
    export_at: datetime
    month: str
    alt_month: str | None
    scale: float

    @classmethod
    def build(cls, day: date, rng: Random) -> _Day:
        midnight = datetime.combine(day, time(0), tzinfo=UTC)
        hours = [midnight + timedelta(hours=h) for h in range(25)]
        export_at = hours[24] + timedelta(microseconds=rng.randrange(2 * 3600 * _MICROS, 6 * 3600 * _MICROS))
        weekend = 0.82 if day.weekday() >= 5 else 1.0
        return cls(
            day,
            tuple(_ts(h) for h in hours[:24]),
            tuple(_ts(h) for h in hours[1:]),
            export_at,
            _month(day),
            _alternate_invoice_month(day),
            weekend * (0.9 + 0.2 * rng.random()),
        )

    def invoice_month(self, rng: Random) -> str:
        if self.alt_month is not None and rng.random() < INVOICE_SHIFT_PROBABILITY:
            return self.alt_month
        return self.month


@dataclass
class _Totals:
    rows: int = 0
    cost_micros: int = 0
    credit_micros: int = 0
    correction_rows: int = 0


@dataclass(frozen=True)
class _Charged:
    """A regular row of the first export a late correction may refer to."""

    combo: int
    hour: int
    cost_micros: int
    month: str


def _credits_json(rng: Random, c: _Combo, cost_micros: int, draw: float) -> tuple[str, int]:
    """Credits of a regular row (``draw`` < CREDIT_PROBABILITY) as JSON, and their sum in micros."""
    count = 1
    if draw < MULTI_CREDIT_PROBABILITY:
        count = min(len(c.credits), 2 if rng.random() < 0.6 else 3)
    chosen = rng.sample(c.credits, count) if count > 1 else [c.credits[int(rng.random() * len(c.credits))]]
    budget = cost_micros * (0.05 + 0.85 * rng.random())
    weights = [0.2 + rng.random() for _ in chosen]
    scale = budget / sum(weights)
    parts: list[str] = []
    total = 0
    for (before, after), w in zip(chosen, weights, strict=True):
        amount = -max(1, int(w * scale))
        total += amount
        parts.append(before + repr(amount / _MICROS) + after)
    return "[" + ",".join(parts) + "]", total


def _regular_line(rng: Random, c: _Combo, d: _Day, export_time: str, hour: int, month: str) -> tuple[str, int, int]:
    """One regular usage row: (JSON line, cost in micros, credits in micros)."""
    amount = c.median * d.scale * rng.lognormvariate(0.0, c.sigma) * c.factor
    amount = float(round(amount)) if c.integral else round(amount, 3)
    pricing_amount = amount / c.factor
    list_micros = round(pricing_amount * c.price * _MICROS)
    cost_micros = round(list_micros * c.net)
    draw = rng.random()
    credits, credit_micros = "[]", 0
    if draw < CREDIT_PROBABILITY and cost_micros >= MIN_CREDITED_COST_MICROS:
        credits, credit_micros = _credits_json(rng, c, cost_micros, draw)
    labels = c.labels[int(rng.random() * len(c.labels))]
    tags = c.tags[int(rng.random() * len(c.tags))]
    line = (
        f'{c.head}{d.starts[hour]}","usage_end_time":"{d.ends[hour]}{c.middle}{labels}{c.tail}{tags}'
        f'{c.seller}{export_time}","cost":{cost_micros / _MICROS!r},"currency":"USD",'
        f'"currency_conversion_rate":1.0,"usage":{{"amount":{amount!r}{c.unit_json}{round(pricing_amount, 9)!r}'
        f'{c.pricing_unit_json}{credits},"invoice":{{"month":"{month}{c.invoice_tail},'
        f'"cost_type":"regular","adjustment_info":null,"cost_at_list":{list_micros / _MICROS!r}}}\n'
    )
    return line, cost_micros, credit_micros


def _other_line(
    c: _Combo,
    d: _Day,
    *,
    hour: int,
    export_time: str,
    month: str,
    cost_type: str,
    cost_micros: int,
    adjustment: dict[str, str] | None = None,
) -> str:
    """A tax, adjustment or rounding_error row (no usage, labels or credits); cost_at_list = cost."""
    is_tax = cost_type == "tax"
    cost = cost_micros / _MICROS
    row: dict[str, Any] = {
        "billing_account_id": c.account,
        "service": c.service,
        "sku": _TAX_SKU if is_tax else c.sku,
        "usage_start_time": d.starts[hour],
        "usage_end_time": d.ends[hour],
        "project": c.project,
        "labels": [],
        "system_labels": [],
        "location": c.location,
        "tags": [],
        "transaction_type": c.transaction_type,
        "seller_name": c.seller_name,
        "export_time": export_time,
        "cost": cost,
        "currency": "USD",
        "currency_conversion_rate": 1.0,
        "usage": {
            "amount": 0.0,
            "unit": None if is_tax else c.unit,
            "amount_in_pricing_units": 0.0,
            "pricing_unit": None if is_tax else c.pricing_unit,
        },
        "credits": [],
        "invoice": {"month": month, "publisher_type": c.publisher_type},
        "cost_type": cost_type,
        "adjustment_info": adjustment,
        "cost_at_list": cost,
    }
    return _dumps(row) + "\n"


def _adjustment_info(rng: Random, c: _Combo, template: tuple[str, str, str, int], **values: str) -> dict[str, str]:
    text, mode, kind, _sign = template
    description = text.format(
        case=str(rng.randrange(10**9, 10**10)), service=c.service["description"], sku=c.sku["description"], **values
    )
    return {"id": f"{rng.getrandbits(64):016x}", "description": description, "mode": mode, "type": kind}


@dataclass(frozen=True)
class _DayPlan:
    regular: int
    adjustments: int
    rounding: int
    tax: int
    late_regular: int
    late_adjustments: int

    @classmethod
    def of(cls, rows_per_day: int) -> _DayPlan:
        adjustments = max(1, rows_per_day // 500)
        rounding = max(1, rows_per_day // 1000)
        tax = max(1, rows_per_day // 250)
        late = max(2, rows_per_day // 50)
        late_adjustments = max(1, late // 4)
        return cls(
            rows_per_day - adjustments - rounding - tax,
            adjustments,
            rounding,
            tax,
            late - late_adjustments,
            late_adjustments,
        )


def is_correction_day(day: date, seed: int) -> bool:
    """Whether usage ``day`` receives late corrections for this seed (one day in four)."""
    return (day.toordinal() + seed) % LATE_DAY_PERIOD == 0


def _first_export(day: _Day, plan: _DayPlan, rng: Random, totals: _Totals, charged: list[_Charged]) -> Iterator[str]:
    """The rows of the first export of a usage day, in order: regular, adjustment, rounding, tax."""
    catalog = _catalog()
    combos = catalog.combos
    export_time = _ts(day.export_at)
    regular_micros = 0
    for _ in range(plan.regular):
        index = catalog.pick(rng)
        hour = int(rng.random() * 24)
        month = day.invoice_month(rng)
        line, cost, credit = _regular_line(rng, combos[index], day, export_time, hour, month)
        regular_micros += cost
        totals.credit_micros += credit
        if len(charged) < RESERVOIR_SIZE:
            charged.append(_Charged(index, hour, cost, month))
        yield line
    totals.cost_micros += regular_micros
    for _ in range(plan.adjustments):
        c = combos[catalog.pick(rng)]
        template = _ADJUSTMENTS[int(rng.random() * len(_ADJUSTMENTS))]
        cost = template[3] * max(1, round(rng.lognormvariate(1.1, 1.0) * _MICROS))
        totals.cost_micros += cost
        yield _other_line(
            c,
            day,
            hour=int(rng.random() * 24),
            export_time=export_time,
            month=day.invoice_month(rng),
            cost_type="adjustment",
            cost_micros=cost,
            adjustment=_adjustment_info(rng, c, template),
        )
    for _ in range(plan.rounding):
        c = combos[catalog.pick(rng)]
        cost = rng.choice((-1, 1)) * rng.randrange(1, 10_000)
        totals.cost_micros += cost
        yield _other_line(
            c,
            day,
            hour=int(rng.random() * 24),
            export_time=export_time,
            month=day.invoice_month(rng),
            cost_type="rounding_error",
            cost_micros=cost,
        )
    yield from _tax_rows(day, plan, rng, totals, export_time, regular_micros)


def _tax_rows(
    day: _Day, plan: _DayPlan, rng: Random, totals: _Totals, export_time: str, regular_micros: int
) -> Iterator[str]:
    catalog = _catalog()
    weights = [0.5 + rng.random() for _ in range(plan.tax)]
    per_weight = regular_micros * TAX_RATE / sum(weights)
    for w in weights:
        c = catalog.combos[catalog.pick(rng)]
        cost = max(1, round(w * per_weight))
        totals.cost_micros += cost
        yield _other_line(
            c,
            day,
            hour=int(rng.random() * 24),
            export_time=export_time,
            month=day.invoice_month(rng),
            cost_type="tax",
            cost_micros=cost,
        )


def _late_export(day: _Day, plan: _DayPlan, rng: Random, totals: _Totals, charged: Sequence[_Charged]) -> Iterator[str]:
    """Late rows of a correction day: more usage, then negative corrections of first-export rows."""
    catalog = _catalog()
    late_at = day.export_at + timedelta(days=rng.randint(1, 3), microseconds=rng.randrange(12 * 3600 * _MICROS))
    export_time = _ts(late_at)
    for _ in range(plan.late_regular):
        index = catalog.pick(rng)
        hour = int(rng.random() * 24)
        line, cost, credit = _regular_line(rng, catalog.combos[index], day, export_time, hour, day.invoice_month(rng))
        totals.cost_micros += cost
        totals.credit_micros += credit
        yield line
    sizeable = [row for row in charged if row.cost_micros >= MIN_CREDITED_COST_MICROS]
    candidates = sizeable or [max(charged, key=lambda row: row.cost_micros)]
    template = ("Usage correction for {day}", "PARTIAL_CORRECTION", "USAGE_CORRECTION", -1)
    for _ in range(plan.late_adjustments):
        target = candidates[int(rng.random() * len(candidates))]
        c = catalog.combos[target.combo]
        cost = -max(1, int(target.cost_micros * (0.05 + 0.45 * rng.random())))
        info = _adjustment_info(rng, c, template, day=day.day.isoformat())
        totals.cost_micros += cost
        yield _other_line(
            c,
            day,
            hour=target.hour,
            export_time=export_time,
            month=target.month,
            cost_type="adjustment",
            cost_micros=cost,
            adjustment=info,
        )


def _day_lines(day: date, *, rows_per_day: int, seed: int, include_late: bool, totals: _Totals) -> Iterator[str]:
    plan = _DayPlan.of(rows_per_day)
    rng = Random(f"{seed}|{day.isoformat()}|first")
    context = _Day.build(day, rng)
    charged: list[_Charged] = []
    for line in _first_export(context, plan, rng, totals, charged):
        totals.rows += 1
        yield line
    if include_late and is_correction_day(day, seed):
        late_rng = Random(f"{seed}|{day.isoformat()}|late")
        for line in _late_export(context, plan, late_rng, totals, charged):
            totals.rows += 1
            totals.correction_rows += 1
            yield line


def _window(end_date: date, days: int) -> list[date]:
    return [end_date - timedelta(days=offset) for offset in range(days - 1, -1, -1)]


def _check(days: int, rows_per_day: int) -> None:
    if days < 1:
        raise ValueError("days must be at least 1")
    if rows_per_day < MIN_ROWS_PER_DAY:
        raise ValueError(f"rows_per_day must be at least {MIN_ROWS_PER_DAY}")


def _lines(
    end_date: date, days: int, rows_per_day: int, seed: int, include_late: bool, totals: _Totals
) -> Iterator[str]:
    _check(days, rows_per_day)
    for day in _window(end_date, days):
        yield from _day_lines(day, rows_per_day=rows_per_day, seed=seed, include_late=include_late, totals=totals)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def rows_in_window(
    *, end_date: date, days: int = 30, rows_per_day: int = 5000, seed: int = 42, include_late: bool = True
) -> int:
    """Number of rows a generation writes, without generating them."""
    _check(days, rows_per_day)
    plan = _DayPlan.of(rows_per_day)
    late_days = sum(1 for day in _window(end_date, days) if is_correction_day(day, seed)) if include_late else 0
    return days * rows_per_day + late_days * (plan.late_regular + plan.late_adjustments)


def iter_lines(
    *, end_date: date, days: int = 30, rows_per_day: int = 5000, seed: int = 42, include_late: bool = True
) -> Iterator[str]:
    """The NDJSON lines (each ending in a newline) :func:`write_ndjson` writes."""
    return _lines(end_date, days, rows_per_day, seed, include_late, _Totals())


def iter_rows(
    *, end_date: date, days: int = 30, rows_per_day: int = 5000, seed: int = 42, include_late: bool = True
) -> Iterator[dict[str, Any]]:
    """The rows :func:`write_ndjson` writes, as JSON-ready dicts (fresh objects per row)."""
    for line in iter_lines(
        end_date=end_date, days=days, rows_per_day=rows_per_day, seed=seed, include_late=include_late
    ):
        yield cast(dict[str, Any], json.loads(line))


def write_ndjson(
    path: Path, *, end_date: date, days: int = 30, rows_per_day: int = 5000, seed: int = 42, include_late: bool = True
) -> GeneratorStats:
    """Write the demo export for the ``days`` days ending at ``end_date`` to ``path`` (NDJSON, UTF-8)."""
    totals = _Totals()
    lines: Iterable[str] = _lines(end_date, days, rows_per_day, seed, include_late, totals)
    with open(path, "w", encoding="utf-8", newline="\n", buffering=_WRITE_BUFFER) as out:
        out.writelines(lines)
    return GeneratorStats(
        rows=totals.rows,
        days=days,
        first_day=end_date - timedelta(days=days - 1),
        last_day=end_date,
        total_cost=totals.cost_micros / _MICROS,
        total_credits=totals.credit_micros / _MICROS,
        correction_rows=totals.correction_rows,
    )
