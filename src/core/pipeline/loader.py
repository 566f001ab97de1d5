"""Loads and validates every pipeline under ``configs/`` once, at startup.

A pipeline file is any ``.yml`` that is not a ``config.yml`` and not under ``system/``. A bad file
fails with its path, the field path and the reason. Request paths are looked up in the loaded
map, never on the file system, so a request cannot name a file outside ``configs/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.core.config_io import parse_model, read_yaml
from src.core.errors import ConfigError, NotFoundError
from src.core.pipeline.models import PipelineSpec
from src.core.pipeline.registry import ProcessorRegistry, UnknownProcessorError
from src.core.placeholders import placeholders, sql_placeholders

SEGMENT_RE = re.compile(r"^[a-z0-9_]{1,64}$")


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

    def add(self, loaded: LoadedPipeline) -> None:
        self._pipelines[loaded.path] = loaded

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
