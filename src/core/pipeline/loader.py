"""Loads and validates every pipeline under ``configs/`` once, at startup.

A pipeline file is any ``.yml`` that is not a ``config.yml`` and not under ``system/``. A bad file
fails with its path, the field path and the reason. Request paths are looked up in the loaded
map, never on the file system, so a request cannot name a file outside ``configs/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from src.core.errors import ConfigError, NotFoundError
from src.core.pipeline.models import PLACEHOLDER_RE, PipelineSpec
from src.core.processors.registry import ProcessorRegistry, UnknownProcessorError

SEGMENT_RE = re.compile(r"^[a-z0-9_]{1,64}$")


def read_yaml(path: Path, root: Path) -> Any:
    rel = str(path.relative_to(root))
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise ConfigError(rel, where, f"invalid YAML: {getattr(exc, 'problem', exc)}") from None


def validation_to_config_error(file: str, exc: ValidationError, prefix: str = "") -> ConfigError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return ConfigError(file, f"{prefix}{loc}".strip("."), err["msg"])


def parse_model(model: type[BaseModel], raw: Any, *, file: str, prefix: str = "") -> Any:
    try:
        return model.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise validation_to_config_error(file, exc, prefix) from None


def placeholders(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield from PLACEHOLDER_RE.findall(value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from placeholders(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from placeholders(item)


def sql_placeholders(value: Any, key: str = "") -> Iterator[str]:
    """Placeholders inside SQL texts of a step config (fields named ``query``/``sql`` or ``*_query``)."""
    if isinstance(value, str):
        if key in {"query", "sql"} or key.endswith("_query"):
            yield from PLACEHOLDER_RE.findall(value)
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from sql_placeholders(item, str(name))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from sql_placeholders(item, key)


@dataclass(frozen=True, slots=True)
class LoadedPipeline:
    path: str  # relative to configs/, without extension, e.g. "gcp/cost/cost_billing"
    file: str
    spec: PipelineSpec
    step_configs: dict[str, Any]  # step_id -> parsed processor config


def is_pipeline_file(rel: Path) -> bool:
    return (
        rel.suffix in {".yml", ".yaml"} and rel.name not in {"config.yml", "config.yaml"} and rel.parts[0] != "system"
    )


class PipelineStore:
    def __init__(self, root: Path, registry: ProcessorRegistry) -> None:
        self.root = root
        self.registry = registry
        self._pipelines: dict[str, LoadedPipeline] = {}

    def load_all(self) -> None:
        found: dict[str, LoadedPipeline] = {}
        for file in sorted(self.root.rglob("*")):
            rel = file.relative_to(self.root)
            if file.is_file() and is_pipeline_file(rel):
                loaded = self.load_file(file)
                found[loaded.path] = loaded
        self._pipelines = found

    def load_file(self, file: Path) -> LoadedPipeline:
        rel = str(file.relative_to(self.root))
        raw = read_yaml(file, self.root)
        spec: PipelineSpec = parse_model(PipelineSpec, raw, file=rel)
        known = spec.variable_names()
        bad = sorted({p for p in placeholders(spec.pipeline_id) if p not in known})
        if bad:
            raise ConfigError(rel, "pipeline_id", f"unknown placeholder {{{bad[0]}}}")
        step_configs: dict[str, Any] = {}
        for index, step in enumerate(spec.steps):
            where = f"steps.{index}"
            try:
                processor = self.registry.get(step.ps_type)
            except UnknownProcessorError as exc:
                raise ConfigError(rel, f"{where}.ps_type", str(exc)) from None
            bad = sorted({p for p in placeholders(step.config) if p not in known | processor.template_variables})
            if bad:
                raise ConfigError(rel, f"{where}.config", f"unknown placeholder {{{bad[0]}}}")
            pasted = sorted(set(sql_placeholders(step.config)) & set(spec.parameters))
            if pasted:
                raise ConfigError(
                    rel,
                    f"{where}.config",
                    f"request parameter {{{pasted[0]}}} cannot be pasted into SQL text; bind it as @{pasted[0]}",
                )
            parsed = (
                parse_model(processor.config_model, step.config, file=rel, prefix=f"{where}.config.")
                if processor.config_model
                else step.config
            )
            if processor.check_config is not None:
                processor.check_config(parsed, self.root, rel, f"{where}.config")
            step_configs[step.step_id] = parsed
        path = str(Path(rel).with_suffix(""))
        return LoadedPipeline(path=path, file=rel, spec=spec, step_configs=step_configs)

    def all(self) -> list[LoadedPipeline]:
        return list(self._pipelines.values())

    def get(self, path: str) -> LoadedPipeline:
        found = self._pipelines.get(path)
        if found is None:
            raise NotFoundError(f"no pipeline {path!r}", code="pipeline_not_found")
        return found

    def runnable(self, provider: str, domain: str, pipeline: str) -> LoadedPipeline:
        """The org-runnable pipeline at ``configs/{provider}/{domain}/{pipeline}.yml`` or 404."""
        path = f"{provider}/{domain}/{pipeline}"
        if not all(SEGMENT_RE.fullmatch(s) for s in (provider, domain, pipeline)):
            raise NotFoundError(f"no runnable pipeline {path!r}", code="pipeline_not_found")
        found = self._pipelines.get(path)
        if found is None or not found.spec.org_runnable:
            raise NotFoundError(f"no runnable pipeline {path!r}", code="pipeline_not_found")
        return found
