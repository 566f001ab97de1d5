"""Unit tests of the deterministic AWS CUR 2.0 (Data Exports) demo generator."""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from src.core.demo.aws_cur_export import (
    CUR2_COLUMNS,
    CURRENCY,
    DEMO_BUCKET,
    DEMO_EXPORT_NAME,
    DUCKDB_TYPES,
    DeliveryStats,
    data_dir_key,
    demo_deliveries,
    is_restated,
    manifest_key,
    write_delivery,
)

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "aws" / "cost" / "cur2_columns.json"
PERIOD = date(2025, 3, 1)
FIRST, SECOND = date(2025, 3, 10), date(2025, 3, 17)  # second delivery covers 7 more days
ROWS = 150
SEED = 42
TYPES = {
    "Usage",
    "DiscountedUsage",
    "SavingsPlanCoveredUsage",
    "SavingsPlanNegation",
    "SavingsPlanRecurringFee",
    "EdpDiscount",
    "Credit",
    "Refund",
    "Tax",
    "RIFee",
    "Fee",
}
BQ_TO_AWS = {"STRING": "string", "FLOAT": "double", "TIMESTAMP": "timestamp"}


def _write(root: Path, through: date, execution_id: str, **overrides: Any) -> DeliveryStats:
    args: dict[str, Any] = {"rows_per_day": ROWS, "seed": SEED, **overrides}
    return write_delivery(root, period=PERIOD, through_day=through, execution_id=execution_id, **args)


def _reader(stats: DeliveryStats, root: Path) -> str:
    files = ", ".join(f"'{root / key}'" for key in stats.data_keys)
    if stats.fmt == "parquet":
        return f"read_parquet([{files}], hive_partitioning = false)"
    if stats.fmt == "csv":
        return f"read_csv([{files}], header = true, hive_partitioning = false, all_varchar = true)"
    return f"read_json([{files}], format = 'newline_delimited', hive_partitioning = false)"


def _read_totals(stats: DeliveryStats, root: Path) -> dict[tuple[date, str], tuple[int, Decimal, float]]:
    """Rows, exact decimal sum and double sum of line_item_unblended_cost per (usage day, currency)."""
    day = (
        "CAST(line_item_usage_start_date AS DATE)"
        if stats.fmt == "parquet"
        else "CAST(left(CAST(line_item_usage_start_date AS VARCHAR), 10) AS DATE)"
    )
    cost = "CAST(line_item_unblended_cost AS DOUBLE)"
    rows = duckdb.sql(
        f"SELECT {day} AS d, line_item_currency_code, count(*), sum(CAST({cost} AS DECIMAL(18, 6))), sum({cost}) "
        f"FROM {_reader(stats, root)} GROUP BY ALL"
    ).fetchall()
    return {(d, cur): (n, Decimal(exact), float(approx)) for d, cur, n, exact, approx in rows}


