"""Everything built once per process (in the app's lifespan) and handed to routers and processors."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from src.app.config import Settings
from src.core.engine.base import RetryPolicy, Warehouse
from src.core.engine.catalog import CentralCatalog
from src.core.engine.factory import build_warehouse
from src.core.engine.repositories.costs import CostRepository
from src.core.engine.repositories.keys import KeyRepository
from src.core.engine.repositories.orgs import OrgRepository
from src.core.engine.repositories.quotas import QuotaRepository
from src.core.engine.repositories.runs import RunRepository
from src.core.pipeline.config_files import validate_all
from src.core.pipeline.loader import PipelineStore
from src.core.processors.registry import ProcessorRegistry
from src.core.security.key_cache import KeyCache
from src.core.security.kms import Encryptor, build_encryptor
from src.core.security.rate_limit import SlidingWindowLimiter
from src.core.services.cache import TtlCache
from src.core.services.locks import KeyedLocks
from src.core.services.plans import Plans

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
    keys: KeyRepository
    quotas: QuotaRepository
    auth_failures: SlidingWindowLimiter
    admin_calls: SlidingWindowLimiter
    org_cache: TtlCache[dict[str, Any]] = field(default_factory=lambda: TtlCache(0))
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    bootstrapped: bool = False  # all central tables seen to exist (see org_checks.missing_central_tables)
    executor: PipelineExecutor = field(init=False)
    run_service: RunService = field(init=False)
    scheduler: SchedulerService = field(init=False)  # schedules, work queue, trigger and workers
    org_warehouses: OrgWarehouses = field(init=False)  # the warehouse for an org's tenant queries


def build_services(settings: Settings) -> Services:
    """Load and validate configs, and build the clients (nothing is connected yet)."""
    from src.core.pipeline.executor import PipelineExecutor
    from src.core.services.credentials import OrgWarehouses
    from src.core.services.runs import RunService
    from src.core.services.scheduler import SchedulerService

    registry = ProcessorRegistry()
    validate_all(settings.configs_dir, registry)
    store = PipelineStore(settings.configs_dir, registry)
    store.load_all()
    catalog = CentralCatalog(settings.configs_dir, settings.gcp_project_id)
    warehouse = build_warehouse(settings)
    retry = RetryPolicy(settings.warehouse_retry_attempts, settings.warehouse_retry_base_seconds)
    services = Services(
        settings=settings,
        warehouse=warehouse,
        catalog=catalog,
        plans=Plans(settings.configs_dir),
        kms=build_encryptor(settings),
        key_cache=KeyCache(settings.key_cache_ttl_seconds),
        org_cache=TtlCache(settings.key_cache_ttl_seconds),
        registry=registry,
        store=store,
        orgs=OrgRepository(warehouse, catalog, retry=retry),
        runs=RunRepository(warehouse, catalog, retry=retry),
        costs=CostRepository(warehouse),
        keys=KeyRepository(warehouse, catalog),
        quotas=QuotaRepository(warehouse, catalog, retry=retry),
        auth_failures=SlidingWindowLimiter(settings.auth_failure_limit, settings.auth_failure_window_seconds),
        admin_calls=SlidingWindowLimiter(settings.admin_rate_limit, 60.0),
    )
    services.executor = PipelineExecutor(registry=registry, services=services)
    services.run_service = RunService(services)
    services.scheduler = SchedulerService(services, retry=retry)
    services.org_warehouses = OrgWarehouses(services, ttl_seconds=settings.key_cache_ttl_seconds)
    return services


def invalidate_org(services: Services, org_slug: str) -> None:
    """Forget what this instance cached about an org (after a change to its profile or keys)."""
    services.org_cache.invalidate(org_slug)
    services.key_cache.invalidate_org(org_slug)
