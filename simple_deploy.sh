#!/usr/bin/env bash
# Deploy Convergence Data Pipeline.
#   ./simple_deploy.sh local          venv + requirements, demo billing data, uvicorn on HOST:PORT
#                                     (127.0.0.1:8000) with DuckDB in ./data (DUCKDB_PATH overrides)
#   ./simple_deploy.sh stage|prod     the admin key in Secret Manager, build with the Dockerfile
#                                     (Cloud Build), deploy to Cloud Run, create or update the two
#                                     Cloud Scheduler jobs that call trigger and process-queue
#   DRY_RUN=1 ./simple_deploy.sh stage|prod
#                                     print every command stage|prod would run, one per line and
#                                     shell-quoted, and run none (needs neither gcloud nor network)
set -euo pipefail
cd "$(dirname "$0")"
TARGET=${1:-}

local_deploy() {
  local venv=.venv
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  # requirements-local.txt: the local S3 server the demo AWS export is served from (not in the image).
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt -r requirements-local.txt

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
  local_s3 "$venv"
  echo "Starting on http://$HOST:$PORT (docs: http://$HOST:$PORT/docs, warehouse: ${WAREHOUSE:-duckdb})"
  "$venv/bin/python" -m src.app
}

# The demo AWS export: a local S3 server (moto, on S3_PORT, default 5005; stopped with the service)
# that holds two deliveries of this month's CUR 2.0 export, and AWS_ENDPOINT_URL pointing at it.
local_s3() {
  local venv=$1 s3_port=${S3_PORT:-5005}
  export AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://127.0.0.1:$s3_port}
  if "$venv/bin/python" -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1', $s3_port)) != 0)"; then
    echo "simple_deploy: 127.0.0.1:$s3_port is already in use (set S3_PORT)" >&2
    exit 1
  fi
  mkdir -p data
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$s3_port" >data/moto.log 2>&1 &
  S3_PID=$!
  trap 'kill "$S3_PID" 2>/dev/null || true' EXIT
  local tries=0
  until "$venv/bin/python" -c "import urllib.request; urllib.request.urlopen('$AWS_ENDPOINT_URL/moto-api/')" 2>/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ] || ! kill -0 "$S3_PID" 2>/dev/null; then
      echo "simple_deploy: the local S3 server did not start (data/moto.log)" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "Delivering the demo AWS CUR 2.0 export (two deliveries of $(date -u +%Y-%m)) to $AWS_ENDPOINT_URL..."
  "$venv/bin/python" -m src.core.demo.aws_seed
}

# ---------------------------------------------------------------------------------------------
# stage | prod
#
# How the admin key stays secret. It is never on a command line (any local user can read every
# process's arguments, in /proc or with ps), never in a shell variable (so `bash -x` cannot print
# it), never in gcloud's log files and never on the terminal:
#   * It lives in Secret Manager as convergence-admin-api-key-<env>. The first deploy creates it:
#     36 bytes of /dev/urandom, base64url (48 characters), piped into
#     `gcloud secrets create --data-file=-` (stdin).
#   * Cloud Run reads it itself: `--set-secrets ADMIN_API_KEY=<secret>:latest` only names the
#     secret. The service account is granted secretAccessor on that one secret.
#   * Cloud Scheduler cannot read Secret Manager, so the key has to be the jobs' X-Admin-Key
#     header, and `--headers X-Admin-Key=...` would put it on gcloud's command line. Instead gcloud
#     reads that one flag from a YAML file (`--flags-file`, see `gcloud topic flags-file`): the key
#     is copied by `gcloud secrets versions access --out-file` into a private directory (mktemp -d
#     under umask 077), the flags file is assembled from it with printf and cat, and both are
#     removed right after use (and by the EXIT trap).
#   * gcloud writes its expanded arguments (flags files included) to ~/.config/gcloud/logs, and
#     with core/log_http prints request and response bodies: the commands that carry the key, or
#     read something that contains it, run as QUIET_GCLOUD (file logging off, log_http off,
#     verbosity warning) and with --format none where they would print the job.
# What remains: the header is part of the jobs' configuration, readable by whoever may read Cloud
# Scheduler jobs in the project (as the secret is by whoever may access it). The jobs also send an
# OIDC token of the service account (audience: the service URL), generated per call, so invocations
# can later be restricted by IAM without changing the jobs.
# Rotating the key: add a version (`gcloud secrets versions add <secret> --data-file=-`), deploy
# again; the new revision and both jobs take the latest version.
# ---------------------------------------------------------------------------------------------
TRIGGER_PATH=/api/v1/scheduler/trigger
PROCESS_QUEUE_PATH=/api/v1/scheduler/process-queue
QUIET_GCLOUD=(env CLOUDSDK_CORE_DISABLE_FILE_LOGGING=true CLOUDSDK_CORE_LOG_HTTP=false
  CLOUDSDK_CORE_VERBOSITY=warning gcloud)
