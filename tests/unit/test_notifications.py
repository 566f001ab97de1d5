"""Notification building blocks: webhook URL safety and masking, templates, defaults, retries."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from src.core.errors import ConfigError
from src.core.notify.delivery import DeliveryError, deliver
from src.core.notify.email import DEFAULT_BODY, DEFAULT_SUBJECT, EmailConfig, build_message
from src.core.notify.slack import DEFAULT_TEXT, SlackConfig, payload
from src.core.notify.templates import DEFAULTS_VARIABLES, render, run_values, unknown_placeholders
from src.core.notify.webhook_url import UnsafeWebhookError, mask_webhook_url, resolve_checked
from src.core.pipeline.registry import ProcessorRegistry
from src.core.run_types import RunInfo, RunState, StepOutcome
from src.core.services.config_files import validate_all
from src.core.settings import Settings
from tests.server import REPO

CONFIGS = REPO / "configs"


# --- webhook URLs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.slack.com/services/T0/B0/x",  # http to a non-loopback host (refused before any DNS)
        "http://93.184.215.14/hook",
        "https://10.0.0.1/hook",
        "https://192.168.1.1/hook",
        "https://172.16.5.4/hook",
        "https://169.254.169.254/computeMetadata/v1/",  # cloud metadata (link-local)
        "https://100.64.0.1/hook",  # shared address space
        "https://0.0.0.0/hook",
        "https://[::ffff:10.0.0.1]/hook",  # IPv4-mapped private
        "https://[fd00:ec2::254]/hook",  # unique-local (AWS metadata over IPv6)
        "https://[fe80::1]/hook",
        "https://224.0.0.1/hook",
        "https://user:secret@8.8.8.8/hook",
        "ftp://8.8.8.8/hook",
        "https:///no-host",
        "not a url",
    ],
)
def test_unsafe_webhook_urls_are_refused_without_connecting(url: str) -> None:
    with pytest.raises(UnsafeWebhookError) as caught:
        asyncio.run(resolve_checked(url, allow_loopback=True))
    assert url not in caught.value.message
    assert caught.value.status_code == 422


@pytest.mark.parametrize("url", ["https://127.0.0.1/x", "http://127.0.0.1:9/x", "http://localhost/x", "http://[::1]/x"])
def test_loopback_only_in_development(url: str) -> None:
    assert asyncio.run(resolve_checked(url, allow_loopback=True))
    with pytest.raises(UnsafeWebhookError):
        asyncio.run(resolve_checked(url, allow_loopback=False))


def test_a_public_address_is_accepted() -> None:
    assert asyncio.run(resolve_checked("https://8.8.8.8/services/x", allow_loopback=False)) == ["8.8.8.8"]


def test_masking_keeps_enough_to_recognise_and_not_to_use() -> None:
    url = "https://hooks.slack.com/services/T000AAAA/B000BBBB/XXXXXXXXXXXXXXXXXXXXabcd"
    masked = mask_webhook_url(url)
    assert masked == "https://hooks.slack.com/services/T000…/…abcd"
    assert "B000BBBB" not in masked and "XXXXXXXX" not in masked
    assert mask_webhook_url("http://127.0.0.1:8080/hook/short") == "http://127.0.0.1:8080/hook/…"


# --- templates -----------------------------------------------------------------------------------


def _state() -> RunState:
    state = RunState(started_at=datetime.now(UTC) - timedelta(seconds=3))
    state.steps["load"] = StepOutcome("load", "FAILED", counts_as_failure=True, error="reconciliation failed")
    state.steps["pre"] = StepOutcome("pre", "COMPLETED", rows_processed=12)
    return state


def test_run_values_describe_the_outcome_so_far() -> None:
    settings = Settings(public_base_url="https://pipelines.example.com/")
    run = RunInfo("run-1", "acme_cost", "gcp/cost/cost_billing", "acme", "api", record=True)
    variables = {"org_slug": "acme", "start_date": date(2026, 11, 18), "end_date": date(2026, 11, 20), "date": None}
    values = run_values(settings=settings, run=run, state=_state(), variables=variables)
    assert values["status"] == "FAILED"
    assert values["failed_step"] == "load"
    assert values["error"] == "reconciliation failed"
    assert values["rows_processed"] == "12"
    assert values["window"] == "2026-11-18..2026-11-20"
    assert values["date"] == "-"
    assert values["run_url"] == "https://pipelines.example.com/api/v1/pipelines/runs/run-1"
    assert "load: FAILED (reconciliation failed)" in values["steps_summary"]
    assert set(values) >= {"org_slug", "pipeline_id", "duration", "run_id"}


def test_render_substitutes_only_known_names() -> None:
    values = {"status": "OK", "org_slug": "acme"}
    template = "{status} {org_slug.__class__} {missing} {json:1}"
    assert render(template, values) == "OK {org_slug.__class__} {missing} {json:1}"
    assert unknown_placeholders(["{status} {nope}"], DEFAULTS_VARIABLES) == ["nope"]


def test_built_in_templates_use_known_variables_only() -> None:
    assert unknown_placeholders([DEFAULT_SUBJECT, DEFAULT_BODY, DEFAULT_TEXT], DEFAULTS_VARIABLES) == []


def test_subject_cannot_inject_headers() -> None:
    message = build_message(Settings(), ["a@example.com"], "FAILED\r\nBcc: evil@example.com", "body")
    assert "\n" not in str(message["Subject"]) and message["Bcc"] is None


def test_slack_payload_has_mentions_and_look() -> None:
    config = SlackConfig(text="{status}", mentions=("here", "U123ABC", "S9GROUP"), channel="#ops", icon_emoji=":x:")
    body = payload(config, {"status": "FAILED"})
    assert body == {"text": "<!here> <@U123ABC> <!subteam^S9GROUP> FAILED", "channel": "#ops", "icon_emoji": ":x:"}
    hostile = payload(
        SlackConfig(text="<{run_url}|run> {error}"), {"run_url": "https://x/r/1", "error": "<!channel> a&b"}
    )
    assert hostile["text"] == "<https://x/r/1|run> &lt;!channel&gt; a&amp;b"
    with pytest.raises(ValueError, match="mention"):
        SlackConfig(mentions=("@everyone; rm",))


# --- configs: unknown placeholders are load-time errors ---------------------------------------------


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "configs"
    shutil.copytree(CONFIGS, root)
    return root


def test_unknown_placeholder_in_a_notification_step_fails_at_load(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    path = root / "gcp/cost/cost_billing.yml"
    spec = yaml.safe_load(path.read_text())
    step = next(s for s in spec["steps"] if s["ps_type"] == "notify_systems.email_notification")
    step["config"]["subject"] = "{status} for {customer_name}"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(ConfigError) as caught:
        validate_all(root, ProcessorRegistry())
    assert caught.value.file == "gcp/cost/cost_billing.yml"
    assert "{customer_name}" in caught.value.reason


@pytest.mark.parametrize(
    ("processor", "change", "field", "reason"),
    [
        ("email_notification", {"subject": "{status} {nope}"}, "defaults.subject", "{nope}"),
        ("email_notification", {"max_attempts": 0}, "defaults.max_attempts", "greater than"),
        ("slack_notification", {"text": "{destination_table}"}, "defaults.text", "{destination_table}"),
        ("slack_notification", {"webhook_url": "https://8.8.8.8/x"}, "defaults.webhook_url", "per organization"),
    ],
)
def test_bad_notification_defaults_fail_at_startup(
    tmp_path: Path, processor: str, change: dict[str, object], field: str, reason: str
) -> None:
    root = _copy(tmp_path)
    path = root / "notify_systems" / processor / "config.yml"
    data = yaml.safe_load(path.read_text())
    data["defaults"].update(change)
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as caught:
        validate_all(root, ProcessorRegistry())
    assert caught.value.file == f"notify_systems/{processor}/config.yml"
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_notification_configs_are_active_and_examples_are_not_runnable() -> None:
    from src.core.pipeline.loader import PipelineStore

    for name in ("email_notification", "slack_notification"):
        data = yaml.safe_load((CONFIGS / "notify_systems" / name / "config.yml").read_text())
        assert data["status"] == "active"
    store = PipelineStore(CONFIGS, ProcessorRegistry())
    store.load_all()
    examples = [p for p in store.all() if p.path.startswith("examples/notifications/")]
    assert sorted(p.path.rsplit("/", 1)[1] for p in examples) == ["combined", "email_only", "slack_only"]
    assert not any(p.spec.org_runnable for p in examples)
    cost = store.get("gcp/cost/cost_billing")
    assert cost.spec.steps[0].step_id == "load_billing_costs"
    notify = cost.spec.steps[-1]
    assert (notify.ps_type, notify.trigger) == ("notify_systems.email_notification", "on_failure")
    assert ProcessorRegistry().get(notify.ps_type).default_on_failure == "continue"


# --- retries -------------------------------------------------------------------------------------


def test_delivery_retries_with_backoff_then_fails_with_the_last_error() -> None:
    calls: list[float] = []

    async def attempt() -> None:
        calls.append(asyncio.get_running_loop().time())
        raise DeliveryError(f"down #{len(calls)}")

    outcome = asyncio.run(deliver("email", attempt, max_attempts=3, backoff_seconds=0.02))
    assert (outcome.status, outcome.attempts) == ("FAILED", 3)
    assert outcome.error == "email not delivered after 3 attempt(s): down #3"
    assert calls[2] - calls[1] >= calls[1] - calls[0] >= 0.02  # waits double
    assert outcome.step_result()["status"] == "FAILED"


def test_delivery_stops_at_a_permanent_failure() -> None:
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        raise DeliveryError("HTTP 404 (no_service)", retryable=False)

    outcome = asyncio.run(deliver("slack", attempt, max_attempts=5, backoff_seconds=0))
    assert (outcome.status, outcome.attempts, calls) == ("FAILED", 1, 1)


def test_email_config_needs_real_addresses() -> None:
    with pytest.raises(ValueError, match="email"):
        EmailConfig(to_emails=("not-an-address",))  # type: ignore[arg-type]


def test_the_request_goes_to_the_checked_address_not_a_second_dns_answer() -> None:
    import httpx

    from src.core.notify.webhook_post import PinnedTransport
    from tests.notify_peers import WebhookSink

    sink = WebhookSink()
    try:

        async def post() -> int:
            # The host name does not resolve at all: only the pinned address can be used.
            async with httpx.AsyncClient(transport=PinnedTransport("127.0.0.1"), trust_env=False) as client:
                response = await client.post(f"http://pinned.invalid:{sink.port}/ok/x", json={"text": "hi"})
                return response.status_code

        assert asyncio.run(post()) == 200
        assert sink.received("/ok/x") == [{"text": "hi"}]
    finally:
        sink.close()
