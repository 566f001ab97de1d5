"""``notify_systems.email_notification``: e-mail about the run so far (SMTP, see ``core/notify``).

Config (defaults in ``configs/notify_systems/email_notification/config.yml``): ``to_emails``
(default: the organization's admin e-mail), ``subject`` and ``body`` templates over the run's
variables (``core/notify/templates.py``), ``max_attempts`` and ``backoff_seconds``. Unconfigured
SMTP -> SKIPPED with the reason; a delivery that keeps failing -> FAILED with the last error, which
by default (``on_failure: continue``) never fails the run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.core.notify.defaults import check_defaults as _check_defaults
from src.core.notify.defaults import effective
from src.core.notify.delivery import Delivery, log_delivery
from src.core.notify.email import NOT_CONFIGURED, EmailConfig, send_email
from src.core.notify.templates import RUN_VARIABLES, run_values
from src.core.pipeline.context import StepContext

PS_TYPE = "notify_systems.email_notification"
DEFAULT_ON_FAILURE = "continue"
TEMPLATE_VARIABLES = RUN_VARIABLES
Config = EmailConfig

log = logging.getLogger(__name__)


def check_defaults(defaults: Mapping[str, Any], configs_dir: Path, file: str) -> None:
    _check_defaults(EmailConfig, defaults, file, ("subject", "body"))


class EmailNotification:
    async def execute(self, step_config: EmailConfig, context: StepContext) -> dict[str, Any]:
        s = context.services
        run = context.run
        if not s.settings.smtp_host:
            delivery = Delivery("email", "SKIPPED", error=NOT_CONFIGURED)
        else:
            config = effective(EmailConfig, s.settings.configs_dir, PS_TYPE, step_config)
            recipients = list(config.to_emails or ())
            if not recipients and run.org_slug:
                recipients = [str((await s.org_profile(run.org_slug))["admin_email"])]
            values = run_values(settings=s.settings, run=run, state=context.state, variables=context.variables)
            delivery = await send_email(s.settings, config, recipients, values)
        log_delivery(log, delivery, org_slug=run.org_slug, run_id=run.pipeline_logging_id, via=context.step.step_id)
        return delivery.step_result()


def get_engine() -> EmailNotification:
    return EmailNotification()
