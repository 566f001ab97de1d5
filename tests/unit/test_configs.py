"""Every file under configs/ loads and validates; bad files fail with file, field and reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from src.core.engine.catalog import CentralCatalog
from src.core.errors import ConfigError
from src.core.pipeline.loader import PipelineStore
from src.core.pipeline.registry import ProcessorRegistry
from src.core.services.config_files import validate_all
from tests.conftest import CENTRAL_TABLES
from tests.server import REPO

CONFIGS = REPO / "configs"


def test_every_config_file_validates() -> None:
    checked = validate_all(CONFIGS, ProcessorRegistry())
    on_disk = sorted(str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*") if p.is_file())
    assert checked == on_disk
    for expected in (
        "setup/bootstrap/pipeline.yml",
        "setup/bootstrap/config.yml",
        "setup/organizations/onboarding/pipeline.yml",
        "setup/organizations/onboarding/config.yml",
        "setup/organizations/onboarding/schema.json",
        "setup/organizations/dryrun/pipeline.yml",
        "gcp/cost/cost_billing.yml",
        "gcp/bq_etl/schema_template.json",
        "aws/s3_data_loader/config.yml",
        "notify_systems/email_notification/config.yml",
        "notify_systems/slack_notification/config.yml",
        "system/dataset_types.yml",
    ):
        assert expected in checked


def test_central_tables_are_the_documented_eleven() -> None:
    catalog = CentralCatalog(CONFIGS, "convergence-local")
    assert list(catalog.tables) == CENTRAL_TABLES
    readme = (REPO / "README.md").read_text()
    claude = (REPO / "CLAUDE.md").read_text()
    for doc in (readme, claude):
        assert f"{len(CENTRAL_TABLES)} central tables" in doc
        for table in CENTRAL_TABLES:
            assert table in doc


def test_only_org_runnable_pipelines_are_reachable() -> None:
    store = PipelineStore(CONFIGS, ProcessorRegistry())
    store.load_all()
    runnable = sorted(p.path for p in store.all() if p.spec.org_runnable)
    assert "gcp/cost/cost_billing" in runnable
    assert not any(p.startswith("setup/") for p in runnable)


def _broken_copy(tmp_path: Path, rel: str, mutate: object) -> Path:
    root = tmp_path / "configs"
    shutil.copytree(CONFIGS, root)
    path = root / rel
    data = yaml.safe_load(path.read_text())
    mutate(data)  # type: ignore[operator]
    path.write_text(yaml.safe_dump(data))
    return root


@pytest.mark.parametrize(
    ("mutation", "field", "reason"),
    [
        (lambda d: d["steps"][0].update(surprise=1), "steps.0.surprise", "Extra inputs"),
        (lambda d: d["steps"][0].update(on_failure="explode"), "steps.0.on_failure", "Input should be"),
        (lambda d: d["steps"][0].update(ps_type="os.system"), "steps.0.ps_type", "no processor"),
        (lambda d: d["steps"][0].update(ps_type="../../etc"), "steps.0.ps_type", "String should match"),
        (lambda d: d["steps"][0]["config"]["destination"].update(write_mode="upsert"), "write_mode", "Input should be"),
        (lambda d: d["steps"][0]["config"]["source"].update(query="SELECT {nope}"), "steps.0.config", "{nope}"),
        (lambda d: d["variables"].update(org_slug="evil"), "", "cannot redefine built-in"),
        (lambda d: d["steps"][0].update(depends_on=["later"]), "", "not an earlier step"),
    ],
)
def test_bad_pipeline_names_file_field_and_reason(tmp_path: Path, mutation: object, field: str, reason: str) -> None:
    root = _broken_copy(tmp_path, "gcp/cost/cost_billing.yml", mutation)
    with pytest.raises(ConfigError) as caught:
        validate_all(root, ProcessorRegistry())
    assert caught.value.file == "gcp/cost/cost_billing.yml"
    assert field in caught.value.field
    assert reason in caught.value.reason


def test_bad_schema_file_is_named(tmp_path: Path) -> None:
    root = tmp_path / "configs"
    shutil.copytree(CONFIGS, root)
    (root / "setup/bootstrap/schemas/org_profiles.json").write_text('[{"name": "x", "type": "TEXT"}]')
    with pytest.raises(ConfigError) as caught:
        validate_all(root, ProcessorRegistry())
    assert "org_profiles.json" in caught.value.file
    assert "type" in caught.value.field


def test_unknown_config_file_kind_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "configs"
    shutil.copytree(CONFIGS, root)
    (root / "system" / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match="unknown kind"):
        validate_all(root, ProcessorRegistry())


def test_request_parameters_cannot_be_pasted_into_sql(tmp_path: Path) -> None:
    def paste(d: dict) -> None:  # type: ignore[type-arg]
        d["parameters"] = {"table": {"type": "string"}}
        d["steps"][0]["config"]["source"]["query"] += " AND b.project.id != '{table}'"

    root = _broken_copy(tmp_path, "gcp/cost/cost_billing.yml", paste)
    with pytest.raises(ConfigError, match="cannot be pasted into SQL text"):
        validate_all(root, ProcessorRegistry())