DRY=0
DEPLOY_TMP=""

die() {
  printf 'simple_deploy: %s\n' "$*" >&2
  exit 1
}

say() { printf '%s\n' "$*" >&2; } # progress goes to stderr: a dry run's stdout is only commands

quote() { # the arguments as one shell-quoted line (the same quoting as Python's shlex.join)
  local arg safe='^[A-Za-z0-9_@%+=:,./-]+$' q="'\"'\"'" words=()
  for arg in "$@"; do
    if [[ $arg =~ $safe ]]; then
      words+=("$arg")
    else
      words+=("'${arg//\'/$q}'")
    fi
  done
  printf '%s' "${words[*]}"
}

# run [--note TEXT] [--stdin FUNCTION] COMMAND...: a dry run prints the command (and the note as a
# shell comment) on stdout; otherwise it is shown on stderr and run, its stdin from FUNCTION.
run() {
  local note="" feed=""
  if [ "$1" = --note ]; then note="  # $2"; shift 2; fi
  if [ "$1" = --stdin ]; then feed=$2; shift 2; fi
  if [ "$DRY" = 1 ]; then
    printf '%s%s\n' "$(quote "$@")" "$note"
    return 0
  fi
  printf '+ %s%s\n' "$(quote "$@")" "$note" >&2
  if [ -n "$feed" ]; then
    "$feed" | "$@"
  else
    "$@"
  fi
}

# exists COMMAND...: a describe command; 0 = found, 1 = NOT_FOUND, any other failure stops the
# deploy. A dry run prints it and assumes "not found" (DRY_RUN_EXISTING=1: found).
exists() {
  if [ "$DRY" = 1 ]; then
    local assumed=no
    [ "${DRY_RUN_EXISTING:-0}" != 1 ] || assumed=yes
    run --note "exists? a dry run assumes: $assumed" "$@"
    [ "$assumed" = yes ]
    return
  fi
  local err
  printf '+ %s\n' "$(quote "$@")" >&2
  if err=$("$@" 2>&1 >/dev/null); then
    return 0
  fi
  case $err in *NOT_FOUND* | *"not found"*) return 1 ;; esac
  printf '%s\n' "$err" >&2
  die "could not tell whether it exists: $(quote "$@")"
}

new_admin_key() { # 48 characters: 36 bytes of /dev/urandom, base64url; stdout only
  head -c 36 /dev/urandom | base64 | tr -d '\n' | tr '+/' '-_'
}

check_key_file() { # the service compares the whole value: one line, no newline, >= 32 characters
  if ! LC_ALL=C grep -Eqx '[A-Za-z0-9._~+/=-]{32,}' "$KEY_FILE" || [ "$(wc -l <"$KEY_FILE")" -ne 0 ]; then
    die "the latest version of secret $SECRET must be at least 32 characters of A-Z a-z 0-9 . _ ~ + / = - and no newline"
  fi
}

# write_header_flags FLAG [CONTENT_TYPE]: a gcloud flags file (YAML) that sets the job's headers
# with FLAG (headers when creating, update-headers when updating): X-Admin-Key from the key file,
# and Content-Type for a job with a body (Cloud Scheduler sends application/octet-stream otherwise,
# which the service does not read as JSON).
write_header_flags() {
  {
    printf -- '--%s:\n' "$1"
    if [ -n "${2:-}" ]; then printf '  Content-Type: %s\n' "$2"; fi
    printf '  X-Admin-Key: "'
    cat "$KEY_FILE"
    printf '"\n'
  } >"$FLAGS_FILE"
}