def _rows_of_day(stats: DeliveryStats, root: Path, day: date) -> list[tuple[Any, ...]]:
    return duckdb.sql(
        f"SELECT * FROM {_reader(stats, root)} WHERE CAST(line_item_usage_start_date AS DATE) = DATE '{day}' "
        "ORDER BY identity_line_item_id"
    ).fetchall()


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def overwrite(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """First delivery (3 parts), its data and manifest; then the second delivery over it (2 parts)."""
    root = tmp_path_factory.mktemp("overwrite")
    first = _write(root, FIRST, "exec-0001", max_rows_per_file=600)
    first_manifest = (root / first.manifest_key).read_bytes()
    first_rows = {d: _rows_of_day(first, root, d) for d in (FIRST - timedelta(days=i) for i in range(10))}
    first_read = _read_totals(first, root)
    second = _write(root, SECOND, "exec-0002", max_rows_per_file=2000)
    return {
        "root": root,
        "first": first,
        "first_manifest": first_manifest,
        "first_rows": first_rows,
        "first_read": first_read,
        "second": second,
    }


def test_first_delivery_totals_equal_what_duckdb_reads(overwrite: dict[str, Any]) -> None:
    first: DeliveryStats = overwrite["first"]
    read = overwrite["first_read"]
    assert len(first.data_keys) == 3
    assert set(read) == set(first.totals) == {(PERIOD + timedelta(days=i), CURRENCY) for i in range(10)}
    for key, totals in first.totals.items():
        rows, exact, approx = read[key]
        assert rows == totals.rows
        assert exact == totals.cost
        assert abs(approx - float(totals.cost)) < 1e-9
    assert first.rows == sum(t.rows for t in first.totals.values())
    assert first.total_cost == sum((t.cost for t in first.totals.values()), Decimal(0))


def test_second_delivery_replaces_the_first_completely(overwrite: dict[str, Any]) -> None:
    root: Path = overwrite["root"]
    first: DeliveryStats = overwrite["first"]
    second: DeliveryStats = overwrite["second"]
    assert second.manifest_key == first.manifest_key
    data_dir = root / data_dir_key(PERIOD)
    # the stale third part of the first delivery is gone; the folder holds exactly the second's files
    assert _files_under(data_dir) == sorted(Path(k).name for k in second.data_keys)
    assert len(second.data_keys) == 2
    manifest = json.loads((root / second.manifest_key).read_text(encoding="utf-8"))
    assert manifest["executionId"] == "exec-0002"
    assert manifest["dataFiles"] == [f"s3://{DEMO_BUCKET}/{k}" for k in second.data_keys]
    read = _read_totals(second, root)
    assert set(read) == set(second.totals)
    assert max(d for d, _ in read) == SECOND
    for key, totals in second.totals.items():
        assert read[key][:2] == (totals.rows, totals.cost)


def test_second_delivery_restates_earlier_days(overwrite: dict[str, Any]) -> None:
    first: DeliveryStats = overwrite["first"]
    second: DeliveryStats = overwrite["second"]
    root: Path = overwrite["root"]
    restated = [
        d
        for d in (PERIOD + timedelta(days=i) for i in range(10))
        if is_restated(d, SECOND, SEED) and not is_restated(d, FIRST, SEED)
    ]
    assert FIRST in restated  # a correction batch arrives at most 4 days late
    assert set(restated) <= set(second.restated_days) and not set(restated) & set(first.restated_days)
    for day in restated:
        before, after = first.totals[(day, CURRENCY)], second.totals[(day, CURRENCY)]
        assert after.rows == before.rows + 1  # one refund line
        assert after.cost != before.cost
        assert _rows_of_day(second, root, day) != overwrite["first_rows"][day]
    # day 1 carries the month-to-date tax and support fee: restated by every later delivery
    assert second.totals[(PERIOD, CURRENCY)].cost != first.totals[(PERIOD, CURRENCY)].cost
    untouched = [d for d in overwrite["first_rows"] if d not in restated and d != PERIOD]
    assert untouched
    for day in untouched:
        assert second.totals[(day, CURRENCY)] == first.totals[(day, CURRENCY)]
        assert _rows_of_day(second, root, day) == overwrite["first_rows"][day]


def test_same_arguments_give_identical_manifest_and_data(overwrite: dict[str, Any], tmp_path: Path) -> None:
    again = _write(tmp_path, FIRST, "exec-0001", max_rows_per_file=600)
    first: DeliveryStats = overwrite["first"]
    assert (tmp_path / again.manifest_key).read_bytes() == overwrite["first_manifest"]
    assert again.data_keys == first.data_keys
    assert again.totals == first.totals
    for day, rows in overwrite["first_rows"].items():
        assert _rows_of_day(again, tmp_path, day) == rows
    other = _write(tmp_path / "other-seed", FIRST, "exec-0001", seed=SEED + 1)
    assert other.totals != first.totals


def test_manifest_lists_the_files_and_their_columns(overwrite: dict[str, Any]) -> None:
    first: DeliveryStats = overwrite["first"]
    manifest = json.loads(overwrite["first_manifest"])
    assert list(manifest) == [
        "executionId",
        "exportArn",
        "billingPeriod",
        "columns",
        "dataFiles",
        "additionalOutputFiles",
    ]
    assert manifest["executionId"] == "exec-0001"
    assert re.fullmatch(r"arn:aws:bcm-data-exports:us-east-1:\d{12}:export/[-a-zA-Z0-9/:_]+", manifest["exportArn"])
    assert manifest["billingPeriod"] == {"start": "2025-03-01T00:00:00.000Z", "end": "2025-04-01T00:00:00.000Z"}
    assert manifest["dataFiles"] == [f"s3://{DEMO_BUCKET}/{k}" for k in first.data_keys]
    assert manifest["additionalOutputFiles"] == []
    assert (
        first.manifest_key
        == f"cur2/{DEMO_EXPORT_NAME}/metadata/BILLING_PERIOD=2025-03/{DEMO_EXPORT_NAME}-Manifest.json"
    )
    for i, key in enumerate(first.data_keys, start=1):
        assert key == f"cur2/{DEMO_EXPORT_NAME}/data/BILLING_PERIOD=2025-03/{DEMO_EXPORT_NAME}-{i:05d}.snappy.parquet"
    columns = [(c["name"], c["type"]) for c in manifest["columns"]]
    assert columns == list(CUR2_COLUMNS)
    root: Path = overwrite["root"]
    described = duckdb.sql(
        f"DESCRIBE SELECT * FROM read_parquet('{root / overwrite['second'].data_keys[0]}', hive_partitioning = false)"
    ).fetchall()
    assert [(name, kind) for name, kind, *_ in described] == [(n, DUCKDB_TYPES[t]) for n, t in columns]


def test_line_items_have_aws_shapes_and_signs(overwrite: dict[str, Any]) -> None:
    second: DeliveryStats = overwrite["second"]
    source = _reader(second, overwrite["root"])
    by_type = {
        t: (n, lo, hi)
        for t, n, lo, hi in duckdb.sql(
            f"SELECT line_item_line_item_type, count(*), min(line_item_unblended_cost), max(line_item_unblended_cost) "
            f"FROM {source} GROUP BY ALL"
        ).fetchall()
    }
    assert set(by_type) == TYPES
    for positive in ("Usage", "SavingsPlanCoveredUsage", "SavingsPlanRecurringFee", "Tax", "RIFee", "Fee"):
        assert by_type[positive][1] >= 0
    for negative in ("SavingsPlanNegation", "EdpDiscount", "Credit", "Refund"):
        assert by_type[negative][2] <= 0 and by_type[negative][1] < 0
    assert by_type["DiscountedUsage"][1:] == (0.0, 0.0)
    checks = duckdb.sql(
        f"""
        SELECT
          sum(CASE WHEN line_item_line_item_type IN ('SavingsPlanCoveredUsage', 'SavingsPlanNegation')
                   THEN CAST(line_item_unblended_cost AS DECIMAL(18, 6)) END),
          count(DISTINCT line_item_usage_account_id), any_value(bill_payer_account_id),
          count(DISTINCT bill_billing_entity),
          count(*) FILTER (WHERE cardinality(resource_tags) > 0 AND resource_tags['user_team'] IS NULL),
          count(*) FILTER (WHERE line_item_line_item_type = 'SavingsPlanCoveredUsage'
                           AND savings_plan_savings_plan_effective_cost >= line_item_unblended_cost),
          count(*) FILTER (WHERE line_item_line_item_type = 'DiscountedUsage'
                           AND reservation_reservation_a_r_n IS NULL),
          count(*) FILTER (WHERE line_item_line_item_type = 'EdpDiscount'
                           AND discount['edp_discount'] <> line_item_unblended_cost),
          count(DISTINCT identity_line_item_id) = count(*),
          count(*) FILTER (WHERE bill_invoice_id <> ''),
          count(*) FILTER (WHERE CAST(line_item_unblended_cost AS DECIMAL(18, 6)) <> line_item_unblended_cost),
          count(*) FILTER (WHERE line_item_usage_start_date < bill_billing_period_start_date
                           OR line_item_usage_end_date > bill_billing_period_end_date)
        FROM {source}
        """
    ).fetchone()
    assert checks is not None
    (
        sp_net,
        accounts,
        payer,
        entities,
        untagged_team,
        sp_dear,
        du_no_arn,
        edp_bad,
        ids_unique,
        invoiced,
        over6,
        outside,
    ) = checks
    assert sp_net == 0  # covered usage and its negation cancel
    assert (accounts, payer, entities) == (3, "210987654321", 2)
    assert (untagged_team, sp_dear, du_no_arn, edp_bad, invoiced, over6, outside) == (0, 0, 0, 0, 0, 0, 0)
    assert ids_unique


def test_create_new_keeps_every_execution(tmp_path: Path) -> None:
    first = _write(tmp_path, FIRST, "11111111-aaaa", layout="create_new")
    second = _write(tmp_path, SECOND, "22222222-bbbb", layout="create_new")
    assert first.manifest_key == manifest_key(PERIOD, layout="create_new", execution_id="11111111-aaaa")
    assert "/BILLING_PERIOD=2025-03/22222222-bbbb/" in second.manifest_key
    for stats in (first, second):
        assert all(f"/BILLING_PERIOD=2025-03/{stats.execution_id}/" in key for key in stats.data_keys)
        manifest = json.loads((tmp_path / stats.manifest_key).read_text(encoding="utf-8"))
        assert manifest["executionId"] == stats.execution_id
        assert manifest["dataFiles"] == [f"s3://{DEMO_BUCKET}/{k}" for k in stats.data_keys]
        read = _read_totals(stats, tmp_path)
        assert {k: v[:2] for k, v in read.items()} == {k: (t.rows, t.cost) for k, t in stats.totals.items()}
    on_disk = _files_under(tmp_path)
    assert on_disk == sorted([*first.data_keys, first.manifest_key, *second.data_keys, second.manifest_key])


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_text_formats_carry_the_same_rows(fmt: str, tmp_path: Path, overwrite: dict[str, Any]) -> None:
    stats = _write(tmp_path, FIRST, "exec-0001", fmt=fmt)
    assert stats.totals == overwrite["first"].totals
    assert all(k.endswith(".csv.gz" if fmt == "csv" else ".jsonl.gz") for k in stats.data_keys)
    read = _read_totals(stats, tmp_path)
    for key, totals in stats.totals.items():
        rows, exact, approx = read[key]
        assert (rows, exact) == (totals.rows, totals.cost)
        assert abs(approx - float(totals.cost)) < 1e-9
    header = duckdb.sql(f"SELECT * FROM {_reader(stats, tmp_path)} LIMIT 1").columns
    assert header == [name for name, _ in CUR2_COLUMNS]
    text = "resource_tags" if fmt == "csv" else "CAST(to_json(resource_tags) AS VARCHAR)"
    tags = duckdb.sql(
        f"SELECT {text} FROM {_reader(stats, tmp_path)} "
        f"WHERE line_item_line_item_type = 'Usage' AND {text} LIKE '%user_team%' LIMIT 1"
    ).fetchone()
    assert tags is not None and json.loads(tags[0])["user_team"]


def test_final_period_has_invoice_ids(tmp_path: Path) -> None:
    stats = _write(tmp_path, date(2025, 3, 31), "final", rows_per_day=100, invoice_final=True)
    invoices = duckdb.sql(
        f"SELECT bill_billing_entity, count(DISTINCT bill_invoice_id), min(bill_invoice_id) "
        f"FROM {_reader(stats, tmp_path)} GROUP BY ALL ORDER BY 1"
    ).fetchall()
    assert [(entity, n) for entity, n, _ in invoices] == [("AWS", 1), ("AWS Marketplace", 1)]
    assert all(re.fullmatch(r"\d{10}", inv) for *_, inv in invoices)
    assert len(stats.totals) == 31


def test_loader_column_config_matches_the_export() -> None:
    columns = json.loads(CONFIG.read_text(encoding="utf-8"))
    aws = dict(CUR2_COLUMNS)
    names = [c["name"] for c in columns]
    assert len(names) == len(set(names))
    for column in columns:
        assert set(column) == {"name", "type", "mode", "description"} and column["mode"] == "NULLABLE"
        expected = aws[column["name"]]
        if column["type"] == "JSON":
            assert expected.startswith("map<")
        else:
            assert BQ_TO_AWS[column["type"]] == expected
    for required in (
        "line_item_unblended_cost",
        "line_item_usage_start_date",
        "line_item_currency_code",
        "bill_billing_period_start_date",
        "line_item_line_item_type",
        "resource_tags",
    ):
        assert required in names


def test_demo_deliveries_and_argument_checks(tmp_path: Path) -> None:
    first, second = demo_deliveries(date(2025, 3, 20))
    assert (first.period, first.through_day, second.through_day) == (PERIOD, date(2025, 3, 15), date(2025, 3, 20))
    assert first.execution_id != second.execution_id and first == demo_deliveries(date(2025, 3, 20))[0]
    early = demo_deliveries(date(2025, 3, 2))[0]
    assert early.through_day == PERIOD
    on_the_first = demo_deliveries(PERIOD)
    assert on_the_first[0].through_day == on_the_first[1].through_day == PERIOD
    assert on_the_first[0].execution_id != on_the_first[1].execution_id  # two executions, two folders
    with pytest.raises(ValueError, match="not in billing period"):
        _write(tmp_path, date(2025, 4, 1), "x")
    with pytest.raises(ValueError, match="rows_per_day"):
        _write(tmp_path, FIRST, "x", rows_per_day=99)
    with pytest.raises(ValueError, match="execution_id"):
        _write(tmp_path, FIRST, "a/b")
