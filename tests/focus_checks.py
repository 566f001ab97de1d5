"""FOCUS rows of the demo data, and the checks they must pass (used by the tests and on the command line).

* :func:`aws_focus_rows` loads a demo AWS CUR 2.0 delivery (``src/core/demo/aws_cur_export.py``) into
  a table of the agreed shape of ``aws_billing_cost_daily`` (the CUR 2.0 columns of
  ``configs/aws/cost/cur2_columns.json``, maps as JSON text, plus ``usage_date`` and ``billing_period``)
  in a DuckDB file and builds its FOCUS rows with ``configs/focus/aws_focus_mapping.sql`` into a
  ``focus_cost`` table, as the ``focus.build`` step does (``Warehouse.replace_rows``).
* :func:`gcp_focus_rows` does the same for the demo GCP billing export (``src/core/demo/seed.py``):
  the cost table filled with ``configs/gcp/cost/cost_billing.yml``'s query, then
  ``configs/focus/gcp_focus_mapping.sql``.
* :data:`CRITERIA`: the validator's applicability criteria both providers support.
* :func:`strict_checks`: FOCUS 1.2 requirements the validator checks weakly or not at all (its
  allowed-values rules pass as soon as one row has an allowed value; its Dynamic rules never run).

``python -m tests.focus_checks [--keep DIR]`` builds the demo GCP and AWS FOCUS rows on DuckDB, runs the
strict checks and focus-validator 2.2.1 (with the errata of ``tests/focus_validator.py`` and as
shipped) and prints the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from src.core.demo.aws_cur_export import DeliveryStats, write_delivery
from src.core.engine import exports
from src.core.engine.duckdb_backend import DuckDBWarehouse
from src.core.engine.schema import Schema, SchemaField, load_schema_file
from src.core.processors.focus.build import focus_schema, mapping_sql, replaced_condition
from tests.focus_validator import Result, bundled_rules, validate
from tests.server import REPO

CONFIGS = REPO / "configs"
PROJECT = "convergence-local"
DATASET = "focusdemo_local"
AWS_TABLE = "aws_billing_cost_daily"
JSON_COLUMNS = ("Tags", "SkuPriceDetails", "x_Credits")
MAP_COLUMNS = ("product", "discount", "resource_tags", "cost_category")

# Applicability criteria ("the provider supports X") that hold for Google Cloud and for AWS.
CRITERIA = (
    "ACCOUNT_NAMING_SUPPORTED",  # billing account / payer account names
    "AVAILABILITY_ZONE_SUPPORTED",
    "BILLING_BASED_ON_PROVISIONED_RESOURCES_SUPPORTED",
    "CAPACITY_RESERVATION_SUPPORTED",  # Compute Engine reservations, EC2 capacity reservations
    "COMMITMENT_DISCOUNT_SUPPORTED",  # CUDs; reservations and Savings Plans
    "MULTIPLE_PRICING_CATEGORIES_SUPPORTED",  # on-demand, committed, spot
    "NEGOTIATED_PRICING_SUPPORTED",
    "PRICING_BILLING_CURRENCY_DIFFERENCES_SUPPORTED",  # GCP: USD prices, local-currency billing
    "PUBLIC_PRICE_LIST_SUPPORTED",
    "REGION_SUPPORTED",
    "RESOURCE_TYPE_ASSIGNMENT_SUPPORTED",
    "SUB_ACCOUNT_SUPPORTED",  # projects; linked accounts
    "TAGGING_SUPPORTED",  # labels and tags; resource tags
    "UNIT_PRICING_SUPPORTED",
    "USAGE_MEASUREMENT_SUPPORTED",
)
# Not claimed: MULTIPLE_SUB_ACCOUNT_TYPES (projects only; accounts only), MULTIPLE_BILLING_ACCOUNT_TYPES
# (not told apart in the tables), VIRTUAL_CURRENCY.

# With the bundled rules these columns' rules fail whatever the data (tests/FOCUS_1_2_RULES.md section 7).
DEFECTIVE_RULE_COLUMNS = frozenset({"InvoiceId", "CommitmentDiscountStatus", "CapacityReservationStatus"})


# --------------------------------------------------------------------------------------------------
# AWS: the demo CUR delivery -> aws_billing_cost_daily -> focus_cost
# --------------------------------------------------------------------------------------------------


def aws_table_schema() -> Schema:
    """The agreed shape of aws_billing_cost_daily (issue 14): the CUR 2.0 columns, maps as JSON text."""
    cur = load_schema_file(CONFIGS / "aws" / "cost" / "cur2_columns.json", root=CONFIGS)
    fields = [f.model_copy(update={"type": "STRING"}) if f.name in MAP_COLUMNS else f for f in cur]
    extra = [
        SchemaField(name="usage_date", type="DATE", mode="REQUIRED"),
        SchemaField(name="billing_period", type="STRING"),
        SchemaField(name="org_slug", type="STRING"),
        SchemaField(name="pipeline_logging_id", type="STRING"),
        SchemaField(name="loaded_at", type="TIMESTAMP"),
    ]
    return (*fields, *extra)


def _cur_select(files: list[Path], schema: Schema) -> str:
    items = []
    for field in schema:
        if field.name == "usage_date":
            items.append("CAST(line_item_usage_start_date AS DATE) AS usage_date")
        elif field.name == "billing_period":
            items.append("strftime(bill_billing_period_start_date, '%Y-%m') AS billing_period")
        elif field.name == "org_slug":
            items.append("'focusdemo' AS org_slug")
        elif field.name == "pipeline_logging_id":
            items.append("'focus-checks' AS pipeline_logging_id")
        elif field.name == "loaded_at":
            items.append("now() AS loaded_at")
        elif field.name in MAP_COLUMNS:
            items.append(
                f"CASE WHEN cardinality({field.name}) > 0 THEN to_json({field.name})::VARCHAR END AS {field.name}"
            )
        else:
            items.append(f"CAST({field.name} AS {field.duckdb_type()}) AS {field.name}")
    sources = ", ".join(f"'{f}'" for f in files)
    return f"SELECT {', '.join(items)} FROM read_parquet([{sources}], hive_partitioning = false)"


async def _build_aws(db: Path, files: list[Path], start: date, end: date) -> int:
    warehouse = DuckDBWarehouse(path=db, project=PROJECT)
    await warehouse.start()
    try:
        await warehouse.create_dataset(DATASET)
        source = warehouse.table(DATASET, AWS_TABLE)
        schema = aws_table_schema()
        await warehouse.create_table(source, schema)
        await warehouse.replace_rows(
            source, [f.name for f in schema], _cur_select(files, schema), replace_where="TRUE", params={}
        )
        focus = warehouse.table(DATASET, "focus_cost")
        fschema = focus_schema(CONFIGS)
        await warehouse.create_table(focus, fschema)
        mapping = mapping_sql(CONFIGS, "focus/aws_focus_mapping.sql").replace("{source_table}", str(source))
        result = await warehouse.replace_rows(
            focus,
            [f.name for f in fschema],
            mapping,
            replace_where=replaced_condition("billing_periods"),
            params={"start_date": start, "end_date": end, "focus_provider": "aws"},
        )
        return result.inserted
    finally:
        await warehouse.close()


def aws_focus_rows(
    work: Path, *, period: date, through_day: date, rows_per_day: int = 200
) -> tuple[Path, DeliveryStats]:
    """The DuckDB file (table ``focus_cost`` in dataset :data:`DATASET`) with the FOCUS rows of one
    demo CUR delivery, and the delivery's exact figures."""
    stats = write_delivery(work / "s3", period=period, through_day=through_day, execution_id="focus-checks",
                           rows_per_day=rows_per_day, invoice_final=True)  # fmt: skip
    db = work / "aws.duckdb"
    for stale in work.glob("aws.duckdb*"):
        stale.unlink()
    asyncio.run(_build_aws(db, [work / "s3" / key for key in stats.data_keys], stats.period, stats.through_day))
    return db, stats