# schedule_job NAME SCHEDULE PATH ATTEMPT_DEADLINE BODY DESCRIPTION: create the Cloud Scheduler
# HTTP job, or update it when it exists (re-deploys converge on the same two jobs).
schedule_job() {
  local name=$1 schedule=$2 path=$3 deadline=$4 body=$5 description=$6 verb headers_flag
  local args=(--project "$PROJECT" --location "$SCHEDULER_LOCATION" --schedule "$schedule"
    --time-zone "$SCHEDULE_TZ" --uri "$SERVICE_URL$path" --http-method post
    --attempt-deadline "$deadline" --description "$description"
    --oidc-service-account-email "$ACCOUNT" --oidc-token-audience "$SERVICE_URL")
  if exists "${QUIET_GCLOUD[@]}" scheduler jobs describe "$name" --project "$PROJECT" \
    --location "$SCHEDULER_LOCATION" --format 'value(name)'; then
    verb=update headers_flag=update-headers
    if [ -n "$body" ]; then args+=(--message-body "$body"); else args+=(--clear-message-body); fi
  else
    verb=create headers_flag=headers
    if [ -n "$body" ]; then args+=(--message-body "$body"); fi
  fi
  local content_type="" note="--$headers_flag X-Admin-Key=<latest version of $SECRET>"
  if [ -n "$body" ]; then content_type=application/json note+=",Content-Type=application/json"; fi
  [ "$DRY" = 1 ] || write_header_flags "$headers_flag" "$content_type"
  run --note "the flags file sets $note" \
    "${QUIET_GCLOUD[@]}" scheduler jobs "$verb" http "$name" "${args[@]}" \
    --flags-file "$FLAGS_FILE" --format none
  [ "$DRY" = 1 ] || rm -f "$FLAGS_FILE"
}

