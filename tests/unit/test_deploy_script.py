"""``simple_deploy.sh stage|prod``: the gcloud command lines it runs, read from its dry run
(``DRY_RUN=1``: one shell-quoted command per line, nothing run), and — with a stand-in ``gcloud`` on
PATH that records its arguments — that the admin key reaches Cloud Run and the Cloud Scheduler jobs
without ever being on a command line, on the terminal or in ``bash -x``'s trace."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "simple_deploy.sh"
PROJECT = "convergence-test-123"
KMS = f"projects/{PROJECT}/locations/us/keyRings/convergence/cryptoKeys/secrets"
ACCOUNT = f"convergence-api@{PROJECT}.iam.gserviceaccount.com"
ENVIRONMENT = {"stage": "staging", "prod": "production"}
# An admin key exported in the deployer's shell: a cloud deploy never uses (or shows) it.
SHELL_KEY = "Sh3llAdminKey_" + "q7Rt2Wz9Lm4Xv8Bn1Kc6Hd0Jf5Gs3Ya"
# What the stand-in Secret Manager holds as the latest version.
STORED_KEY = "St0redAdminKey-" + "P9oI8uY7tR6eW5qA4sD3fG2hJ1kL0zXcVbNm"
FAKE_URL = "https://convergence-api-stage-x7k2p9q4ra-uc.a.run.app"

# The stand-in gcloud: logs each call (argv, the CLOUDSDK_* variables, stdin of `--data-file=-`,
# the flags file as gcloud would read it) as a JSON line and answers like gcloud would.
STUB = r"""
import json, os, stat, sys
from pathlib import Path

argv = sys.argv[1:]
words = [a for a in argv if not a.startswith("-")]
entry = {"argv": argv, "env": {k: v for k, v in os.environ.items() if k.startswith("CLOUDSDK_")}}


def value(flag):
    for i, arg in enumerate(argv):
        if arg == flag:
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


existing = os.environ.get("STUB_EXISTING") == "1"
out, err, rc = "", "", 0
if value("--flags-file"):
    flags = Path(value("--flags-file"))
    entry["flags_file"] = {"text": flags.read_text(), "mode": mode(flags), "dir_mode": mode(flags.parent)}
if words[:2] == ["secrets", "describe"] or words[:3] == ["scheduler", "jobs", "describe"]:
    if existing:
        out = words[-1] + "\n"
    else:
        err, rc = "ERROR: (gcloud.%s) NOT_FOUND: Resource not found.\n" % ".".join(words[:-1]), 1
elif words[:2] == ["secrets", "create"]:
    entry["stdin"] = sys.stdin.read()
elif words[:3] == ["secrets", "versions", "access"]:
    target = Path(value("--out-file"))
    target.write_text(os.environ["STUB_KEY"])
    entry["out_file"] = {"path": str(target), "mode": mode(target), "dir_mode": mode(target.parent)}
