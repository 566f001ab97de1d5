"""The central dataset and its tables, as ``configs/setup/bootstrap`` defines them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from src.core.config_io import parse_model, read_yaml
from src.core.engine.schema import Schema, TableOptions, load_schema_file, validate_options
from src.core.engine.sql import TableRef
from src.core.errors import ConfigError

BOOTSTRAP_DIR = Path("setup/bootstrap")


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    description: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class BootstrapConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    dataset: DatasetSpec
    tables: dict[str, TableOptions] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class CentralTable:
    name: str
    schema: Schema
    options: TableOptions


class CentralCatalog:
    """Central table names, schemas and options, loaded once from ``configs/``."""

    def __init__(
        self,
        configs_dir: Path,
        project: str,
        *,
        config_file: str = str(BOOTSTRAP_DIR / "config.yml"),
        schemas_dir: str = str(BOOTSTRAP_DIR / "schemas"),
    ) -> None:
        rel = Path(config_file)
        config: BootstrapConfig = parse_model(BootstrapConfig, read_yaml(configs_dir / rel, configs_dir), file=str(rel))
        self.project = project
        self.dataset = config.dataset
        self.tables: dict[str, CentralTable] = {}
        schemas_path = configs_dir / schemas_dir
        for name, options in config.tables.items():
            schema_file = schemas_path / f"{name}.json"
            schema = load_schema_file(schema_file, root=configs_dir)
            validate_options(options, schema, source=str(rel) + f": tables.{name}")
            self.tables[name] = CentralTable(name, schema, options)
        extra = sorted(p.stem for p in schemas_path.glob("*.json") if p.stem not in self.tables)
        if extra:
            raise ConfigError(schemas_dir, extra[0] + ".json", "schema file of a table not listed in config.yml")

    def ref(self, name: str) -> TableRef:
        if name not in self.tables:
            raise KeyError(name)
        return TableRef(self.project, self.dataset.name, name)

    def schema(self, name: str) -> Schema:
        return self.tables[name].schema
