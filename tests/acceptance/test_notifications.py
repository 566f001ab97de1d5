"""Notifications over real peers on loopback: an SMTP server (aiosmtpd) and a webhook server stand
in for the mail relay and Slack; the service runs as a real process on both backends.

One dedicated server per backend runs a copy of ``configs/`` with two extra pipelines: a cost load
that fails its reconciliation (``broken_billing``) and one that succeeds with extra notification
steps, one of them aimed at a webhook that answers 500 (``notified_billing``). The preference
routes' validation runs on the shared server.
"""

from __future__ import annotations

import copy
import json
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from tests.backends import Backend, BigQueryBackend
from tests.conftest import DEMO, DEMO_END, unique_slug
from tests.notify_peers import SMTP_USER, Mail, SmtpSink, WebhookSink
from tests.server import REPO, Api, ServerProcess

BASE_URL = "https://pipelines.convergence.example"
FAIL_TOKEN = f"T0FAIL/B0FAIL/{secrets.token_hex(12)}"
TEAM = ["finops@customer-team.example", "cfo@customer-team.example"]
DAY = DEMO_END.isoformat()


# --- the module's server and peers -------------------------------------------------------------


def _write(path: Path, data: Any) -> None:
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def notify_configs(root: Path, hooks: WebhookSink) -> Path:
    shutil.copytree(REPO / "configs", root)
    for name in ("email_notification", "slack_notification"):  # fast retries for the org preferences
        path = root / "notify_systems" / name / "config.yml"
        data = yaml.safe_load(path.read_text())
        data["defaults"].update(max_attempts=2, backoff_seconds=0.01)
        _write(path, data)
    base = yaml.safe_load((root / "gcp/cost/cost_billing.yml").read_text())

    broken = copy.deepcopy(base)
    broken["pipeline_id"] = "{org_slug}_broken_billing"
    source = broken["steps"][0]["config"]["source"]
    source["query"] = source["query"].rstrip() + "\n  WHERE b.cost_type != 'tax'\n"  # a lossy load
    broken["steps"].append(
        {
            "step_id": "slack_failure",
            "ps_type": "notify_systems.slack_notification",
            "trigger": "on_failure",
            "config": {"webhook_url": hooks.url("/ok/step-failure"), "mentions": ["here"]},
        }
    )
    _write(root / "gcp/cost/broken_billing.yml", broken)

    notified = copy.deepcopy(base)
    notified["pipeline_id"] = "{org_slug}_notified_billing"
    notified["steps"] += [
        {
            "step_id": "slack_success",
            "ps_type": "notify_systems.slack_notification",
            "trigger": "on_success",
            "config": {
                "webhook_url": hooks.url("/ok/step-success"),
                "channel": "#finops",
                "username": "Cost bot",
                "icon_emoji": ":moneybag:",
                "mentions": ["U024BE7LH"],
                "text": "{status}: {org_slug} wrote {rows_processed} rows for {window} ({run_url})",
            },
        },
        {
            "step_id": "slack_broken_hook",
            "ps_type": "notify_systems.slack_notification",
            "trigger": "on_completion",
            "config": {"webhook_url": hooks.url(f"/fail/{FAIL_TOKEN}"), "max_attempts": 3, "backoff_seconds": 0.01},
        },
        {
            "step_id": "email_team",
            "ps_type": "notify_systems.email_notification",
            "trigger": "on_completion",
            "config": {"to_emails": TEAM, "max_attempts": 2, "backoff_seconds": 0.01},
        },
    ]
    _write(root / "gcp/cost/notified_billing.yml", notified)
    return root


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
def hooks() -> Iterator[WebhookSink]:
    sink = WebhookSink()
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def notify_server(
    backend: Backend, smtp: SmtpSink, hooks: WebhookSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp(f"notify-{backend.name}")
    configs = notify_configs(tmp / "configs", hooks)
    srv = backend.new_server(tmp / "srv", DEMO, CONFIGS_DIR=str(configs), PUBLIC_BASE_URL=BASE_URL, **smtp.env())
    assert Api(srv).bootstrap().status_code == 200
    yield srv
    srv.stop()


@pytest.fixture
def napi(notify_server: ServerProcess) -> Api:
    return Api(notify_server)


def run(api: Api, slug: str, key: str, pipeline: str) -> dict[str, Any]:
    response = api.run(slug, key, {"date": DAY}, pipeline=pipeline)
    assert response.status_code == 202, response.text
    return api.wait(response.json()["pipeline_logging_id"], key)


def steps(run_: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["step_id"]: s for s in run_["steps"]}


def admin_email(slug: str) -> str:
    return f"ops@{slug.replace('_', '-')}.example"


def about(run_id: str) -> Callable[[Mail], bool]:
    return lambda mail: run_id in mail.body


# --- pipeline notification steps ---------------------------------------------------------------


def test_a_failed_load_emails_the_admin_and_posts_to_slack(napi: Api, smtp: SmtpSink, hooks: WebhookSink) -> None:
    slug = unique_slug("notify_fail")
    key = napi.onboard(slug)
    result = run(napi, slug, key, "gcp/cost/broken_billing")
    run_id = result["pipeline_logging_id"]
    assert result["status"] == "FAILED"
    assert result["failed_step"] == "load_billing_costs"  # the notifications did not change the outcome
    by_step = steps(result)
    assert by_step["notify_failure"]["status"] == "COMPLETED", by_step["notify_failure"]
    assert by_step["notify_failure"]["result"]["recipients"] == [admin_email(slug)]
    assert by_step["slack_failure"]["status"] == "COMPLETED", by_step["slack_failure"]

    (mail,) = smtp.wait_for(about(run_id))
    assert mail.envelope_to == [admin_email(slug)]
    assert mail.message["To"] == admin_email(slug)
    assert mail.message["From"] == "pipelines@convergence.example"
    assert mail.subject == f"[Convergence] FAILED: GCP cost billing for {slug} ({DAY})"
    body = mail.body
    run_url = f"{BASE_URL}/api/v1/pipelines/runs/{run_id}"
    for expected in (
        f"organization {slug}: FAILED",
        f"Run:          {run_id}",
        f"Window:       {DAY}",
        "Failed step:  load_billing_costs",
        "Error:        reconciliation failed ",
        "Rows written: 0",
        f"Run details: {run_url}",
        f"curl -s {run_url} -H",
        "load_billing_costs: FAILED",
    ):
        assert expected in body, (expected, body)
    assert SMTP_USER in smtp.logins  # SMTP_USERNAME / SMTP_PASSWORD were used

    (post,) = hooks.wait_for("/ok/step-failure", containing=run_id)
    assert post["text"].startswith("<!here> *FAILED*: ")
    assert slug in post["text"] and run_url in post["text"] and "reconciliation failed" in post["text"]
    assert post["username"] == "Convergence" and post["icon_emoji"] == ":bar_chart:"  # config.yml defaults


def test_a_successful_load_runs_success_and_completion_notifications(
    napi: Api, smtp: SmtpSink, hooks: WebhookSink, notify_server: ServerProcess
) -> None:
    slug = unique_slug("notify_ok")
    key = napi.onboard(slug)
    failing_hook = f"/fail/{FAIL_TOKEN}"
    hits_before = len(hooks.received(failing_hook))
    result = run(napi, slug, key, "gcp/cost/notified_billing")
    run_id = result["pipeline_logging_id"]
    assert result["status"] == "COMPLETED", result["error_message"]
    by_step = steps(result)
    rows = by_step["load_billing_costs"]["rows_processed"]
    assert rows > 0
    assert by_step["build_focus"]["rows_processed"] == rows  # one FOCUS row per cost row
    rows = result["rows_processed"]  # the run's: every row its steps wrote
    assert by_step["notify_failure"]["status"] == "SKIPPED"
    assert by_step["notify_failure"]["error_message"] == "skipped: no earlier step failed"

    assert hooks.received("/ok/step-success", containing=run_id) == [
        {
            "text": f"<@U024BE7LH> COMPLETED: {slug} wrote {rows} rows for {DAY} "
            f"({BASE_URL}/api/v1/pipelines/runs/{run_id})",
            "channel": "#finops",
            "username": "Cost bot",
            "icon_emoji": ":moneybag:",
        }
    ]

    # The webhook answering 500: retried up to max_attempts, recorded, and the run still COMPLETED.
    broken = by_step["slack_broken_hook"]
    assert broken["status"] == "FAILED"
    assert broken["error_message"] == "slack not delivered after 3 attempt(s): webhook answered HTTP 500"
    assert broken["result"]["attempts"] == 3
    assert len(hooks.received(failing_hook)) - hits_before == 3
    assert FAIL_TOKEN.rsplit("/", 1)[1] not in json.dumps(result)
    assert FAIL_TOKEN.rsplit("/", 1)[1] not in notify_server.log()

    assert by_step["email_team"]["status"] == "COMPLETED"
    (mail,) = smtp.wait_for(about(run_id))
    assert sorted(mail.envelope_to) == sorted(TEAM)
    assert mail.subject == f"[Convergence] COMPLETED: {slug}_notified_billing ({DAY})"
    assert f"Rows written: {rows}" in mail.body
    assert "Failed step:  -" in mail.body
    assert "slack_broken_hook: FAILED (slack not delivered after 3 attempt(s)" in mail.body


def test_smtp_down_is_retried_recorded_and_never_fails_the_load(napi: Api, smtp: SmtpSink) -> None:
    slug = unique_slug("notify_down")
    key = napi.onboard(slug)
    smtp.stop()
    try:
        result = run(napi, slug, key, "gcp/cost/notified_billing")
    finally:
        smtp.start()
    assert result["status"] == "COMPLETED", result["error_message"]
    email_step = steps(result)["email_team"]
    assert email_step["status"] == "FAILED"
    assert email_step["error_message"].startswith("email not delivered after 2 attempt(s): SMTPConnectError")
    assert email_step["result"]["attempts"] == 2
    assert steps(result)["load_billing_costs"]["status"] == "COMPLETED"
    assert smtp.wait_for(about(result["pipeline_logging_id"]), timeout=0.5) == []


def test_unconfigured_smtp_skips_the_email_step_with_the_reason(
    napi: Api, notify_server: ServerProcess, smtp: SmtpSink
) -> None:
    slug = unique_slug("notify_nosmtp")
    key = napi.onboard(slug)
    notify_server.restart(SMTP_HOST="")
    try:
        result = run(Api(notify_server), slug, key, "gcp/cost/broken_billing")
    finally:
        notify_server.restart(SMTP_HOST="127.0.0.1")
    assert result["status"] == "FAILED"
    skipped = steps(result)["notify_failure"]
    assert skipped["status"] == "SKIPPED"
    assert skipped["error_message"] == "SMTP is not configured (SMTP_HOST is unset)"
    assert skipped["result"]["reason"] == "SMTP is not configured (SMTP_HOST is unset)"
    assert result["failed_step"] == "load_billing_costs"


# --- organization preferences --------------------------------------------------------------------


def prefs_url(org: str) -> str:
    return f"/api/v1/organizations/{org}/notifications"


def log_lines(server: ServerProcess) -> list[dict[str, Any]]:
    lines = []
    for line in server.log().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines


def test_org_preferences_notify_after_runs_and_the_webhook_stays_secret(
    backend: Backend, napi: Api, notify_server: ServerProcess, smtp: SmtpSink, hooks: WebhookSink
) -> None:
    slug = unique_slug("notify_prefs")
    key = napi.onboard(slug)
    token = secrets.token_hex(12)
    hook_path = f"/ok/services/T0ORG{token[:6]}/B0ORG/{token}"
    webhook = hooks.url(hook_path)
    emails = [f"alerts@{slug.replace('_', '-')}.example", f"cto@{slug.replace('_', '-')}.example"]
    put = napi.http.put(
        prefs_url(slug),
        headers={"X-API-Key": key},
        json={"emails": emails, "slack_webhook_url": webhook, "on": ["failure"]},
    )
    assert put.status_code == 200, put.text
    assert token not in put.text

    ok = run(napi, slug, key, "gcp/cost/cost_billing")  # success: not in "on"
    assert ok["status"] == "COMPLETED"
    failed = run(napi, slug, key, "gcp/cost/broken_billing")
    failed_id = failed["pipeline_logging_id"]
    assert failed["status"] == "FAILED"

    mails = smtp.wait_for(lambda m: failed_id in m.body and m.envelope_to == emails)
    assert len(mails) == 1, [m.envelope_to for m in smtp.mails if failed_id in m.body]
    assert mails[0].subject == f"[Convergence] FAILED: {slug}_broken_billing ({DAY})"
    assert "Failed step:  load_billing_costs" in mails[0].body
    (post,) = hooks.wait_for(hook_path, containing=failed_id)
    assert post["text"].startswith("*FAILED*: ") and failed_id in post["text"]
    # The admin still gets the pipeline's own on_failure e-mail.
    assert smtp.wait_for(lambda m: failed_id in m.body and m.envelope_to == [admin_email(slug)])

    # Outcomes are logged (after both sends returned: poll); nothing was sent for the successful run.
    def logged() -> set[tuple[str, str]]:
        return {
            (r["channel"], r["via"])
            for r in log_lines(notify_server)
            if r.get("message") == "notification sent" and r.get("pipeline_logging_id") == failed_id
        }

    deadline = time.monotonic() + 15
    while not logged() >= {("email", "org:failure"), ("slack", "org:failure")} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert logged() >= {("email", "org:failure"), ("slack", "org:failure")}, logged()
    assert not any(ok["pipeline_logging_id"] in m.body for m in smtp.mails)
    assert hooks.received(hook_path, containing=ok["pipeline_logging_id"]) == []

    # The webhook URL is a secret: never shown back, logged, stored in clear or put in step results.
    got = napi.http.get(prefs_url(slug), headers={"X-API-Key": key}).json()
    assert got["slack_webhook_configured"] is True
    assert got["slack_webhook_url_masked"].endswith(f"…/…{token[-4:]}")
    for text in (json.dumps(got), json.dumps(failed), notify_server.log()):
        assert token not in text
    project = notify_server.env["GCP_PROJECT_ID"]
    if isinstance(backend, BigQueryBackend):
        rows = [
            dict(r.items())
            for r in backend.client(project)
            .query(f"SELECT * FROM `{project}.organizations.org_profiles` WHERE org_slug = '{slug}'")
            .result()
        ]
        stored = [json.dumps(rows, default=str)]
    else:
        notify_server.stop()
        try:
            path = Path(notify_server.env["DUCKDB_PATH"])
            con = duckdb.connect(str(path), read_only=True)
            try:
                cursor = con.execute("SELECT * FROM organizations.org_profiles WHERE org_slug = ?", [slug])
                columns = [d[0] for d in cursor.description]
                rows = [dict(zip(columns, r, strict=True)) for r in cursor.fetchall()]
            finally:
                con.close()
            files = [path, *path.parent.glob(f"{path.name}.wal")]
            assert not any(token.encode() in f.read_bytes() for f in files)
            stored = [json.dumps(rows, default=str)]
        finally:
            notify_server.start()
    (row,) = rows
    assert row["notify_slack_webhook_encrypted"] and token not in stored[0]
    assert list(row["notify_emails"]) == emails and list(row["notify_on"]) == ["failure"]


def test_preferences_round_trip_with_masking(api: Api) -> None:
    slug = unique_slug("prefs")
    key = api.onboard(slug)
    headers = {"X-API-Key": key}
    assert api.http.get(prefs_url(slug), headers=headers).json() == {
        "org_slug": slug,
        "emails": [],
        "on": [],
        "slack_webhook_configured": False,
        "slack_webhook_url_masked": None,
    }
    webhook = "http://127.0.0.1:9/services/T000AAAA/B000BBBB/XXXXXXXXXXXXsecretabcd"
    body = {
        "emails": ["Ops@Example.com", "ops@example.com", "cfo@example.com"],
        "slack_webhook_url": webhook,
        "on": ["success", "failure"],
    }
    put = api.http.put(prefs_url(slug), headers=headers, json=body)
    assert put.status_code == 200, put.text
    expected = {
        "org_slug": slug,
        "emails": ["Ops@example.com", "cfo@example.com"],
        "on": ["failure", "success"],
        "slack_webhook_configured": True,
        "slack_webhook_url_masked": "http://127.0.0.1:9/services/T000…/…abcd",
    }
    assert put.json() == expected
    got = api.http.get(prefs_url(slug), headers=headers)
    assert got.json() == expected
    assert "XXXXXXXXXXXXsecret" not in got.text and "B000BBBB" not in got.text
    assert api.http.get(prefs_url(slug), headers=api.admin).json() == expected  # the admin may read it too

    # The webhook is write-only: leaving it out keeps it, null removes it.
    kept = api.http.put(prefs_url(slug), headers=headers, json={"emails": [], "on": ["success"]}).json()
    assert kept["slack_webhook_configured"] is True and kept["emails"] == [] and kept["on"] == ["success"]
    removed = api.http.put(prefs_url(slug), headers=headers, json={"slack_webhook_url": None}).json()
    assert removed["slack_webhook_configured"] is False and removed["slack_webhook_url_masked"] is None
    assert removed["on"] == ["failure"]  # the default
    assert "secretabcd" not in api.server.log()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"emails": ["not-an-email"]}, "emails.0"),
        ({"emails": [f"u{i}@example.com" for i in range(21)]}, "emails"),
        ({"on": ["always"]}, "on.0"),
        ({"on": "failure"}, "on"),
        ({"surprise": 1}, "surprise"),
        ({"slack_webhook_url": "http://hooks.slack.com/services/T0/B0/secretpath"}, "slack_webhook_url"),
        ({"slack_webhook_url": "http://93.184.215.14/secretpath"}, "slack_webhook_url"),
        ({"slack_webhook_url": "https://10.0.0.1/secretpath"}, "slack_webhook_url"),
        ({"slack_webhook_url": "https://169.254.169.254/computeMetadata/secretpath"}, "slack_webhook_url"),
        ({"slack_webhook_url": "https://192.168.1.1/secretpath"}, "slack_webhook_url"),
        ({"slack_webhook_url": "https://[::ffff:10.0.0.1]/secretpath"}, "slack_webhook_url"),
        ({"slack_webhook_url": "https://user:pw@127.0.0.1/secretpath"}, "slack_webhook_url"),
        ({"slack_webhook_url": "ftp://127.0.0.1/secretpath"}, "slack_webhook_url"),
    ],
)
def test_invalid_preferences_are_422_and_change_nothing(api: Api, body: dict[str, Any], field: str) -> None:
    slug = unique_slug("prefs_bad")
    key = api.onboard(slug)
    response = api.http.put(prefs_url(slug), headers={"X-API-Key": key}, json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["error"] in {"validation_error", "invalid_webhook_url"}
    assert field in json.dumps(error)
    assert "secretpath" not in response.text
    assert api.http.get(prefs_url(slug), headers={"X-API-Key": key}).json()["on"] == []


def test_another_orgs_key_gets_403(api: Api) -> None:
    a, b = unique_slug("prefs_a"), unique_slug("prefs_b")
    api.onboard(a)
    key_b = api.onboard(b)
    other = {"X-API-Key": key_b}
    assert api.http.get(prefs_url(a), headers=other).status_code == 403
    assert api.http.put(prefs_url(a), headers=other, json={"emails": ["x@example.com"]}).status_code == 403
    assert api.http.put(prefs_url(a), headers=other, json={"emails": ["not an email"]}).status_code == 403
    assert api.http.get(prefs_url(a)).status_code == 401
    assert api.http.get(prefs_url(a), headers=api.admin).json()["emails"] == []