elif words[:3] == ["run", "services", "describe"]:
    out = os.environ["STUB_URL"] + "\n"
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps(entry) + "\n")
sys.stdout.write(out)
sys.stderr.write(err)
sys.exit(rc)
"""


def _bin(tmp_path: Path, body: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(f"#!{sys.executable}\n{body}")
    gcloud.chmod(0o755)
    return bin_dir


def deploy(
    tmp_path: Path,
    target: str,
    env: dict[str, str | None] | None = None,
    *,
    dry_run: bool = True,
    trace: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run the script with a clean environment: the required variables, a planted shell admin key,
    ``env`` on top (None removes a variable). A dry run gets a gcloud that fails if it is called."""
    if dry_run:
        bin_dir = _bin(tmp_path, "import sys\nsys.stderr.write('gcloud called in a dry run\\n')\nsys.exit(97)\n")
    else:
        bin_dir = _bin(tmp_path, STUB)
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    full: dict[str, str | None] = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path / "home"),
        "TMPDIR": str(tmp_path / "tmp"),
        "GCP_PROJECT_ID": PROJECT,
        "KMS_KEY_NAME": KMS,
        "ADMIN_API_KEY": SHELL_KEY,
        "DRY_RUN": "1" if dry_run else "0",
        "STUB_LOG": str(tmp_path / "gcloud.log"),
        "STUB_KEY": STORED_KEY,
        "STUB_URL": FAKE_URL,
        **(env or {}),
    }
    command = ["bash", "-x", str(SCRIPT), target] if trace else [str(SCRIPT), target]
    return subprocess.run(
        command,
        env={k: v for k, v in full.items() if v is not None},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def commands(result: subprocess.CompletedProcess[str]) -> list[list[str]]:
    """The dry run's command lines as argv lists (shell comments dropped)."""
    assert result.returncode == 0, result.stderr
    lines = [shlex.split(line, comments=True) for line in result.stdout.splitlines()]
    return [argv for argv in lines if argv]


def gcloud_argv(argv: list[str]) -> list[str]:
    """argv from `gcloud` on: drops a leading `env NAME=value ...`."""
    if argv[0] == "env":
        argv = argv[1:]
        while "=" in argv[0]:
            argv = argv[1:]
    return argv


def env_of(argv: list[str]) -> dict[str, str]:
    prefix = argv[1 : argv.index("gcloud")] if argv[0] == "env" else []
    return dict(word.split("=", 1) for word in prefix)


def find(cmds: list[list[str]], *words: str) -> list[list[str]]:
    n = len(words)
    return [argv for argv in cmds if gcloud_argv(argv)[: n + 1] == ["gcloud", *words]]


def one(cmds: list[list[str]], *words: str) -> list[str]:
    found = find(cmds, *words)
    assert len(found) == 1, (words, found)
    return found[0]


def flag(argv: list[str], name: str) -> str:
    """The value of ``--name value`` or ``--name=value``, given exactly once."""
    values = [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == name]
    values += [word.split("=", 1)[1] for word in argv if word.startswith(name + "=")]
    assert len(values) == 1, (name, argv)
    return values[0]


def key_like(text: str) -> list[str]:
    """Runs of 32+ key characters mixing upper case, lower case and digits (a generated key)."""
    runs = re.findall(r"[A-Za-z0-9_\-]{32,}", text)
    return [r for r in runs if re.search("[A-Z]", r) and re.search("[a-z]", r) and re.search("[0-9]", r)]


# ------------------------------------------------------------------------------------------ dry run
@pytest.mark.parametrize("target", ["stage", "prod"])
def test_cloud_run_gets_the_key_from_secret_manager_and_the_production_settings(tmp_path: Path, target: str) -> None:
    result = deploy(tmp_path, target)
    cmds = commands(result)
    assert not (tmp_path / "gcloud.log").exists()
    assert not list((tmp_path / "tmp").iterdir()), "a dry run creates no files"

    run_deploy = one(cmds, "run", "deploy")
    assert run_deploy[3] == f"convergence-api-{target}"
    assert flag(run_deploy, "--set-secrets") == f"ADMIN_API_KEY=convergence-admin-api-key-{target}:latest"
    env_vars = dict(pair.split("=", 1) for pair in flag(run_deploy, "--set-env-vars").split(","))
    assert env_vars == {
        "ENVIRONMENT": ENVIRONMENT[target],
        "WAREHOUSE": "bigquery",
        "GCP_PROJECT_ID": PROJECT,
        "KMS_KEY_NAME": KMS,
        "BIGQUERY_LOCATION": "US",
        "SERVICE_ACCOUNT_EMAIL": ACCOUNT,
    }
    assert flag(run_deploy, "--service-account") == ACCOUNT
    assert flag(run_deploy, "--project") == PROJECT
    image = flag(run_deploy, "--image")
    assert flag(one(cmds, "builds", "submit"), "--tag") == image

    binding = one(cmds, "secrets", "add-iam-policy-binding")
    assert binding[3] == f"convergence-admin-api-key-{target}"
    assert flag(binding, "--member") == f"serviceAccount:{ACCOUNT}"
    assert flag(binding, "--role") == "roles/secretmanager.secretAccessor"
    url = one(cmds, "run", "services", "describe")
    assert flag(url, "--format") == "value(status.url)"


@pytest.mark.parametrize("target", ["stage", "prod"])
def test_first_deploy_creates_the_secret_from_stdin_and_both_scheduler_jobs(tmp_path: Path, target: str) -> None:
    cmds = commands(deploy(tmp_path, target))
    secret = f"convergence-admin-api-key-{target}"
    create = one(cmds, "secrets", "create")
    assert gcloud_argv(create)[3] == secret
    assert flag(create, "--data-file") == "-"
    assert env_of(create)["CLOUDSDK_CORE_LOG_HTTP"] == "false"

    # order: the secret exists before the service that reads it; the jobs come after the service
    order = [gcloud_argv(argv)[1:3] for argv in cmds]
    assert order.index(["secrets", "create"]) < order.index(["run", "deploy"])
    assert order.index(["run", "deploy"]) < order.index(["scheduler", "jobs"])

    access = one(cmds, "secrets", "versions", "access")
    assert gcloud_argv(access)[4] == "latest"
    assert flag(access, "--secret") == secret
    key_file = flag(access, "--out-file")

    service_url = f"https://convergence-api-{target}.dry-run.invalid"
    jobs = {gcloud_argv(argv)[5]: argv for argv in find(cmds, "scheduler", "jobs", "create", "http")}
    assert set(jobs) == {f"convergence-trigger-{target}", f"convergence-process-queue-{target}"}
    assert not find(cmds, "scheduler", "jobs", "update")
    trigger, process = jobs[f"convergence-trigger-{target}"], jobs[f"convergence-process-queue-{target}"]
    assert flag(trigger, "--uri") == f"{service_url}/api/v1/scheduler/trigger"
    assert flag(process, "--uri") == f"{service_url}/api/v1/scheduler/process-queue"
    assert flag(trigger, "--schedule") == "*/5 * * * *"
    assert flag(process, "--schedule") == "* * * * *"
    assert json.loads(flag(process, "--message-body")) == {"max_items": 10}
    assert "--message-body" not in trigger
    assert flag(process, "--attempt-deadline") == "1800s"  # Cloud Scheduler's maximum for HTTP targets
    for job in (trigger, process):
        assert flag(job, "--http-method") == "post"
        assert flag(job, "--time-zone") == "Etc/UTC"
        assert flag(job, "--location") == "us-central1"
        assert flag(job, "--project") == PROJECT
        assert flag(job, "--oidc-service-account-email") == ACCOUNT
        assert flag(job, "--oidc-token-audience") == service_url
        assert flag(job, "--format") == "none"
        # the header comes from a flags file next to the key file, never from the command line
        assert Path(flag(job, "--flags-file")).parent == Path(key_file).parent
        assert not [word for word in job if "header" in word.lower() or "admin-key" in word.lower()]
        assert env_of(job) == {
            "CLOUDSDK_CORE_DISABLE_FILE_LOGGING": "true",
            "CLOUDSDK_CORE_LOG_HTTP": "false",
            "CLOUDSDK_CORE_VERBOSITY": "warning",
        }


@pytest.mark.parametrize("target", ["stage", "prod"])
def test_redeploy_updates_the_jobs_and_keeps_the_secret(tmp_path: Path, target: str) -> None:
    cmds = commands(deploy(tmp_path, target, {"DRY_RUN_EXISTING": "1"}))
    assert not find(cmds, "secrets", "create")
    assert not find(cmds, "scheduler", "jobs", "create")
    jobs = {gcloud_argv(argv)[5]: argv for argv in find(cmds, "scheduler", "jobs", "update", "http")}
    trigger, process = jobs[f"convergence-trigger-{target}"], jobs[f"convergence-process-queue-{target}"]
    assert flag(trigger, "--uri").endswith("/api/v1/scheduler/trigger")
    assert "--clear-message-body" in trigger
    assert json.loads(flag(process, "--message-body")) == {"max_items": 10}
    for job in (trigger, process):
        assert flag(job, "--http-method") == "post"
        assert flag(job, "--flags-file")


def test_schedules_and_the_service_account_are_overridable(tmp_path: Path) -> None:
    cmds = commands(
        deploy(
            tmp_path,
            "prod",
            {
                "TRIGGER_SCHEDULE": "*/10 * * * *",
                "PROCESS_QUEUE_SCHEDULE": "*/2 * * * *",
                "PROCESS_QUEUE_MAX_ITEMS": "25",
                "PROCESS_QUEUE_DEADLINE": "900s",
                "SCHEDULE_TIME_ZONE": "Europe/Berlin",
                "CLOUD_SCHEDULER_LOCATION": "europe-west1",
                "GCP_REGION": "europe-west3",
                "SERVICE_ACCOUNT_EMAIL": f"runner@{PROJECT}.iam.gserviceaccount.com",
            },
        )
    )
    jobs = {gcloud_argv(argv)[5]: argv for argv in find(cmds, "scheduler", "jobs", "create", "http")}
    trigger, process = jobs["convergence-trigger-prod"], jobs["convergence-process-queue-prod"]
    assert flag(trigger, "--schedule") == "*/10 * * * *"
    assert flag(process, "--schedule") == "*/2 * * * *"
    assert json.loads(flag(process, "--message-body")) == {"max_items": 25}
    assert flag(process, "--attempt-deadline") == "900s"
    assert {flag(job, "--time-zone") for job in (trigger, process)} == {"Europe/Berlin"}
    assert {flag(job, "--location") for job in (trigger, process)} == {"europe-west1"}
    run_deploy = one(cmds, "run", "deploy")
    assert flag(run_deploy, "--region") == "europe-west3"
    assert flag(run_deploy, "--service-account") == f"runner@{PROJECT}.iam.gserviceaccount.com"
    assert f"SERVICE_ACCOUNT_EMAIL=runner@{PROJECT}.iam.gserviceaccount.com" in flag(run_deploy, "--set-env-vars")


@pytest.mark.parametrize("target", ["stage", "prod"])
def test_no_line_carries_a_key(tmp_path: Path, target: str) -> None:
    for existing in ("0", "1"):
        result = deploy(tmp_path, target, {"DRY_RUN_EXISTING": existing})
        cmds = commands(result)
        assert SHELL_KEY not in result.stdout + result.stderr
        assert key_like(result.stdout + result.stderr) == []
        for argv in cmds:
            assert not [word for word in argv if word.startswith("ADMIN_API_KEY=") and ":latest" not in word]


@pytest.mark.parametrize(
    ("unset", "override", "message"),
    [
        ("GCP_PROJECT_ID", {}, "set GCP_PROJECT_ID"),
        ("KMS_KEY_NAME", {}, "set KMS_KEY_NAME"),
        (None, {"GCP_PROJECT_ID": "Not A Project"}, "GCP_PROJECT_ID 'Not A Project' is not a project id"),
        (None, {"KMS_KEY_NAME": "my-key"}, "KMS_KEY_NAME must look like"),
        (
            None,
            {"SERVICE_ACCOUNT_EMAIL": "someone@example.com"},
            "SERVICE_ACCOUNT_EMAIL 'someone@example.com' is not a service account e-mail",
        ),
        (None, {"TRIGGER_SCHEDULE": "every 5 minutes"}, "TRIGGER_SCHEDULE must be a five-field cron"),
        (None, {"PROCESS_QUEUE_MAX_ITEMS": "0"}, "PROCESS_QUEUE_MAX_ITEMS must be a positive integer"),
        (None, {"PROCESS_QUEUE_DEADLINE": "3600s"}, "PROCESS_QUEUE_DEADLINE must be between 15s and 1800s"),
        (None, {"DRY_RUN": "maybe"}, "DRY_RUN must be 1"),
    ],
)
def test_bad_settings_stop_before_any_command(
    tmp_path: Path, unset: str | None, override: dict[str, str], message: str
) -> None:
    env: dict[str, str | None] = {**override}
    if unset:
        env[unset] = None
    result = deploy(tmp_path, "stage", env)
    assert result.returncode != 0
    assert result.stdout == ""
    assert f"simple_deploy: {message}" in result.stderr


def test_unknown_target_is_refused(tmp_path: Path) -> None:
    result = deploy(tmp_path, "production")
    assert result.returncode == 2
    assert "usage:" in result.stderr


# ---------------------------------------------------------------- a deploy with a stand-in gcloud
def _calls(tmp_path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (tmp_path / "gcloud.log").read_text().splitlines()]


def _argv(call: dict[str, object]) -> list[str]:
    argv = call["argv"]
    assert isinstance(argv, list)
    return [str(word) for word in argv]


@pytest.mark.parametrize("existing", ["0", "1"])
def test_the_key_never_reaches_argv_the_terminal_or_the_trace(tmp_path: Path, existing: str) -> None:
    result = deploy(tmp_path, "stage", {"STUB_EXISTING": existing}, dry_run=False, trace=True)
    assert result.returncode == 0, result.stderr
    assert "+ cloud_deploy stage" in result.stderr  # bash -x traced the whole deploy
    calls = _calls(tmp_path)
    argvs = [_argv(call) for call in calls]
    generated = [str(call["stdin"]) for call in calls if "stdin" in call]

    if existing == "1":
        assert generated == []
    else:  # a new key: 48 characters from /dev/urandom, handed over on stdin only
        assert len(generated) == 1
        assert re.fullmatch(r"[A-Za-z0-9_\-]{48}", generated[0])
    for secret in (STORED_KEY, SHELL_KEY, *generated):
        assert secret not in result.stdout + result.stderr
        assert not [argv for argv in argvs if any(secret in word for word in argv)]

    # the key reached both jobs, through a 0600 flags file in a 0700 directory
    jobs = [call for call in calls if _argv(call)[:2] == ["scheduler", "jobs"] and "flags_file" in call]
    assert [_argv(call)[2:5] for call in jobs] == [
        ["update" if existing == "1" else "create", "http", "convergence-trigger-stage"],
        ["update" if existing == "1" else "create", "http", "convergence-process-queue-stage"],
    ]
    header_flag = "--update-headers" if existing == "1" else "--headers"
    for call in jobs:
        flags_file = call["flags_file"]
        assert isinstance(flags_file, dict)
        with_body = "--message-body" in _argv(call)  # process-queue: the body is JSON
        content_type = "  Content-Type: application/json\n" if with_body else ""
        assert flags_file["text"] == f'{header_flag}:\n{content_type}  X-Admin-Key: "{STORED_KEY}"\n'
        assert with_body == ("process-queue" in _argv(call)[4])
        assert (flags_file["mode"], flags_file["dir_mode"]) == (0o600, 0o700)
        assert flag(_argv(call), "--uri").startswith(FAKE_URL + "/api/v1/scheduler/")
        assert call["env"] == {
            "CLOUDSDK_CORE_DISABLE_FILE_LOGGING": "true",
            "CLOUDSDK_CORE_LOG_HTTP": "false",
            "CLOUDSDK_CORE_VERBOSITY": "warning",
        }
    access = next(call for call in calls if _argv(call)[:3] == ["secrets", "versions", "access"])
    out_file = access["out_file"]
    assert isinstance(out_file, dict)
    assert (out_file["mode"], out_file["dir_mode"]) == (0o600, 0o700)
    assert not Path(str(out_file["path"])).parent.exists(), "the key's directory is removed"
    assert not list((tmp_path / "tmp").iterdir())


@pytest.mark.parametrize("stored", ["too-short-key", STORED_KEY + "\n", "has space " + STORED_KEY])
def test_a_key_the_service_cannot_compare_stops_the_deploy(tmp_path: Path, stored: str) -> None:
    result = deploy(tmp_path, "stage", {"STUB_KEY": stored}, dry_run=False)
    assert result.returncode == 1
    assert "the latest version of secret convergence-admin-api-key-stage must be" in result.stderr
    assert stored.strip() not in result.stdout + result.stderr
    assert not [argv for argv in map(_argv, _calls(tmp_path)) if argv[:3] == ["scheduler", "jobs", "create"]]
    assert not list((tmp_path / "tmp").iterdir()), "the key file is removed on failure too"


# ------------------------------------------------------------------------------------- the script
def test_bash_parses_the_script() -> None:
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr


def test_shellcheck_is_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    scripts = ["simple_deploy.sh", "simple_test.sh", ".ci/run"]
    result = subprocess.run([shellcheck, *scripts], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout


def test_the_script_is_executable() -> None:
    assert SCRIPT.stat().st_mode & stat.S_IXUSR