async def _build_gcp(db: Path, start: date, end: date, rows_per_day: int) -> int:
    import yaml

    from src.core.demo.billing_export import export_table_name
    from src.core.demo.seed import seed_demo_billing
    from src.core.processors.gcp.bq_etl import schema_templates

    warehouse = DuckDBWarehouse(path=db, project=PROJECT)
    await warehouse.start()
    try:
        days = (end - start).days + 1
        await seed_demo_billing(warehouse, CONFIGS, end_date=end, days=days, rows_per_day=rows_per_day)
        config = yaml.safe_load((CONFIGS / "gcp/cost/cost_billing.yml").read_text())["steps"][0]["config"]
        snapshot = config["snapshot"]["query"].replace(
            "{billing_export_table}", f"{PROJECT}.billing_export.{export_table_name()}"
        )
        load = config["source"]["query"].replace("{snapshot}", f"({snapshot})")
        await warehouse.create_dataset(DATASET)
        cost = warehouse.table(DATASET, "billing_cost_daily")
        schema = schema_templates(CONFIGS)["billing_cost"]
        await warehouse.create_table(cost, schema)
        params: dict[str, Any] = {"start_date": start, "end_date": end, "org_slug": "focusdemo"}
        params.update(pipeline_logging_id="focus-checks", focus_provider="gcp")
        await warehouse.replace_rows(cost, [f.name for f in schema], load, replace_where="TRUE", params=params)
        focus = warehouse.table(DATASET, "focus_cost")
        fschema = focus_schema(CONFIGS)
        await warehouse.create_table(focus, fschema)
        mapping = mapping_sql(CONFIGS, "focus/gcp_focus_mapping.sql").replace("{source_table}", str(cost))
        result = await warehouse.replace_rows(
            focus, [f.name for f in fschema], mapping, replace_where=replaced_condition("days"), params=params
        )
        return result.inserted
    finally:
        await warehouse.close()


