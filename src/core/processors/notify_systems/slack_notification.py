"""``notify_systems.slack_notification``: a Slack message about the run so far (incoming webhook).

Config (defaults in ``configs/notify_systems/slack_notification/config.yml``): ``webhook_url``
(default, and preferred: the organization's webhook, stored encrypted), ``text`` template,
``channel``, ``username``, ``icon_emoji``, ``mentions``, ``max_attempts``, ``backoff_seconds``.
No webhook -> SKIPPED with the reason; failures -> FAILED (``on_failure: continue`` by default).
The webhook URL is never logged nor written to the step log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from src.core.errors import ConfigError
from src.core.notify.defaults import check_defaults as _check_defaults
from src.core.notify.defaults import effective
from src.core.notify.delivery import log_delivery
from src.core.notify.slack import SlackConfig, send_slack
from src.core.notify.templates import RUN_VARIABLES, run_values
from src.core.pipeline.context import StepContext

PS_TYPE = "notify_systems.slack_notification"
DEFAULT_ON_FAILURE = "continue"
TEMPLATE_VARIABLES = RUN_VARIABLES
Config = SlackConfig

log = logging.getLogger(__name__)


def check_defaults(defaults: Mapping[str, Any], configs_dir: Path, file: str) -> None:
    _check_defaults(SlackConfig, defaults, file, ("text",))
    if defaults.get("webhook_url"):
        raise ConfigError(file, "defaults.webhook_url", "a webhook URL is per organization, not a default")


class SlackNotification:
    async def execute(self, step_config: SlackConfig, context: StepContext) -> dict[str, Any]:
        s = context.services
        run = context.run
        config = effective(SlackConfig, s.settings.configs_dir, PS_TYPE, step_config)
        url = config.webhook_url
        source: Literal["step", "org"] = "step"
        if url is None and run.org_slug:
            url, source = await s.org_webhook_url(run.org_slug), "org"
        values = run_values(settings=s.settings, run=run, state=context.state, variables=context.variables)
        delivery = await send_slack(s.settings, config, url, values, source=source)
        log_delivery(log, delivery, org_slug=run.org_slug, run_id=run.pipeline_logging_id, via=context.step.step_id)
        return delivery.step_result()


def get_engine() -> SlackNotification:
    return SlackNotification()
