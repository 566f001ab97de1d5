"""FOCUS pieces without a server: the mapping files' load-time checks, the export writer (formats,
chunks, clean-up), currency totals, and the AWS mapping's one row per line item, reconciled exactly."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import shutil
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from src.core.engine import exports
from src.core.engine.schema import SchemaField
from src.core.errors import ConfigError
from src.core.processors.focus.build import check_mapping, focus_schema, mapping_sql
from src.core.services.cost_reads import totals_per_currency
from tests.focus_checks import DATASET, aws_focus_rows
from tests.server import REPO

CONFIGS = REPO / "configs"


def _configs_with(tmp_path: Path, name: str, text: str) -> Path:
    root = tmp_path / "configs"
    shutil.copytree(CONFIGS / "focus", root / "focus")
    (root / "focus" / name).write_text(text)
    mapping_sql.cache_clear()
    focus_schema.cache_clear()
    return root


@pytest.mark.parametrize("mapping", ["focus/gcp_focus_mapping.sql", "focus/aws_focus_mapping.sql"])
def test_the_mappings_return_every_focus_column_each_with_its_source(mapping: str) -> None:
    check_mapping(CONFIGS, mapping)
    text = mapping_sql(CONFIGS, mapping)
    assert text.count(" AS x_Provider") == 1


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda s: s.replace("  -- ChargeDescription:", "  --\n  -- (no source named)\n  -- x", 1), None),
        (lambda s: s.replace("k.cost_type AS x_CostType,\n", ""), "missing ['x_CostType']"),
        (lambda s: s.replace("'gcp' AS x_Provider,", "'gcp' AS x_Provider,\n  -- extra\n  1 AS Extra,"), "Extra"),
        (lambda s: s.replace("{source_table}", "{org_dataset}", 1), "unknown placeholder"),
        (lambda s: s.replace("-- x_Provider: constant.", "-- x_Provider: constant, not @start_date."), "comments"),
        (lambda s: s + "\n-- the end\n", "end with a comment"),
        (lambda s: s.replace("  -- BillingCurrency. Source: currency.\n", ""), "BillingCurrency"),
    ],
)
def test_a_broken_mapping_is_refused_at_load(tmp_path: Path, edit: Any, reason: str | None) -> None:
    text = (CONFIGS / "focus" / "gcp_focus_mapping.sql").read_text()
    changed = edit(text)
    assert changed != text
    root = _configs_with(tmp_path, "gcp_focus_mapping.sql", changed)
    if reason is None:  # a comment naming no column is still a comment: allowed
        check_mapping(root, "focus/gcp_focus_mapping.sql")
        return
    with pytest.raises(ConfigError) as caught:
        check_mapping(root, "focus/gcp_focus_mapping.sql")
    assert reason in str(caught.value) or reason in caught.value.message


SCHEMA = (
    SchemaField(name="day", type="DATE"),
    SchemaField(name="cost", type="NUMERIC"),
    SchemaField(name="quantity", type="FLOAT64"),
    SchemaField(name="start", type="TIMESTAMP"),
    SchemaField(name="name", type="STRING"),
    SchemaField(name="tags", type="STRING"),
)
ROWS = [
    {"day": date(2026, 11, 20), "cost": Decimal("12.5"), "quantity": 2.0, "name": 'say "hi", ok',
     "start": datetime(2026, 11, 20, 7, tzinfo=UTC), "tags": '{"team":"web"}'},
    {"day": date(2026, 11, 20), "cost": Decimal("-0.000000001"), "quantity": None, "name": None,
     "start": datetime(2026, 11, 20, 8, tzinfo=UTC), "tags": None},
]  # fmt: skip


def _convert(tmp_path: Path, fmt: exports.ExportFormat) -> bytes:
    staged = tmp_path / "rows.ndjson"
    with staged.open("w") as handle:
        assert exports.append_ndjson(handle, ROWS) == 2
    target = tmp_path / f"out{exports.SUFFIX[fmt]}"
    exports.convert_ndjson(staged, target, fmt, SCHEMA, ["tags"])
    return target.read_bytes()


def test_text_formats_write_iso_timestamps_exact_numbers_and_embedded_json(tmp_path: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(_convert(tmp_path, "csv").decode())))
    assert rows[0] == {
        "day": "2026-11-20", "cost": "12.500000000", "quantity": "2.0", "start": "2026-11-20T07:00:00Z",
        "name": 'say "hi", ok', "tags": '{"team":"web"}',
    }  # fmt: skip
    assert rows[1]["cost"] == "-0.000000001" and rows[1]["name"] == "" and rows[1]["tags"] == ""
    lines = [json.loads(line) for line in _convert(tmp_path, "jsonl").decode().splitlines()]
    assert lines[0]["tags"] == {"team": "web"} and lines[0]["start"] == "2026-11-20T07:00:00Z"
    assert lines[1]["tags"] is None and lines[1]["quantity"] is None


def test_parquet_keeps_the_types(tmp_path: Path) -> None:
    path = tmp_path / "check.parquet"
    path.write_bytes(_convert(tmp_path, "parquet"))
    con = duckdb.connect()
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '{path}')").fetchall())
    assert types["cost"] == "DECIMAL(38,9)" and types["start"] == "TIMESTAMP WITH TIME ZONE"
    assert con.execute(f"SELECT SUM(cost) FROM '{path}'").fetchone() == (Decimal("12.499999999"),)


def test_files_are_streamed_in_chunks_and_removed(tmp_path: Path) -> None:
    path = exports.new_file(tmp_path, ".csv")
    path.write_bytes(b"x" * (exports.CHUNK_BYTES * 2 + 10))

    async def read() -> list[int]:
        sizes = []
        try:
            async for chunk in exports.file_chunks(path):
                sizes.append(len(chunk))
        finally:
            exports.remove(path)
        return sizes

    assert asyncio.run(read()) == [exports.CHUNK_BYTES, exports.CHUNK_BYTES, 10]
    assert not path.exists()
    assert oct(exports.new_file(tmp_path, ".x").stat().st_mode & 0o777) == "0o600"


def test_currencies_are_never_added_together() -> None:
    days = [
        {"currency": "USD", "row_count": 2, "billed_cost": 1.25},
        {"currency": "EUR", "row_count": 1, "billed_cost": 7.0},
        {"currency": "USD", "row_count": 1, "billed_cost": 0.75},
    ]
    mixed = totals_per_currency(days, ["billed_cost"])
    assert mixed["currencies"] == ["EUR", "USD"] and mixed["totals"] is None and mixed["totals_currency"] is None
    assert mixed["totals_by_currency"] == {
        "USD": {"row_count": 3, "billed_cost": 2.0},
        "EUR": {"row_count": 1, "billed_cost": 7.0},
    }
    one = totals_per_currency(days[:1], ["billed_cost"])
    assert one["totals"] == {"row_count": 2, "billed_cost": 1.25} and one["totals_currency"] == "USD"
    none = totals_per_currency([], ["billed_cost"])
    assert none["totals"] == {"row_count": 0, "billed_cost": 0.0} and none["currencies"] == []


def test_aws_focus_rows_are_one_per_line_item_and_reconcile_exactly(tmp_path: Path) -> None:
    db, stats = aws_focus_rows(tmp_path, period=date(2026, 11, 1), through_day=date(2026, 11, 4), rows_per_day=100)
    con = duckdb.connect()
    con.execute(f"ATTACH '{db}' AS w (READ_ONLY)")
    con.execute("SET TimeZone = 'UTC'")
    got = {
        (day, currency): (rows, billed)
        for day, currency, rows, billed in con.execute(
            f"SELECT x_UsageDate, BillingCurrency, COUNT(*), SUM(BilledCost) FROM w.{DATASET}.focus_cost GROUP BY ALL"
        ).fetchall()
    }
    assert got == {key: (t.rows, t.cost) for key, t in stats.totals.items()}  # exact: NUMERIC, to the nano
    amortized = con.execute(
        f"SELECT SUM(EffectiveCost) FILTER (WHERE x_LineItemType = 'SavingsPlanNegation'), "
        f"SUM(BilledCost) FILTER (WHERE x_LineItemType IN ('SavingsPlanNegation', 'SavingsPlanCoveredUsage')) "
        f"FROM w.{DATASET}.focus_cost"
    ).fetchone()
    assert amortized == (Decimal(0), Decimal(0))  # negations net the covered usage; they amortize to nothing