def gcp_focus_rows(work: Path, *, start: date, end: date, rows_per_day: int = 400) -> Path:
    """The DuckDB file (table ``focus_cost`` in dataset :data:`DATASET`) with the FOCUS rows of the
    demo GCP export's days ``start``..``end`` (late corrections included)."""
    db = work / "gcp.duckdb"
    for stale in work.glob("gcp.duckdb*"):
        stale.unlink()
    asyncio.run(_build_gcp(db, start, end, rows_per_day))
    return db


def write_parquet(db: Path, target: Path, schema: Schema | None = None) -> Path:
    """``focus_cost`` of a DuckDB file as Parquet, written as the export endpoint writes it."""
    schema = schema or focus_schema(CONFIGS)
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"ATTACH '{db}' AS w (READ_ONLY)")
        con.execute(exports.copy_sql(f"SELECT * FROM w.{DATASET}.focus_cost", target, "parquet", schema, JSON_COLUMNS))
    finally:
        con.close()
    return target


def combine(files: list[Path], target: Path) -> Path:
    con = duckdb.connect()
    try:
        listed = ", ".join(f"'{f}'" for f in files)
        con.execute(f"COPY (SELECT * FROM read_parquet([{listed}])) TO '{target}' (FORMAT parquet)")
    finally:
        con.close()
    return target


# --------------------------------------------------------------------------------------------------
# Strict checks
# --------------------------------------------------------------------------------------------------


def _allowed(rules: dict[str, Any], rule_id: str) -> list[str]:
    return [item["Value"] for item in rules["ModelRules"][rule_id]["ValidationCriteria"]["Requirement"]["Items"]]


