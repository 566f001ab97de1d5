"""``setup.organizations.onboarding``: dataset, key, subscription and quota of a new organization.

Order: the same checks as the dry-run (409 before anything is written); the org dataset and its
metadata table (idempotent, harmless if a later step fails); then profile, key, subscription and
quota rows, each one idempotent statement with the profile last (see OrgRepository.onboard).
The API key's plaintext leaves only in the result.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from src.core.config_io import parse_model, read_yaml
from src.core.engine.repositories.orgs import ExtraRow, NewKey, NewOrg
from src.core.engine.schema import load_schema_file
from src.core.pipeline.context import StepContext
from src.core.security import scopes
from src.core.security.api_keys import generate_api_key, hash_api_key, key_prefix, new_key_id
from src.core.security.kms import encrypt_text


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    config_file: str
    metadata_schema_file: str


class DatasetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name_template: str
    description_template: str
    labels: dict[str, str] = Field(default_factory=dict)


class OnboardingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dataset: DatasetConfig
    metadata_table: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    api_key_scopes: tuple[str, ...] = Field(min_length=1)

    @field_validator("api_key_scopes")
    @classmethod
    def _known_scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if bad := scopes.unknown(value):
            raise ValueError(f"unknown scopes {bad}; known: {list(scopes.ALL)}")
        return value


class OnboardingProcessor:
    async def execute(self, step_config: Config, context: StepContext) -> dict[str, Any]:
        s = context.services
        v = context.variables
        report = await s.onboarding_checks(v)
        if report.first_error is not None:
            raise report.first_error
        root = s.settings.configs_dir
        config: OnboardingConfig = parse_model(
            OnboardingConfig, read_yaml(root / step_config.config_file, root), file=step_config.config_file
        )
        org_slug: str = v["org_slug"]
        dataset = context.render(config.dataset.name_template)
        labels = {**config.dataset.labels, "org": org_slug, "environment": s.settings.environment}
        dataset_created = await s.warehouse.create_dataset(
            dataset, labels=labels, description=context.render(config.dataset.description_template)
        )
        metadata_ref = s.warehouse.table(dataset, config.metadata_table)
        metadata_schema = load_schema_file(root / step_config.metadata_schema_file, root=root)
        await s.warehouse.create_table(metadata_ref, metadata_schema)

        plan = s.plans.get(v["subscription_plan"])
        api_key = generate_api_key(org_slug)
        key_id = new_key_id()
        now = datetime.now(UTC)
        await s.orgs.onboard(
            NewOrg(
                org_slug=org_slug,
                company_name=v["company_name"],
                admin_email=v["admin_email"],
                subscription_plan=v["subscription_plan"],
                org_dataset=dataset,
                billing_export_table=v.get("billing_export_table"),
                daily_limit=plan.daily_run_limit,
                monthly_limit=plan.monthly_run_limit,
                concurrent_limit=plan.concurrent_run_limit,
            ),
            NewKey(
                key_id=key_id,
                key_hash=hash_api_key(api_key),
                key_prefix=key_prefix(api_key),
                encrypted_key=await encrypt_text(s.kms, api_key, org_slug=org_slug, purpose="api_key"),
                kms_key_name=s.kms.key_name,
                created_by=v.get("trigger_by") or "admin",
                scopes=config.api_key_scopes,
            ),
            extra=ExtraRow(
                ref=metadata_ref,
                schema=metadata_schema,
                row={
                    "org_slug": org_slug,
                    "company_name": v["company_name"],
                    "environment": s.settings.environment,
                    "dataset_id": dataset,
                    "created_by": v.get("trigger_by") or "admin",
                    "created_at": now,
                },
            ),
            today=now.date(),
        )
        return {
            "status": "COMPLETED",
            "org_slug": org_slug,
            "api_key": api_key,
            "key_id": key_id,
            "key_name": "default",
            "dataset_id": dataset,
            "dataset_created": dataset_created,
            "subscription_plan": v["subscription_plan"],
            "limits": {
                "daily_run_limit": plan.daily_run_limit,
                "monthly_run_limit": plan.monthly_run_limit,
                "concurrent_run_limit": plan.concurrent_run_limit,
            },
            "billing_export_table": v.get("billing_export_table"),
        }


def get_engine() -> OnboardingProcessor:
    return OnboardingProcessor()