cloud_deploy() {
  local env=$1
  case "${DRY_RUN:-0}" in
    1 | true | yes) DRY=1 ;;
    0 | false | no | "") DRY=0 ;;
    *) die "DRY_RUN must be 1 (print the commands, run none) or 0, not '$DRY_RUN'" ;;
  esac
  local project_re='^[a-z][a-z0-9-]{4,61}[a-z0-9]$'
  local kms_re='^projects/[^/,]+/locations/[^/,]+/keyRings/[^/,]+/cryptoKeys/[^/,]+$'
  local account_re='^[a-z0-9._-]+@[a-z0-9.-]+\.gserviceaccount\.com$'
  [ -n "${GCP_PROJECT_ID:-}" ] || die "set GCP_PROJECT_ID (the Google Cloud project to deploy to)"
  [[ $GCP_PROJECT_ID =~ $project_re ]] || die "GCP_PROJECT_ID '$GCP_PROJECT_ID' is not a project id"
  [ -n "${KMS_KEY_NAME:-}" ] ||
    die "set KMS_KEY_NAME (projects/P/locations/L/keyRings/R/cryptoKeys/K): $env refuses to start without it"
  [[ $KMS_KEY_NAME =~ $kms_re ]] ||
    die "KMS_KEY_NAME must look like projects/P/locations/L/keyRings/R/cryptoKeys/K"

  PROJECT=$GCP_PROJECT_ID
  ACCOUNT=${SERVICE_ACCOUNT_EMAIL:-convergence-api@$PROJECT.iam.gserviceaccount.com}
  [[ $ACCOUNT =~ $account_re ]] || die "SERVICE_ACCOUNT_EMAIL '$ACCOUNT' is not a service account e-mail"
  SECRET=convergence-admin-api-key-$env
  local region=${GCP_REGION:-us-central1} bq_location=${BIGQUERY_LOCATION:-US}
  [[ $bq_location =~ ^[A-Za-z0-9-]+$ ]] || die "BIGQUERY_LOCATION '$bq_location' is not a location"
  SCHEDULER_LOCATION=${CLOUD_SCHEDULER_LOCATION:-$region}
  SCHEDULE_TZ=${SCHEDULE_TIME_ZONE:-Etc/UTC}
  local trigger_schedule=${TRIGGER_SCHEDULE:-*/5 * * * *}
  local queue_schedule=${PROCESS_QUEUE_SCHEDULE:-* * * * *}
  local max_items=${PROCESS_QUEUE_MAX_ITEMS:-10} deadline=${PROCESS_QUEUE_DEADLINE:-1800s}
  local fields words
  for fields in "TRIGGER_SCHEDULE=$trigger_schedule" "PROCESS_QUEUE_SCHEDULE=$queue_schedule"; do
    read -r -a words <<<"${fields#*=}"
    [ "${#words[@]}" -eq 5 ] || die "${fields%%=*} must be a five-field cron expression, not '${fields#*=}'"
  done
  [[ $max_items =~ ^[1-9][0-9]*$ ]] || die "PROCESS_QUEUE_MAX_ITEMS must be a positive integer"
  # Cloud Scheduler allows 15 s to 30 min for an HTTP target; process-queue answers when the runs
  # it started have ended, so it gets the longest by default.
  if ! [[ $deadline =~ ^[1-9][0-9]*s$ ]] || ((${deadline%s} < 15 || ${deadline%s} > 1800)); then
    die "PROCESS_QUEUE_DEADLINE must be between 15s and 1800s (Cloud Scheduler's limits), not '$deadline'"
  fi

  local service=convergence-api-$env environment=staging revision image
  if [ "$env" = prod ]; then environment=production; fi
  revision=$(git rev-parse --short HEAD) || die "not a git checkout (the image is tagged with the commit)"
  image=$region-docker.pkg.dev/$PROJECT/convergence/api:$revision

  if [ "$DRY" = 1 ]; then
    DEPLOY_TMP=${TMPDIR:-/tmp}/convergence-deploy.DRY-RUN
  else
    umask 077
    DEPLOY_TMP=$(mktemp -d "${TMPDIR:-/tmp}/convergence-deploy.XXXXXX")
    trap 'rm -rf "$DEPLOY_TMP"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
  fi
  KEY_FILE=$DEPLOY_TMP/admin-key
  FLAGS_FILE=$DEPLOY_TMP/scheduler-flags.yaml
  say "== $env: project $PROJECT, region $region, service $service, image $image"

  # 1. The admin key, in Secret Manager; the service account may read it.
  if ! exists gcloud secrets describe "$SECRET" --project "$PROJECT" --format 'value(name)'; then
    run --note "stdin: a new 48-character key from /dev/urandom" --stdin new_admin_key \
      "${QUIET_GCLOUD[@]}" secrets create "$SECRET" --project "$PROJECT" \
      --replication-policy automatic --data-file=- --format none
  fi
  run gcloud secrets add-iam-policy-binding "$SECRET" --project "$PROJECT" \
    --member "serviceAccount:$ACCOUNT" --role roles/secretmanager.secretAccessor --format none

  # 2. Build the image and deploy the service.
  run gcloud builds submit --project "$PROJECT" --tag "$image" .
  run gcloud run deploy "$service" --project "$PROJECT" --region "$region" --image "$image" \
    --allow-unauthenticated --service-account "$ACCOUNT" \
    --no-cpu-throttling --min-instances 1 --timeout 3600 \
    --set-env-vars "ENVIRONMENT=$environment,WAREHOUSE=bigquery,GCP_PROJECT_ID=$PROJECT,KMS_KEY_NAME=$KMS_KEY_NAME,BIGQUERY_LOCATION=$bq_location,SERVICE_ACCOUNT_EMAIL=$ACCOUNT" \
    --set-secrets "ADMIN_API_KEY=$SECRET:latest"

  # 3. Its URL.
  local describe=(gcloud run services describe "$service" --project "$PROJECT" --region "$region"
    --format 'value(status.url)')
  if [ "$DRY" = 1 ]; then
    SERVICE_URL=https://$service.dry-run.invalid
    run --note "prints the service URL; this dry run uses $SERVICE_URL" "${describe[@]}"
  else
    SERVICE_URL=$(run "${describe[@]}")
    [[ $SERVICE_URL == https://* ]] || die "could not read the URL of Cloud Run service $service"
  fi

  # 4. The Cloud Scheduler jobs, with the key from Secret Manager (see the top of this part).
  run --note "the admin key into a private file, for the jobs' flags file" \
    "${QUIET_GCLOUD[@]}" secrets versions access latest --secret "$SECRET" --project "$PROJECT" \
    --out-file "$KEY_FILE"
  [ "$DRY" = 1 ] || check_key_file
  schedule_job "convergence-trigger-$env" "$trigger_schedule" "$TRIGGER_PATH" 300s "" \
    "Convergence $env: enqueue due schedules (POST $TRIGGER_PATH)"
  schedule_job "convergence-process-queue-$env" "$queue_schedule" "$PROCESS_QUEUE_PATH" "$deadline" \
    "{\"max_items\": $max_items}" "Convergence $env: run queued schedule items (POST $PROCESS_QUEUE_PATH)"
  [ "$DRY" = 1 ] || rm -f "$KEY_FILE"
  say "== $service: $SERVICE_URL; jobs convergence-trigger-$env ($trigger_schedule) and" \
    "convergence-process-queue-$env ($queue_schedule, max_items $max_items) in $SCHEDULER_LOCATION ($SCHEDULE_TZ)"
}

case "$TARGET" in
  local) local_deploy ;;
  stage | prod) cloud_deploy "$TARGET" ;;
  *) echo "usage: $0 local|stage|prod" >&2; exit 2 ;;
esac