def _quoted(values: list[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def strict_checks(parquet: Path) -> dict[str, int]:
    """Name -> number of violating rows, for FOCUS 1.2 requirements checked row by row."""
    rules = bundled_rules()
    pairs = [
        (p["Items"][0]["Value"], p["Items"][1]["Value"])
        for p in rules["ModelRules"]["ServiceSubcategory-C-004-M"]["ValidationCriteria"]["Requirement"]["Items"]
    ]
    pair_sql = ", ".join(f"({_quoted([s])}, {_quoted([c])})" for s, c in pairs)
    focus_columns = {r["Reference"] for r in rules["ModelRules"].values() if r["EntityType"] == "Column"}
    allowed = {rule: _quoted(_allowed(rules, rule)) for rule in (
        "ChargeCategory-C-003-M", "ChargeFrequency-C-003-M", "ServiceCategory-C-003-M", "PricingCategory-C-007-M",
    )}  # fmt: skip
    checks = {
        "ChargeCategory is an allowed value": f"ChargeCategory NOT IN ({allowed['ChargeCategory-C-003-M']})",
        "ChargeClass is NULL or Correction": "ChargeClass <> 'Correction'",
        "ChargeFrequency is an allowed value": f"ChargeFrequency NOT IN ({allowed['ChargeFrequency-C-003-M']})",
        "ServiceCategory is an allowed value": f"ServiceCategory NOT IN ({allowed['ServiceCategory-C-003-M']})",
        "ServiceSubcategory belongs to its ServiceCategory": (
            f"(ServiceSubcategory, ServiceCategory) NOT IN (SELECT * FROM (VALUES {pair_sql}))"
        ),
        "PricingCategory is an allowed value or NULL": f"PricingCategory NOT IN ({allowed['PricingCategory-C-007-M']})",
        "CommitmentDiscountCategory is Spend / Usage or NULL": "CommitmentDiscountCategory NOT IN ('Spend', 'Usage')",
        "CommitmentDiscountStatus is Used / Unused or NULL": "CommitmentDiscountStatus NOT IN ('Used', 'Unused')",
        "Category and Type exactly when CommitmentDiscountId": (
            "(CommitmentDiscountId IS NULL) <> (CommitmentDiscountCategory IS NULL)"
            " OR (CommitmentDiscountId IS NULL) <> (CommitmentDiscountType IS NULL)"
        ),
        "usage rows with a commitment are Committed and Used": (
            "CommitmentDiscountId IS NOT NULL AND ChargeCategory = 'Usage'"
            " AND (PricingCategory <> 'Committed' OR CommitmentDiscountStatus IS DISTINCT FROM 'Used')"
        ),
        "Usage / Purchase rows are priced": (
            "ChargeCategory IN ('Usage', 'Purchase') AND ChargeClass IS NULL AND (SkuId IS NULL OR SkuPriceId IS NULL"
            " OR PricingQuantity IS NULL OR PricingUnit IS NULL OR ListUnitPrice IS NULL"
            " OR ContractedUnitPrice IS NULL OR PricingCategory IS NULL)"
        ),
        "Usage rows have a consumed quantity": (
            "ChargeCategory = 'Usage' AND ChargeClass IS NULL AND (ConsumedQuantity IS NULL OR ConsumedUnit IS NULL)"
        ),
        "other rows have none": "ChargeCategory <> 'Usage' AND ConsumedQuantity IS NOT NULL",
        "Tax rows carry no SKU, price or quantity": (
            "ChargeCategory = 'Tax' AND (SkuId IS NOT NULL OR SkuPriceId IS NOT NULL OR PricingQuantity IS NOT NULL"
            " OR ListUnitPrice IS NOT NULL OR PricingCategory IS NOT NULL)"
        ),
        "Purchase rows have EffectiveCost 0": "ChargeCategory = 'Purchase' AND EffectiveCost <> 0",
        "periods: start before end": (
            "NOT (BillingPeriodStart < BillingPeriodEnd) OR NOT (ChargePeriodStart < ChargePeriodEnd)"
        ),
        "GCP billing period: one US Pacific month, end exclusive": (
            "x_Provider = 'gcp' AND (BillingPeriodEnd <> (timezone('America/Los_Angeles', BillingPeriodStart)"
            " + INTERVAL 1 MONTH) AT TIME ZONE 'America/Los_Angeles'"
            " OR date_part('day', timezone('America/Los_Angeles', BillingPeriodStart)) <> 1)"
        ),
        "AWS billing period: one UTC month, end exclusive": (
            "x_Provider = 'aws' AND (BillingPeriodEnd <> BillingPeriodStart + INTERVAL 1 MONTH"
            " OR date_part('day', BillingPeriodStart) <> 1)"
        ),
        "ListCost >= ContractedCost >= EffectiveCost on Usage rows": (
            "ChargeCategory = 'Usage' AND (ContractedCost > ListCost OR EffectiveCost > ContractedCost)"
        ),
        "credits and adjustments unrelated to other charges: four equal costs": (
            "ChargeCategory IN ('Credit', 'Adjustment') AND x_LineItemType IS DISTINCT FROM 'SavingsPlanNegation'"
            " AND (ListCost <> BilledCost OR ContractedCost <> BilledCost OR EffectiveCost <> BilledCost)"
        ),
        "GCP: EffectiveCost = BilledCost + x_CreditAmount": (
            "x_Provider = 'gcp' AND EffectiveCost <> BilledCost + x_CreditAmount"
        ),
        "Tags is a JSON object of scalar values": (
            "Tags IS NOT NULL AND (json_type(Tags::JSON) <> 'OBJECT' OR EXISTS (SELECT 1 FROM"
            " (SELECT unnest(map_values(json_transform(Tags, '\"MAP(VARCHAR, JSON)\"'))) AS v) AS t"
            " WHERE json_type(t.v) IN ('OBJECT', 'ARRAY')))"
        ),
        "strings are ASCII (the validator's String format)": (
            "regexp_matches(concat_ws('|', ChargeDescription, ServiceName, SubAccountName, BillingAccountName,"
            " PublisherName, RegionName, Tags), '[^\\x00-\\x7F]')"
        ),
    }
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        columns = [d[0] for d in con.execute(f"SELECT * FROM read_parquet('{parquet}') LIMIT 0").description or []]
        found = {
            name: int(
                (con.execute(f"SELECT COUNT(*) FROM read_parquet('{parquet}') WHERE {where}").fetchone() or (0,))[0]
            )
            for name, where in checks.items()
        }
    finally:
        con.close()
    found["custom columns are x_-prefixed"] = len(
        [c for c in columns if c not in focus_columns and not c.startswith("x_")]
    )
    return found


def raw_failures_explained(raw: Result) -> list[str]:
    """Rules the bundled (unpatched) rules fail beyond the defective ones the errata correct."""
    return sorted(r for r in raw.failed_ids if r.split("-")[0] not in DEFECTIVE_RULE_COLUMNS)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.focus_checks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, default=None, help="write the files here and keep them")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="focus-checks-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        # GCP: four days that cross a month (invoice months cross it too: a Correction row, credits, tax).
        gcp = write_parquet(gcp_focus_rows(work, start=date(2025, 5, 30), end=date(2025, 6, 2)), work / "gcp.parquet")
        db, stats = aws_focus_rows(work, period=date(2026, 11, 1), through_day=date(2026, 11, 6))
        aws = write_parquet(db, work / "aws.parquet")
        both = combine([gcp, aws], work / "focus.parquet")
        print(f"GCP demo export 2025-05-30..2025-06-02: {gcp}")
        print(f"AWS demo delivery: {stats.rows} line items, {stats.billing_period} to {stats.through_day}: {aws}")
        problems = {name: n for name, n in strict_checks(both).items() if n}
        print("strict checks:", "all hold" if not problems else json.dumps(problems, indent=1))
        result = validate(both, criteria=CRITERIA)
        print("focus-validator 2.2.1 (errata):", result.describe())
        raw = validate(both, criteria=CRITERIA, errata=False)
        print("focus-validator 2.2.1 (as shipped):", raw.summary_line, sorted(raw.failed_ids))
    return 0 if not problems and result.ok and not raw_failures_explained(raw) else 1


if __name__ == "__main__":
    sys.exit(main())
