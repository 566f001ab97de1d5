"""Every file under ``configs/`` has a kind, and every kind a validator.

``validate_all`` runs at startup and in the test suite: a file nobody validates, or a bad file,
fails with its path, the field path and the reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from src.core.config_io import parse_model, read_yaml
from src.core.engine.catalog import CentralCatalog
from src.core.engine.schema import load_schema_file
from src.core.errors import ConfigError
from src.core.pipeline.loader import PipelineStore, is_pipeline_file
from src.core.pipeline.registry import ProcessorRegistry, UnknownProcessorError
from src.core.plans import Plans
from src.core.processors.destination import load_templates
from src.core.processors.focus.build import check_mapping
from src.core.processors.setup.organizations.onboarding import OnboardingConfig


class ProcessorConfigFile(BaseModel):
    """``configs/<provider>/<processor>/config.yml``: a processor's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    processor: str
    status: Literal["active", "planned"] = "active"
    description: str | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)


class DatasetTypesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    environments: dict[Literal["development", "staging", "production"], str]
    dataset_types: dict[str, dict[str, Any]]


def _json_schema(path: Path, root: Path, registry: ProcessorRegistry) -> None:
    load_schema_file(path, root=root)


def _schema_templates(path: Path, root: Path, registry: ProcessorRegistry) -> None:
    load_templates.cache_clear()
    load_templates(root, path.relative_to(root))


def _processor_config(path: Path, root: Path, registry: ProcessorRegistry) -> None:
    rel = str(path.relative_to(root))
    parsed: ProcessorConfigFile = parse_model(ProcessorConfigFile, read_yaml(path, root), file=rel)
    expected = ".".join(path.relative_to(root).parent.parts)
    if parsed.processor != expected:
        raise ConfigError(rel, "processor", f"must be {expected!r} (the file's folder)")
    if parsed.status == "active":
        try:
            processor = registry.get(parsed.processor)
        except UnknownProcessorError as exc:
            raise ConfigError(rel, "processor", str(exc)) from None
        if processor.check_defaults is not None:  # the processor checks its own defaults
            processor.check_defaults(parsed.defaults, root, rel)
        elif processor.config_model is not None:
            fields = processor.config_model.model_fields
            unknown = sorted(set(parsed.defaults) - set(fields))
            if unknown:
                raise ConfigError(rel, f"defaults.{unknown[0]}", f"not a setting of {parsed.processor}")


def _focus_mapping(path: Path, root: Path, registry: ProcessorRegistry) -> None:
    check_mapping(root, str(path.relative_to(root)))


def _bootstrap(path: Path, root: Path, registry: ProcessorRegistry) -> None:
    CentralCatalog(root, "convergence-check")


def _onboarding(path: Path, root: Path, registry: ProcessorRegistry) -> None:
    parse_model(OnboardingConfig, read_yaml(path, root), file=str(path.relative_to(root)))


def _plans(path: Path, root: Path, registry: ProcessorRegistry) -> None:
    Plans(root)


def _dataset_types(path: Path, root: Path, registry: ProcessorRegistry) -> None:
    parse_model(DatasetTypesFile, read_yaml(path, root), file=str(path.relative_to(root)))


def _pipeline(path: Path, root: Path, registry: ProcessorRegistry) -> None:
    PipelineStore(root, registry).load_file(path)


Validator = Callable[[Path, Path, ProcessorRegistry], None]

# (glob relative to configs/, validator); the first match wins.
KINDS: list[tuple[str, Validator]] = [
    ("setup/bootstrap/config.yml", _bootstrap),
    ("setup/bootstrap/schemas/*.json", _json_schema),
    ("setup/organizations/onboarding/config.yml", _onboarding),
    ("setup/organizations/onboarding/schema.json", _json_schema),
    ("gcp/bq_etl/schema_template.json", _schema_templates),
    ("aws/s3_data_loader/schema_template.json", _schema_templates),
    ("gcp/cost/billing_export_schema.json", _json_schema),
    ("system/subscription_plans.yml", _plans),
    ("system/dataset_types.yml", _dataset_types),
    ("*/*/config.yml", _processor_config),
    ("aws/cost/cur2_columns.json", _json_schema),
    ("focus/focus_cost_schema.json", _json_schema),
    ("focus/*_focus_mapping.sql", _focus_mapping),
]


def kind_of(rel: Path) -> Validator | None:
    for pattern, validator in KINDS:
        if fnmatch(str(rel), pattern):
            return validator
    return _pipeline if is_pipeline_file(rel) else None


def validate_all(root: Path, registry: ProcessorRegistry, *, store: PipelineStore | None = None) -> list[str]:
    """Validate every file under ``root``; returns the relative paths checked. With ``store``, the
    pipelines validated are kept in it (start-up reads each file once)."""
    checked = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        validator = kind_of(rel)
        if validator is None:
            raise ConfigError(str(rel), "", "unknown kind of config file (add it to config_files.KINDS)")
        if path.suffix == ".json":
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ConfigError(str(rel), f"line {exc.lineno}", f"invalid JSON: {exc.msg}") from None
        if store is not None and validator is _pipeline:
            store.add(store.load_file(path))
        else:
            validator(path, root, registry)
        checked.append(str(rel))
    return checked
