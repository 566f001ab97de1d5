"""Settings, read from the environment by the product's exact variable names (no prefix).

Every limit the service enforces is a setting, so tests can shrink it. ``unsafe_reasons`` lists what
makes a configuration unfit for staging or production; the app refuses to start on any of them.
"""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]

Environment = Literal["development", "staging", "production"]

_DATASET_SUFFIX: dict[str, str] = {"development": "local", "staging": "stage", "production": "prod"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # --- identity of the deployment ---
    environment: Environment = Field("development", description="development | staging | production")
    gcp_project_id: str = Field(
        "convergence-local",
        pattern=r"^[a-z][a-z0-9\-]{4,61}[a-z0-9]$",
        description="Project that holds the central and org datasets (DuckDB: the catalog name).",
    )
    instance_id: str = Field(
        default_factory=lambda: f"inst-{secrets.token_hex(6)}",
        description="Owner id written on runs this process executes.",
    )

    # --- auth ---
    admin_api_key: SecretStr | None = Field(None, description="X-Admin-Key value; required in production.")
    disable_auth: bool = Field(False, description="Development only: skip key checks.")
    key_cache_ttl_seconds: float = Field(30.0, ge=0, le=60, description="Verified org keys are cached this long.")
    unknown_key_cache_seconds: float = Field(
        10.0, ge=0, le=60, description="Well-formed keys the warehouse did not know are remembered this long."
    )
    unknown_key_cache_size: int = Field(50_000, ge=0, description="Entries of that negative cache (bounded).")
    key_lookup_rate: float = Field(
        50.0, ge=0, description="Warehouse lookups of uncached keys per second, per instance (0 = unlimited)."
    )
    key_lookup_burst: int = Field(100, ge=1, description="Uncached-key lookups allowed at once before the rate.")
    ready_cache_seconds: float = Field(
        5.0, ge=0, le=60, description="GET /health/ready answers from a result this old."
    )
    max_key_grace_seconds: int = Field(7 * 86_400, ge=0, description="Longest grace period of a key rotation.")
    max_api_keys_per_org: int = Field(20, ge=1, le=1000, description="Active API keys one organization may hold.")
    key_touch_interval_seconds: float = Field(
        300.0, ge=0, description="last_used_at is written at most this often (one statement per instance for all keys)."
    )
    auth_failure_limit: int = Field(20, ge=0, description="Failed authentications per client per window (0 = off).")
    auth_failure_window_seconds: float = Field(60.0, gt=0)
    admin_rate_limit: int = Field(300, ge=0, description="Admin requests per client per minute (0 = off).")
    trusted_proxy_hops: int = Field(
        0, ge=0, le=10, description="Proxies in front that append to X-Forwarded-For (Cloud Run: 1; 0 = ignore it)."
    )
    quota_retry_after_seconds: int = Field(30, ge=1, description="Retry-After when the concurrent limit is reached.")

    # --- KMS ---
    kms_key_name: str | None = Field(
        None,
        pattern=r"^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$",
        description="Cloud KMS crypto key; unset = local AES-GCM key file.",
    )
    kms_api_endpoint: str | None = Field(None, description="Point the Cloud KMS client elsewhere (tests).")
    local_kms_key_path: Path = Field(REPO_ROOT / "data" / "local_kms.key")
    service_account_email: str | None = Field(
        None,
        pattern=r"^[a-z0-9._\-]+@[a-z0-9.\-]+\.gserviceaccount\.com$",
        description="The service's own service account, named in the grant a customer makes on its billing export.",
    )

    service_account_token_uri: str | None = Field(
        None,
        description="Development only: where stored org service-account keys get their tokens (the tests' "
        "local OAuth fake); refused elsewhere.",
    )

    # --- warehouse ---
    warehouse: Literal["duckdb", "bigquery"] = "duckdb"
    duckdb_path: Path = Field(REPO_ROOT / "data" / "convergence.duckdb")
    duckdb_memory_limit: str = Field("2GB", pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$")
    duckdb_threads: int = Field(2, ge=1, le=64)
    bigquery_location: str = "US"
    bigquery_api_endpoint: str | None = None
    bigquery_retry_deadline_seconds: float = Field(
        60.0, gt=0, description="How long the BigQuery client retries a failing call (5xx, rate limits)."
    )
    maximum_bytes_billed: int = Field(100 * 1024**3, ge=1, description="Cap on tenant query bytes (BigQuery).")
    bigquery_price_per_tib_usd: float = Field(
        6.25, ge=0, description="On-demand analysis price per TiB billed (Google's list price), for usage estimates."
    )
    query_timeout_seconds: float = Field(600.0, gt=0)
    google_client_threads: int = Field(
        16, ge=1, le=256, description="Threads for blocking Google client calls (BigQuery, KMS): a pool of their own."
    )
    warehouse_retry_attempts: int = Field(4, ge=1, le=10)
    warehouse_retry_base_seconds: float = Field(0.2, ge=0)

    # --- pipelines ---
    configs_dir: Path = Field(REPO_ROOT / "configs")
    max_run_window_days: int = Field(92, ge=1)
    export_dir: Path | None = Field(
        None, description="Where file exports (GET .../costs/focus) are staged while streamed; default: system temp."
    )
    export_page_rows: int = Field(10_000, ge=100, le=1_000_000, description="Rows per page of a BigQuery export.")
    run_lease_seconds: float = Field(300.0, gt=0, description="A run whose heartbeat is older is 'owner lost'.")
    heartbeat_seconds: float = Field(30.0, gt=0)
    cancel_wait_seconds: float = Field(
        30.0, ge=0, description="How long POST .../runs/{id}/cancel waits for a run of this instance to end."
    )
    step_retry_backoff_seconds: float = Field(2.0, ge=0)
    demo_billing_table: str | None = Field(
        None, description="Local only: billing export used by orgs that set none (default: the demo table)."
    )

    # --- AWS (an org's Data Exports in its own S3 bucket; src/core/aws/) ---
    aws_endpoint_url: str | None = Field(
        None, description="Point the S3 and STS clients elsewhere (local S3 server: the demo, the tests)."
    )
    aws_default_region: str = Field("us-east-1", pattern=r"^[a-z]{2}(-[a-z]+)+-\d$", description="STS region.")
    aws_download_dir: Path | None = Field(
        None, description="Where export files are downloaded for a load (default: the system's temp dir)."
    )
    aws_max_download_bytes: int = Field(
        50 * 1024**3, ge=1, description="Cap on the bytes of export files one run downloads."
    )
    aws_timeout_seconds: float = Field(60.0, gt=0, le=900, description="Connect/read timeout of one S3 or STS call.")

    # --- scheduler and work queue (src/core/services/scheduler.py) ---
    scheduler_loop_enabled: bool | None = Field(
        None, description="In-process trigger + worker loop; unset = on in development only."
    )
    scheduler_loop_interval_seconds: float = Field(30.0, gt=0, description="Pause between two loop rounds.")
    scheduler_workers: int = Field(2, ge=1, le=32, description="Queue items one process runs at once.")
    scheduler_process_default_items: int = Field(10, ge=1, description="process-queue without max_items.")
    scheduler_process_max_items: int = Field(100, ge=1, description="Cap on process-queue's max_items.")
    queue_lease_seconds: float = Field(300.0, gt=0, description="A claimed item is reclaimable after this.")
    queue_backoff_base_seconds: float = Field(60.0, ge=0, description="First retry delay (doubles per attempt).")
    queue_backoff_max_seconds: float = Field(3600.0, ge=0)
    schedule_default_max_attempts: int = Field(3, ge=1, le=10)
    queue_max_quota_requeues: int = Field(
        48, ge=0, le=10_000, description="Times an item waits for a quota (429) before it ends FAILED."
    )

    # --- HTTP ---
    max_request_body_bytes: int = Field(1024 * 1024, ge=1024)
    public_base_url: str = Field("http://127.0.0.1:8000", description="Used in links sent to users.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_public: bool = Field(False, description="Serve GET /metrics without the admin key.")

    # --- notifications ---
    smtp_host: str | None = Field(None, description="SMTP server; unset = email notification steps are SKIPPED.")
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_use_tls: bool = Field(False, description="Implicit TLS from the first byte (SMTPS, usually port 465).")
    smtp_starttls: bool = Field(True, description="Upgrade the connection with STARTTLS (ignored with SMTP_USE_TLS).")
    smtp_from: str = Field("convergence@localhost", min_length=3, max_length=254, pattern=r"^[^@\s<>]+@[^@\s<>]+$")
    smtp_timeout_seconds: float = Field(15.0, gt=0, le=300, description="Per SMTP attempt.")
    webhook_timeout_seconds: float = Field(10.0, gt=0, le=300, description="Per Slack webhook attempt.")

    @field_validator("admin_api_key", "smtp_password", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "kms_key_name",
        "bigquery_api_endpoint",
        "kms_api_endpoint",
        "service_account_email",
        "demo_billing_table",
        "service_account_token_uri",
        "smtp_host",
        "smtp_username",
        "aws_endpoint_url",
        mode="before",
    )
    @classmethod
    def _blank_str_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    # ------------------------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.environment == "development"

    @property
    def scheduler_loop_on(self) -> bool:
        return self.is_local if self.scheduler_loop_enabled is None else self.scheduler_loop_enabled

    @property
    def dataset_suffix(self) -> str:
        return _DATASET_SUFFIX[self.environment]

    def org_dataset(self, org_slug: str) -> str:
        return f"{org_slug}_{self.dataset_suffix}"

    @cached_property
    def admin_key_bytes(self) -> bytes | None:
        return self.admin_api_key.get_secret_value().encode() if self.admin_api_key else None

    def unsafe_reasons(self) -> list[str]:
        """What makes this configuration unfit outside development (empty list = fine)."""
        if self.is_local:
            return []
        reasons = []
        key = self.admin_api_key.get_secret_value() if self.admin_api_key else ""
        if not key:
            reasons.append("ADMIN_API_KEY is not set")
        elif len(key) < 32:
            reasons.append("ADMIN_API_KEY is shorter than 32 characters")
        if self.disable_auth:
            reasons.append("DISABLE_AUTH=true is not allowed")
        if not self.kms_key_name:
            reasons.append("KMS_KEY_NAME is not set")
        if self.warehouse == "duckdb":
            reasons.append("WAREHOUSE=duckdb is not allowed (use bigquery)")
        if self.service_account_token_uri:
            reasons.append("SERVICE_ACCOUNT_TOKEN_URI is for development tests only")
        return reasons
