"""Subscription plans, from ``configs/system/subscription_plans.yml``."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from src.core.config_io import parse_model, read_yaml
from src.core.errors import ValidationFailedError

PLANS_FILE = Path("system/subscription_plans.yml")


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str | None = None
    daily_run_limit: int = Field(ge=0)
    monthly_run_limit: int = Field(ge=0)
    concurrent_run_limit: int = Field(ge=0)


class PlansFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    default_plan: str
    plans: dict[str, Plan] = Field(min_length=1)

    @model_validator(mode="after")
    def _default_exists(self) -> PlansFile:
        if self.default_plan not in self.plans:
            raise ValueError(f"default_plan {self.default_plan!r} is not a plan")
        return self


class Plans:
    def __init__(self, configs_dir: Path) -> None:
        self._file: PlansFile = parse_model(
            PlansFile, read_yaml(configs_dir / PLANS_FILE, configs_dir), file=str(PLANS_FILE)
        )

    @property
    def names(self) -> list[str]:
        return list(self._file.plans)

    @property
    def default(self) -> str:
        return self._file.default_plan

    def get(self, name: str) -> Plan:
        plan = self._file.plans.get(name)
        if plan is None:
            raise ValidationFailedError(
                f"unknown subscription_plan {name!r}; choose one of {', '.join(self.names)}", code="invalid_plan"
            )
        return plan
