#!/usr/bin/env bash
# Test Convergence Data Pipeline.
#   ./simple_test.sh local         install what is needed, lint, type-check, run the whole suite
#   ./simple_test.sh stage|prod    curl smoke flow against a deployed service (SERVICE_URL, ADMIN_API_KEY)
set -euo pipefail
cd "$(dirname "$0")"
TARGET=${1:-}

local_tests() {
  local venv=.venv
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
  # The BigQuery emulator the suite runs the BigQuery backend against: its own venv (it pins its
  # own DuckDB and sqlglot). BACKENDS=duckdb skips it.
  if [[ "${BACKENDS:-duckdb,bigquery}" == *bigquery* ]]; then
    if [ ! -x .venv-bq/bin/bqemulator ]; then
      python3 -m venv .venv-bq
    fi
    .venv-bq/bin/pip install --quiet --disable-pip-version-check -r requirements-bqemulator.txt
  fi
  echo "== ruff"
  "$venv/bin/ruff" check src tests benchmarks
  echo "== mypy"
  "$venv/bin/mypy"
  if command -v shellcheck >/dev/null 2>&1; then
    echo "== shellcheck"
    shellcheck simple_deploy.sh simple_test.sh .ci/run
  fi
  if [[ "${BACKENDS:-duckdb,bigquery}" == *bigquery* && "${BACKENDS:-duckdb,bigquery}" == *duckdb* && $# -le 1 ]]; then
    # Two shards side by side: the cases on the BigQuery emulator (bound by the emulator process)
    # and everything else (bound by the DuckDB servers and the unit tests).
    echo "== pytest (two shards in parallel: BigQuery backend | DuckDB backend and backend-independent)"
    local logs rc_bq=0 rc_rest=0
    logs=$(mktemp -d)
    TEST_SHARD=bigquery "$venv/bin/python" -m pytest -q --durations=15 >"$logs/bigquery.log" 2>&1 &
    local pid_bq=$!
    TEST_SHARD=rest "$venv/bin/python" -m pytest -q --durations=15 >"$logs/rest.log" 2>&1 || rc_rest=$?
    wait "$pid_bq" || rc_bq=$?
    echo "-- shard: DuckDB backend and backend-independent (exit $rc_rest)"
    cat "$logs/rest.log"
    echo "-- shard: BigQuery backend (exit $rc_bq)"
    cat "$logs/bigquery.log"
    rm -rf "$logs"
    [ "$rc_rest" -eq 0 ] && [ "$rc_bq" -eq 0 ]
  else
    echo "== pytest"
    "$venv/bin/python" -m pytest -q "${@:2}"
  fi
}

check() { # method path expected-status [body]
  local code
  # The admin key goes to curl in a 0600 header file (-H @file), never on its command line.
  code=$(curl -sS -o "$SMOKE_DIR/answer.json" -w '%{http_code}' -X "$1" "$SERVICE_URL$2" \
    -H "@$SMOKE_DIR/headers" -H 'Content-Type: application/json' ${4:+-d "$4"})
  echo "$1 $2 -> $code"
  [ "$code" = "$3" ] || { cat "$SMOKE_DIR/answer.json"; exit 1; }
}

smoke() {
  : "${SERVICE_URL:?set SERVICE_URL (the Cloud Run URL)}" "${ADMIN_API_KEY:?set ADMIN_API_KEY}"
  SMOKE_DIR=$(umask 077 && mktemp -d)
  trap 'rm -rf "$SMOKE_DIR"' EXIT
  printf 'X-Admin-Key: %s\n' "$ADMIN_API_KEY" >"$SMOKE_DIR/headers"
  check GET /health 200
  check GET /health/ready 200
  check GET /api/v1/admin/bootstrap/status 200
  check POST /api/v1/organizations/dryrun 200 \
    '{"org_slug":"smoke_test_org","company_name":"Smoke","admin_email":"smoke@example.com","subscription_plan":"STARTER"}'
  check GET /api/v1/pipelines/runs 200
  echo "smoke test passed against $SERVICE_URL"
}

case "$TARGET" in
  local) local_tests "$@" ;;
  stage | prod) smoke ;;
  *) echo "usage: $0 local|stage|prod" >&2; exit 2 ;;
esac
