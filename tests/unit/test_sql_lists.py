"""The list rewrite of ``translate`` (``sqlglot_lists``): subqueries over UNNEST become DuckDB list
functions, with the results of the subquery form (which DuckDB also runs, decorrelated)."""

from __future__ import annotations

from typing import Any

import duckdb
import pytest
import sqlglot

from src.core.engine.translate import to_duckdb

ROWS = [
    (1, [{"amount": -1.5, "type": "A"}, {"amount": -0.25, "type": "B"}, {"amount": None, "type": "A"}]),
    (2, []),
    (3, None),
    (4, [{"amount": 2.0, "type": "B"}]),
]
JSON_ROWS = [
    (1, '[{"key":"env","value":"prod","n":1.5},{"key":"team","value":"web","n":null}]', '[{"key":"env","value":"x"}]'),
    (2, "[]", '[{"key":"team","value":"y"},{"key":"cost-center","value":"cc-1"}]'),
    (3, None, "[]"),
    (4, '[{"key":"a\\"b","value":"","n":2}]', None),
]


@pytest.fixture(scope="module")
def con() -> Any:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (id INT, credits STRUCT(amount DOUBLE, type VARCHAR)[])")
    con.executemany("INSERT INTO t VALUES (?, ?)", ROWS)
    con.execute("CREATE TABLE j (id INT, labels VARCHAR, more VARCHAR)")
    con.executemany("INSERT INTO j VALUES (?, ?, ?)", JSON_ROWS)
    return con


def both(con: Any, sql: str) -> tuple[str, list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    (rewritten,) = to_duckdb(sql)
    plain = sqlglot.transpile(sql, read="bigquery", write="duckdb")[0]
    return rewritten.sql, con.execute(rewritten.sql).fetchall(), con.execute(plain).fetchall()


@pytest.mark.parametrize(
    "expression",
    [
        "(SELECT SUM(c.amount) FROM UNNEST(b.credits) AS c)",
        "(SELECT SUM(c.amount) FROM UNNEST(b.credits) AS c WHERE c.type = 'A')",
        "(SELECT MIN(c.amount) FROM UNNEST(b.credits) AS c WHERE c.type <> 'Z')",
        "(SELECT MAX(c.type) FROM UNNEST(b.credits) AS c)",
        "(SELECT COUNT(*) FROM UNNEST(b.credits) AS c)",
        "(SELECT COUNT(c.amount) FROM UNNEST(b.credits) AS c WHERE c.type = 'A')",
        "(SELECT STRING_AGG(c.type, '|') FROM UNNEST(b.credits) AS c WHERE c.amount < 0)",
        "(SELECT LOGICAL_OR(c.amount > 1) FROM UNNEST(b.credits) AS c)",
        "EXISTS (SELECT 1 FROM UNNEST(b.credits) AS c WHERE c.type = 'B')",
        "NOT EXISTS (SELECT 1 FROM UNNEST(b.credits) AS c)",
    ],
)
def test_struct_arrays_give_the_subquery_results(con: Any, expression: str) -> None:
    rewritten, got, want = both(con, f"SELECT b.id, {expression} AS x FROM t AS b ORDER BY b.id")
    assert "UNNEST" not in rewritten.upper()
    assert got == want


@pytest.mark.parametrize(
    "expression",
    [
        "(SELECT STRING_AGG(JSON_QUERY(l, '$.key') || ':' || JSON_QUERY(l, '$.value'), ',') "
        "FROM UNNEST(JSON_QUERY_ARRAY(b.labels)) AS l)",
        "(SELECT SUM(CAST(JSON_VALUE(l, '$.n') AS FLOAT64)) FROM UNNEST(JSON_QUERY_ARRAY(b.labels)) AS l "
        "WHERE JSON_VALUE(l, '$.key') <> 'team')",
        "(SELECT MAX(JSON_VALUE(l, '$.value')) FROM UNNEST(JSON_QUERY_ARRAY(b.labels)) AS l)",
        "(SELECT COUNT(*) FROM UNNEST(JSON_QUERY_ARRAY(b.labels)) AS l WHERE JSON_VALUE(l, '$.key') = 'env')",
    ],
)
def test_json_arrays_are_parsed_once_and_give_the_subquery_results(con: Any, expression: str) -> None:
    rewritten, got, want = both(con, f"SELECT b.id, {expression} AS x FROM j AS b ORDER BY b.id")
    assert "UNNEST" not in rewritten.upper()
    assert "FROM_JSON" in rewritten.upper()
    assert got == want


def test_nested_exists_is_rewritten_innermost_first(con: Any) -> None:
    """Project labels whose key is not also a resource label. DuckDB's own decorrelation of this
    nested form answers row 1 wrongly ('env'); the list form and the BigQuery emulator agree on None."""
    sql = (
        "SELECT b.id, (SELECT STRING_AGG(JSON_VALUE(p, '$.key'), ',') FROM UNNEST(JSON_QUERY_ARRAY(b.more)) AS p "
        "WHERE NOT EXISTS (SELECT 1 FROM UNNEST(JSON_QUERY_ARRAY(b.labels)) AS l "
        "WHERE JSON_VALUE(l, '$.key') = JSON_VALUE(p, '$.key'))) AS x FROM j AS b ORDER BY b.id"
    )
    rewritten, got, _ = both(con, sql)
    assert "UNNEST" not in rewritten.upper()
    assert got == [(1, None), (2, "team,cost-center"), (3, None), (4, None)]


@pytest.mark.parametrize(
    "expression",
    [
        "(SELECT c.type FROM UNNEST(b.credits) AS c ORDER BY c.amount LIMIT 1)",  # ORDER BY / LIMIT
        "(SELECT SUM(c.amount) FROM UNNEST(b.credits) AS c, UNNEST([1]) AS d)",  # two sources
        "b.id IN (SELECT CAST(c.amount AS INT64) FROM UNNEST(b.credits) AS c)",  # IN keeps set semantics
        "(SELECT STRING_AGG(c.type, ',' ORDER BY c.type) FROM UNNEST(b.credits) AS c)",
    ],
)
def test_other_forms_are_left_to_duckdb(con: Any, expression: str) -> None:
    rewritten, got, want = both(con, f"SELECT b.id, {expression} AS x FROM t AS b ORDER BY b.id")
    assert "UNNEST" in rewritten.upper()
    assert got == want


def test_json_element_used_whole_is_not_typed(con: Any) -> None:
    sql = "SELECT b.id, (SELECT COUNT(l) FROM UNNEST(JSON_QUERY_ARRAY(b.labels)) AS l) AS x FROM j AS b ORDER BY b.id"
    rewritten, got, want = both(con, sql)
    assert "FROM_JSON" not in rewritten.upper()
    assert got == want


def test_parse_numeric_keeps_nine_decimals() -> None:
    con = duckdb.connect()
    (statement,) = to_duckdb("SELECT PARSE_NUMERIC(CAST(x AS STRING)) AS n, PARSE_NUMERIC('2.5') AS m FROM t")
    assert "DECIMAL(38, 9)" in statement.sql and "PARSE_NUMERIC" not in statement.sql.upper()
    con.execute("CREATE TABLE t AS SELECT 157.99215699999996::DOUBLE AS x")
    assert [str(v) for v in con.execute(statement.sql).fetchone() or ()] == ["157.992157000", "2.500000000"]
