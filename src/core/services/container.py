"""Everything built once per process (in the app's lifespan) and handed to routers and processors.

``Services`` is what the routers call and what satisfies the pipeline layer's ``StepServices``
(``src/core/pipeline/ports.py``): processors reach the services only through that Protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from src.core.aws.client import AwsClients, AwsExport
from src.core.blocking import BlockingCalls
from src.core.engine.base import RetryPolicy, Warehouse
from src.core.engine.catalog import CentralCatalog
from src.core.engine.factory import build_warehouse
from src.core.engine.repositories.costs import CostRepository
from src.core.engine.repositories.focus import FocusRepository
from src.core.engine.repositories.keys import KeyRepository
from src.core.engine.repositories.orgs import OrgRepository
from src.core.engine.repositories.quotas import QuotaRepository
from src.core.engine.repositories.runs import RunRepository
from src.core.engine.sql import TableRef
from src.core.metrics import Metrics
from src.core.pipeline.loader import PipelineStore
from src.core.pipeline.ports import CheckReport
from src.core.pipeline.registry import ProcessorRegistry
from src.core.plans import Plans
from src.core.security.key_cache import KeyCache, UnknownKeys
from src.core.security.kms import Encryptor, build_encryptor
from src.core.security.rate_limit import SlidingWindowLimiter, TokenBucket
from src.core.services.cache import SingleFlight, TtlCache
from src.core.services.config_files import validate_all
from src.core.services.key_use import KeyUse
from src.core.settings import Settings

if TYPE_CHECKING:
    from src.core.pipeline.executor import PipelineExecutor
    from src.core.services.credentials import OrgWarehouses
    from src.core.services.runs import RunService
    from src.core.services.scheduler import SchedulerService

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    warehouse: Warehouse
    catalog: CentralCatalog
    plans: Plans
    kms: Encryptor
    key_cache: KeyCache
    registry: ProcessorRegistry
    store: PipelineStore
    orgs: OrgRepository
    runs: RunRepository
    costs: CostRepository
    focus: FocusRepository
    keys: KeyRepository
    quotas: QuotaRepository
    auth_failures: SlidingWindowLimiter
    admin_calls: SlidingWindowLimiter
    aws: AwsClients  # per-org S3/STS clients (the org's own credentials)
    unknown_keys: UnknownKeys = field(default_factory=lambda: UnknownKeys(0, 0))  # negative cache (bounded)
    key_lookups: TokenBucket = field(default_factory=lambda: TokenBucket(0, 1))  # global budget of key lookups
    metrics: Metrics = field(default_factory=Metrics)
    org_cache: TtlCache[dict[str, Any]] = field(default_factory=lambda: TtlCache(0))
    org_json: TtlCache[bytes] = field(default_factory=lambda: TtlCache(0))  # rendered profiles (hot GET)
    lookups: SingleFlight[Any] = field(default_factory=SingleFlight)  # concurrent cache misses share one read
    readiness_result: tuple[float, dict[str, Any]] | None = None  # (measured at, body): services/readiness.py
    bootstrapped: bool = False  # all central tables seen to exist (see org_checks.missing_central_tables)
    executor: PipelineExecutor = field(init=False)
    run_service: RunService = field(init=False)
    scheduler: SchedulerService = field(init=False)  # schedules, work queue, trigger and workers
    org_warehouses: OrgWarehouses = field(init=False)  # the warehouse for an org's tenant queries
    key_use: KeyUse = field(init=False)  # last use of keys, written in batches

    # --- StepServices (what a processor may use) ------------------------------------------------
    async def warehouse_for(self, org_slug: str | None) -> Warehouse:
        return await self.org_warehouses.for_org(org_slug)

    async def org_profile(self, org_slug: str) -> dict[str, Any]:
        from src.core.services.orgs import get_org

        return await get_org(self, org_slug)

    async def org_webhook_url(self, org_slug: str) -> str | None:
        from src.core.services.notifications import org_webhook_url

        return await org_webhook_url(self, org_slug)

    async def onboarding_checks(self, variables: Mapping[str, Any]) -> CheckReport:
        from src.core.services.org_checks import check_onboarding

        return await check_onboarding(self, variables)

    async def move_renamed_table(self, old: TableRef, new: TableRef, *, day_column: str | None) -> bool:
        from src.core.services.table_renames import move_table

        return await move_table(self.warehouse, old, new, day_column=day_column)

    async def aws_export_for(self, org_slug: str) -> AwsExport:
        from src.core.services.aws_source import aws_export_for

        return await aws_export_for(self, org_slug)


def build_services(settings: Settings, *, metrics: Metrics | None = None) -> Services:
    """Load and validate configs, and build the clients (nothing is connected yet)."""
    from src.core.pipeline.executor import PipelineExecutor
    from src.core.services.credentials import OrgWarehouses
    from src.core.services.runs import RunService
    from src.core.services.scheduler import SchedulerService

    registry = ProcessorRegistry()
    store = PipelineStore(settings.configs_dir, registry)
    validate_all(settings.configs_dir, registry, store=store)
    catalog = CentralCatalog(settings.configs_dir, settings.gcp_project_id)
    calls = BlockingCalls(settings.google_client_threads)  # Google client calls: a bounded pool of their own
    warehouse = build_warehouse(settings, calls)
    metrics = metrics or Metrics()
    warehouse.observe_statement = metrics.count_statement
    retry = RetryPolicy(settings.warehouse_retry_attempts, settings.warehouse_retry_base_seconds)
    services = Services(
        settings=settings,
        warehouse=warehouse,
        catalog=catalog,
        plans=Plans(settings.configs_dir),
        kms=build_encryptor(settings, calls),
        key_cache=KeyCache(settings.key_cache_ttl_seconds),
        org_cache=TtlCache(settings.key_cache_ttl_seconds),
        org_json=TtlCache(settings.key_cache_ttl_seconds),
        registry=registry,
        store=store,
        orgs=OrgRepository(warehouse, catalog, retry=retry),
        runs=RunRepository(warehouse, catalog, retry=retry),
        costs=CostRepository(warehouse),
        focus=FocusRepository(warehouse),
        keys=KeyRepository(warehouse, catalog),
        quotas=QuotaRepository(warehouse, catalog, retry=retry),
        auth_failures=SlidingWindowLimiter(settings.auth_failure_limit, settings.auth_failure_window_seconds),
        admin_calls=SlidingWindowLimiter(settings.admin_rate_limit, 60.0),
        unknown_keys=UnknownKeys(settings.unknown_key_cache_seconds, settings.unknown_key_cache_size),
        key_lookups=TokenBucket(settings.key_lookup_rate, settings.key_lookup_burst),
        aws=AwsClients(settings),
        metrics=metrics,
    )
    services.executor = PipelineExecutor(registry=registry, services=services)
    services.run_service = RunService(services)
    services.scheduler = SchedulerService(services, retry=retry)
    services.org_warehouses = OrgWarehouses(services, ttl_seconds=settings.key_cache_ttl_seconds)
    services.key_use = KeyUse(services.keys, interval_seconds=settings.key_touch_interval_seconds)
    return services


def invalidate_org(services: Services, org_slug: str) -> None:
    """Forget what this instance cached about an org (after a change to its profile or keys)."""
    services.org_cache.invalidate(org_slug)
    services.org_json.invalidate(org_slug)
    services.key_cache.invalidate_org(org_slug)
