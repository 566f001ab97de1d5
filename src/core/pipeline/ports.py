"""What a step may use while it runs, declared here and provided by the services container.

The pipeline layer (executor, processors) depends on this Protocol, never on the services package:
``src/core/services/container.py`` builds an object that satisfies it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from src.core.aws.client import AwsExport
from src.core.engine.base import Warehouse
from src.core.engine.repositories.orgs import OrgRepository
from src.core.engine.sql import TableRef
from src.core.errors import ServiceError
from src.core.plans import Plans
from src.core.security.kms import Encryptor
from src.core.settings import Settings


@dataclass(slots=True)
class CheckReport:
    """Named checks with their outcome; the first failed check's error is what a caller raises."""

    checks: list[dict[str, Any]] = field(default_factory=list)
    first_error: ServiceError | None = None

    def add(self, name: str, error: ServiceError | None, ok_message: str) -> None:
        self.checks.append({"check": name, "passed": error is None, "message": error.message if error else ok_message})
        if error is not None and self.first_error is None:
            self.first_error = error

    @property
    def passed(self) -> bool:
        return self.first_error is None


class StepServices(Protocol):
    settings: Settings
    warehouse: Warehouse  # the service's own warehouse (central tables, org datasets)
    kms: Encryptor
    plans: Plans
    orgs: OrgRepository

    async def warehouse_for(self, org_slug: str | None) -> Warehouse:
        """The warehouse for an org's tenant queries (its own service account where it stored one)."""

    async def org_profile(self, org_slug: str) -> dict[str, Any]:
        """The org's profile with its limits (404 if unknown)."""

    async def org_webhook_url(self, org_slug: str) -> str | None:
        """The org's stored Slack webhook, decrypted (None if none)."""

    async def onboarding_checks(self, variables: Mapping[str, Any]) -> CheckReport:
        """Every check onboarding needs to pass, without writing anything."""

    async def move_renamed_table(self, old: TableRef, new: TableRef, *, day_column: str | None) -> bool:
        """Move a table to its new name, keeping every row once; True if something was moved."""

    async def aws_export_for(self, org_slug: str) -> AwsExport:
        """The org's AWS Data Export and a bucket client with the org's own credentials (422 when
        either is not configured; never the service's own AWS identity)."""
