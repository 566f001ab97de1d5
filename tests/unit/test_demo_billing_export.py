"""Unit tests of the deterministic GCP billing export demo generator."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from src.core.demo.billing_export import (
    DEMO_BILLING_ACCOUNT_ID,
    GeneratorStats,
    export_table_name,
    is_correction_day,
    iter_rows,
    rows_in_window,
    write_ndjson,
)

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "configs" / "gcp" / "cost" / "billing_export_schema.json"
END = date(2025, 2, 2)  # window 2025-01-30 .. 2025-02-02: crosses a month end, contains one correction day
DAYS = 4
ROWS = 300
SEED = 42
TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
CREDIT_TYPES = {
    "SUSTAINED_USAGE_DISCOUNT",
    "COMMITTED_USAGE_DISCOUNT",
    "COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE",
    "FREE_TIER",
    "PROMOTION",
    "DISCOUNT",
}

Row = dict[str, Any]


def _generate(path: Path, **overrides: Any) -> tuple[GeneratorStats, list[str]]:
    args: dict[str, Any] = {"end_date": END, "days": DAYS, "rows_per_day": ROWS, "seed": SEED, **overrides}
    stats = write_ndjson(path, **args)
    return stats, path.read_text(encoding="utf-8").splitlines(keepends=True)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[GeneratorStats, list[str], list[Row]]:
    stats, lines = _generate(tmp_path_factory.mktemp("demo") / "export.ndjson")
    return stats, lines, [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def rows(generated: tuple[GeneratorStats, list[str], list[Row]]) -> list[Row]:
    return generated[2]


@pytest.fixture(scope="module")
def schema() -> list[dict[str, Any]]:
    loaded: list[dict[str, Any]] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    return loaded


def _day(row: Row) -> date:
    return date.fromisoformat(row["usage_start_time"][:10])


def _parse_ts(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")


def _first_export_times(rows: list[Row]) -> dict[date, str]:
    first: dict[date, str] = {}
    for row in rows:
        day = _day(row)
        first[day] = min(first.get(day, row["export_time"]), row["export_time"])
    return first


def _late(rows: list[Row]) -> list[Row]:
    first = _first_export_times(rows)
    return [row for row in rows if row["export_time"] != first[_day(row)]]


# ------------------------------------------------------------------------------------------ identity


def test_export_table_name_uses_the_documented_account() -> None:
    assert DEMO_BILLING_ACCOUNT_ID == "01A2B3-C4D5E6-F7A8B9"
    assert export_table_name() == "gcp_billing_export_v1_01A2B3_C4D5E6_F7A8B9"
    assert export_table_name("012345-6789AB-CDEF01") == "gcp_billing_export_v1_012345_6789AB_CDEF01"


def test_invalid_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="days"):
        write_ndjson(tmp_path / "x.ndjson", end_date=END, days=0)
    with pytest.raises(ValueError, match="rows_per_day"):
        list(iter_rows(end_date=END, days=1, rows_per_day=5, seed=1))


# ------------------------------------------------------------------------------------------ determinism


def test_same_inputs_give_byte_identical_files(tmp_path: Path) -> None:
    _generate(tmp_path / "a.ndjson")
    _generate(tmp_path / "b.ndjson")
    assert (tmp_path / "a.ndjson").read_bytes() == (tmp_path / "b.ndjson").read_bytes()


def test_different_seed_gives_different_data(tmp_path: Path) -> None:
    _generate(tmp_path / "a.ndjson")
    _generate(tmp_path / "b.ndjson", seed=SEED + 1)
    assert (tmp_path / "a.ndjson").read_bytes() != (tmp_path / "b.ndjson").read_bytes()


def test_iter_rows_yields_the_written_rows(rows: list[Row]) -> None:
    assert list(iter_rows(end_date=END, days=DAYS, rows_per_day=ROWS, seed=SEED)) == rows


def test_overlapping_windows_agree_on_shared_days(rows: list[Row]) -> None:
    shared = date(2025, 2, 1)
    single = list(iter_rows(end_date=shared, days=1, rows_per_day=ROWS, seed=SEED))
    assert single == [row for row in rows if _day(row) == shared]


# ------------------------------------------------------------------------------------------ schema


def _check_value(spec: dict[str, Any], value: Any, where: str) -> None:
    if spec["mode"] == "REPEATED":
        assert isinstance(value, list), where
        for item in value:
            _check_scalar_or_record(spec, item, where)
    elif value is not None:
        _check_scalar_or_record(spec, value, where)


def _check_scalar_or_record(spec: dict[str, Any], value: Any, where: str) -> None:
    kind = spec["type"]
    if kind == "RECORD":
        assert isinstance(value, dict), where
        assert list(value) == [f["name"] for f in spec["fields"]], where
        for sub in spec["fields"]:
            _check_value(sub, value[sub["name"]], f"{where}.{sub['name']}")
    elif kind == "FLOAT":
        assert isinstance(value, float), where
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), where
    elif kind == "TIMESTAMP":
        assert isinstance(value, str), where
        assert TS.match(value), where
    else:
        assert kind == "STRING", where
        assert isinstance(value, str), where


def test_every_row_has_exactly_the_schema_columns_and_nested_fields(
    rows: list[Row], schema: list[dict[str, Any]]
) -> None:
    names = [column["name"] for column in schema]
    for row in rows:
        assert list(row) == names
        for column in schema:
            _check_value(column, row[column["name"]], column["name"])


def test_lines_are_compact_json_with_fixed_currency(
    generated: tuple[GeneratorStats, list[str], list[Row]],
) -> None:
    _stats, lines, rows = generated
    for line, row in zip(lines, rows, strict=True):
        assert line == json.dumps(row, separators=(",", ":")) + "\n"
        assert row["currency"] == "USD"
        assert row["currency_conversion_rate"] == 1.0


# ------------------------------------------------------------------------------------------ days


def test_each_usage_day_has_rows_per_day_rows_plus_its_late_rows(rows: list[Row]) -> None:
    per_day = Counter(_day(row) for row in rows)
    late_per_day = Counter(_day(row) for row in _late(rows))
    window = [END - timedelta(days=n) for n in range(DAYS)]
    assert set(per_day) == set(window)
    for day in window:
        assert per_day[day] - late_per_day[day] == ROWS
        assert (late_per_day[day] > 0) == is_correction_day(day, SEED)
    assert len(rows) == rows_in_window(end_date=END, days=DAYS, rows_per_day=ROWS, seed=SEED)


def test_usage_is_hourly_and_exported_after_the_day(rows: list[Row]) -> None:
    for row in rows:
        start, end = _parse_ts(row["usage_start_time"]), _parse_ts(row["usage_end_time"])
        assert end - start == timedelta(hours=1)
        assert start.minute == start.second == start.microsecond == 0
        assert _parse_ts(row["export_time"]) > datetime.combine(_day(row) + timedelta(days=1), datetime.min.time())


# ------------------------------------------------------------------------------------------ money


def test_regular_rows_have_non_negative_rounded_costs_and_bounded_credits(rows: list[Row]) -> None:
    regular = [row for row in rows if row["cost_type"] == "regular"]
    for row in regular:
        cost = row["cost"]
        assert cost >= 0
        assert round(cost, 6) == cost
        assert row["cost_at_list"] >= cost
        assert row["adjustment_info"] is None
        for credit in row["credits"]:
            assert credit["amount"] < 0
            assert round(credit["amount"], 6) == credit["amount"]
            assert credit["type"] in CREDIT_TYPES
            assert credit["name"]
            assert credit["full_name"]
            assert credit["id"]
        assert abs(sum(credit["amount"] for credit in row["credits"])) <= cost
    credited = sum(1 for row in regular if row["credits"]) / len(regular)
    multi = sum(1 for row in regular if len(row["credits"]) >= 2) / len(regular)
    assert 0.2 < credited < 0.4
    assert 0.02 < multi < 0.1
    assert max(len(row["credits"]) for row in regular) <= 3


def test_costs_are_heavy_tailed(rows: list[Row]) -> None:
    costs = sorted(row["cost"] for row in rows if row["cost_type"] == "regular")
    median = costs[len(costs) // 2]
    assert costs[-1] > 50 * median


def test_tax_adjustment_and_rounding_rows_exist(rows: list[Row]) -> None:
    by_type: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_type[row["cost_type"]].append(row)
    assert set(by_type) == {"regular", "tax", "adjustment", "rounding_error"}
    assert all(row["cost"] > 0 and row["adjustment_info"] is None for row in by_type["tax"])
    assert all(0 < abs(row["cost"]) < 0.01 and row["adjustment_info"] is None for row in by_type["rounding_error"])
    for row in by_type["adjustment"]:
        info = row["adjustment_info"]
        assert info is not None
        assert all(info[key] for key in ("id", "description", "mode", "type"))
    assert any(row["cost"] < 0 for row in by_type["adjustment"])


def test_stats_totals_are_the_sums_of_the_file(generated: tuple[GeneratorStats, list[str], list[Row]]) -> None:
    stats, lines, _rows = generated
    exact = [json.loads(line, parse_float=Decimal) for line in lines]
    cost = sum((row["cost"] for row in exact), Decimal(0))
    credits = sum((credit["amount"] for row in exact for credit in row["credits"]), Decimal(0))
    assert stats.rows == len(lines)
    assert (stats.days, stats.first_day, stats.last_day) == (DAYS, END - timedelta(days=DAYS - 1), END)
    assert stats.total_cost == float(cost)
    assert stats.total_credits == float(credits)
    assert stats.total_credits < 0 < stats.total_cost


# ------------------------------------------------------------------------------------------ invoices, late data


def test_invoice_months_cross_calendar_months(rows: list[Row]) -> None:
    pairs = {(row["usage_start_time"][:7].replace("-", ""), row["invoice"]["month"]) for row in rows}
    assert ("202501", "202502") in pairs  # last days of January billed on February's invoice
    assert ("202502", "202501") in pairs  # first days of February billed on January's invoice
    for row in rows:
        if row["invoice"]["month"] != _day(row).strftime("%Y%m"):
            assert _day(row).day <= 2 or (_day(row) + timedelta(days=2)).month != _day(row).month


def test_late_corrections_have_a_later_export_and_vanish_without_include_late(
    tmp_path: Path, generated: tuple[GeneratorStats, list[str], list[Row]]
) -> None:
    stats, lines, rows = generated
    first = _first_export_times(rows)
    late = _late(rows)
    assert late
    assert stats.correction_rows == len(late)
    assert {row["cost_type"] for row in late} == {"regular", "adjustment"}
    assert all(row["cost"] < 0 for row in late if row["cost_type"] == "adjustment")
    for row in late:
        delay = _parse_ts(row["export_time"]) - _parse_ts(first[_day(row)])
        assert timedelta(days=1) <= delay < timedelta(days=4)

    before_stats, before_lines = _generate(tmp_path / "before.ndjson", include_late=False)
    kept = [line for line, row in zip(lines, rows, strict=True) if row["export_time"] == first[_day(row)]]
    assert before_lines == kept
    assert before_stats.correction_rows == 0
    assert before_stats.rows == DAYS * ROWS


# ------------------------------------------------------------------------------------------ breadth


def test_catalog_breadth(rows: list[Row]) -> None:
    assert len({row["billing_account_id"] for row in rows}) >= 3
    assert DEMO_BILLING_ACCOUNT_ID in {row["billing_account_id"] for row in rows}
    assert len({row["project"]["id"] for row in rows}) >= 6
    assert len({row["service"]["id"] for row in rows}) >= 8
    assert len({row["location"]["region"] for row in rows} - {None}) >= 5
    services = {row["service"]["id"]: row["service"]["description"] for row in rows}
    assert services["6F81-5844-456A"] == "Compute Engine"
    assert services["24E6-581D-38E5"] == "BigQuery"


def test_labels_tags_and_sellers(rows: list[Row]) -> None:
    regular = [row for row in rows if row["cost_type"] == "regular"]
    assert {len(row["labels"]) for row in regular} == {0, 1, 2, 3}
    assert {len(row["tags"]) for row in regular} == {0, 1, 2}
    compute = [row for row in regular if "Instance" in row["sku"]["description"]]
    assert compute
    assert all(
        "compute.googleapis.com/machine_spec" in {label["key"] for label in row["system_labels"]} for row in compute
    )
    resold = [row for row in rows if row["transaction_type"] == "THIRD_PARTY_RESELLER"]
    assert resold
    assert all(row["seller_name"] and row["invoice"]["publisher_type"] == "Third-party" for row in resold)
    google = [row for row in rows if row["transaction_type"] == "GOOGLE"]
    assert all(row["seller_name"] is None and row["invoice"]["publisher_type"] == "Google" for row in google)
