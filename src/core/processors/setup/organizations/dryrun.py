"""``setup.organizations.dryrun``: every onboarding check, nothing written."""

from __future__ import annotations

from typing import Any

from src.core.pipeline.context import StepContext


class DryRunProcessor:
    async def execute(self, step_config: dict[str, Any], context: StepContext) -> dict[str, Any]:
        report = await context.services.onboarding_checks(context.variables)
        if report.first_error is not None:
            report.first_error.details["checks"] = report.checks
            raise report.first_error
        return {"status": "COMPLETED", "valid": True, "checks": report.checks}


def get_engine() -> DryRunProcessor:
    return DryRunProcessor()
