#!/usr/bin/env bash
# Deploy Convergence Data Pipeline.
#   ./simple_deploy.sh local          venv + requirements, demo billing data, uvicorn on HOST:PORT
#                                     (127.0.0.1:8000) with DuckDB in ./data (DUCKDB_PATH overrides)
#   ./simple_deploy.sh stage|prod     build with the Dockerfile (Cloud Build), deploy to Cloud Run
set -euo pipefail
cd "$(dirname "$0")"
TARGET=${1:-}

local_deploy() {
  local venv=.venv
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt

  mkdir -p data
  export ENVIRONMENT=development
  export DUCKDB_PATH=${DUCKDB_PATH:-$PWD/data/convergence.duckdb}
  export LOCAL_KMS_KEY_PATH=${LOCAL_KMS_KEY_PATH:-$PWD/data/local_kms.key}
  export HOST=${HOST:-127.0.0.1} PORT=${PORT:-8000}
  if [ -z "${ADMIN_API_KEY:-}" ]; then
    local key_file=data/admin_api_key
    if [ ! -s "$key_file" ]; then
      (umask 077 && "$venv/bin/python" -c 'import secrets; print("dev_admin_" + secrets.token_urlsafe(32))' >"$key_file")
      echo "Generated a development admin key (kept in $key_file, mode 0600):"
      echo "  $(cat "$key_file")"
    else
      echo "Using the development admin key in $key_file"
    fi
    ADMIN_API_KEY=$(cat "$key_file")
    export ADMIN_API_KEY
  fi

  if "$venv/bin/python" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('$HOST', $PORT)) != 0)"; then
    echo "simple_deploy: $HOST:$PORT is already in use (is the service running?)" >&2
    exit 1
  fi
  echo "Writing demo GCP billing export (${DEMO_DAYS:-30} days x ${DEMO_ROWS_PER_DAY:-5000} rows, ending ${DEMO_END_DATE:-yesterday UTC})..."
  "$venv/bin/python" -m src.core.demo.seed
  echo "Starting on http://$HOST:$PORT (docs: http://$HOST:$PORT/docs, warehouse: ${WAREHOUSE:-duckdb})"
  exec "$venv/bin/python" -m src.app
}

cloud_deploy() {
  local env=$1
  : "${GCP_PROJECT_ID:?set GCP_PROJECT_ID}" "${KMS_KEY_NAME:?set KMS_KEY_NAME}"
  local region=${GCP_REGION:-us-central1}
  local service=convergence-api-$env
  local image revision
  revision=$(git rev-parse --short HEAD)
  image=${region}-docker.pkg.dev/${GCP_PROJECT_ID}/convergence/api:${revision}
  local environment=staging
  [ "$env" = prod ] && environment=production
  gcloud builds submit --project "$GCP_PROJECT_ID" --tag "$image" .
  gcloud run deploy "$service" --project "$GCP_PROJECT_ID" --region "$region" --image "$image" \
    --allow-unauthenticated --service-account "convergence-api@${GCP_PROJECT_ID}.iam.gserviceaccount.com" \
    --no-cpu-throttling --min-instances 1 --timeout 3600 \
    --set-env-vars "ENVIRONMENT=$environment,WAREHOUSE=bigquery,GCP_PROJECT_ID=$GCP_PROJECT_ID,KMS_KEY_NAME=$KMS_KEY_NAME,BIGQUERY_LOCATION=${BIGQUERY_LOCATION:-US}" \
    --set-secrets "ADMIN_API_KEY=convergence-admin-api-key-$env:latest"
}

case "$TARGET" in
  local) local_deploy ;;
  stage | prod) cloud_deploy "$TARGET" ;;
  *) echo "usage: $0 local|stage|prod" >&2; exit 2 ;;
esac
