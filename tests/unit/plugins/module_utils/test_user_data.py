"""The job part of the first-boot script (plugins/module_utils/_user_data.py): runner, fallback, quoting, limits.

The scripts run here for real, with stand-ins for the image's job runner and
for the system tools (systemd-run, systemctl, mount, timeout...) that log
their arguments; nothing is powered off.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from ansible_collections.burst.golden_ami.plugins.module_utils._launch_request import LaunchError
from ansible_collections.burst.golden_ami.plugins.module_utils._user_data import (
    build_user_data,
    job_log_kind,
    job_runner_path,
)

HOSTILE = "echo \"it's $(echo done)\" > \"$OUT\"; printf '%s\\n' '$HOME' '`id`' >> \"$OUT\"; exit 3"

# A stand-in for the image's burst_job.py: records its arguments as JSON, then runs the command after --.
RUNNER = """#!/usr/bin/env python3
import json, os, subprocess, sys
with open(os.environ["RUNNER_ARGS"], "a") as record:
    record.write(json.dumps(sys.argv[1:]) + "\\n")
command = sys.argv[sys.argv.index("--") + 1:]
sys.exit(subprocess.run(command, check=False).returncode)
"""


class Instance:
    """A stand-in instance: a bin directory of logging tools, and an image directory with a startup script."""

    def __init__(self, tmp_path, runner=True, timeout_after=None):
        self.tmp = tmp_path
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        self.calls = tmp_path / "calls.log"
        self.runner_args = tmp_path / "runner-args.jsonl"
        self.out = tmp_path / "job-out"
        self.log = tmp_path / "user-data.log"
        for tool in ("systemd-run", "systemctl", "shutdown", "mount", "sync", "sleep"):
            self._tool(tool, f'echo "{tool} $*" >> "$CALLS"')
        # timeout(1) stand-in: logs its arguments and runs the command, stopped early when asked to.
        real = f"/usr/bin/timeout --kill-after=1 {timeout_after}" if timeout_after else ""
        self._tool("timeout", f'echo "timeout $*" >> "$CALLS"\nshift 2\nexec {real} "$@"')
        self.image = tmp_path / "opt" / "app image"
        self.image.mkdir(parents=True)
        self.startup = self.image / "startup.sh"
        self.startup.write_text('#!/bin/sh\necho startup >> "$CALLS"\n')
        self.startup.chmod(0o755)
        if runner:
            path = self.image / "burst_job.py"
            path.write_text(RUNNER)
            path.chmod(0o755)

    def _tool(self, name, body):
        path = self.bin / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)

    def run(self, **kwargs):
        kwargs.setdefault("startup_script", str(self.startup))
        script = build_user_data(log_path=str(self.log), **kwargs)
        # The runner is run by /usr/bin/python3 on an image; here by this test's Python.
        script = script.replace(shlex.quote("/usr/bin/python3"), shlex.quote(sys.executable), 2)
        path = self.tmp / "user-data.sh"
        path.write_text(script)
        env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "CALLS": str(self.calls),
            "RUNNER_ARGS": str(self.runner_args),
            "OUT": str(self.out),
        }
        subprocess.run(["/bin/bash", str(path)], check=True, env=env, timeout=60)
        return script

    def calls_made(self):
        return [line.rstrip() for line in self.calls.read_text().splitlines()] if self.calls.exists() else []

    def runner_calls(self):
        if not self.runner_args.exists():
            return []
        return [json.loads(line) for line in self.runner_args.read_text().splitlines()]


def test_the_job_runs_through_the_image_runner_with_its_options_quoted(tmp_path):
    instance = Instance(tmp_path)
    script = instance.run(
        job_command=HOSTILE,
        job_id="job 42; rm -rf ~ $(id)",
        job_log="s3://burst-logs/{job_id}/{instance_id} 'x'.log",
        job_time_limit=30,
        max_lifetime_minutes=60,
    )
    assert f"if [ -x {shlex.quote(str(instance.image / 'burst_job.py'))} ]; then" in script
    assert instance.runner_calls() == [
        [
            "--job-id",
            "job 42; rm -rf ~ $(id)",
            "--log-to",
            "s3://burst-logs/{job_id}/{instance_id} 'x'.log",
            "--time-limit",
            "30",
            "--",
            "bash",
            "-c",
            HOSTILE,
        ]
    ]
    # The command reached bash intact: its own expansions ran there, not in the user data.
    assert instance.out.read_text().splitlines() == ["it's done", "$HOME", "`id`"]
    assert "timeout" not in " ".join(instance.calls_made())
    log = instance.log.read_text()
    assert "job ended with status 3" in log
    assert "reached its time limit" not in log
    assert instance.calls_made()[-2:] == ["sync", "systemctl poweroff"]


def test_an_image_without_the_runner_runs_the_job_under_timeout(tmp_path):
    instance = Instance(tmp_path, runner=False)
    instance.run(job_command=HOSTILE, job_id="job-42", job_log="/var/log/job.log", job_time_limit=30)
    assert instance.runner_calls() == []
    calls = instance.calls_made()
    assert calls[0] == "startup"
    assert calls[1].startswith("timeout --kill-after=30 30m bash -c ")
    assert instance.out.read_text().splitlines() == ["it's done", "$HOME", "`id`"]
    log = instance.log.read_text()
    assert "burst_job.py is missing: the job runs without status tags or log shipping" in log
    assert "job ended with status 3" in log


def test_without_a_time_limit_the_old_image_runs_plain_bash(tmp_path):
    instance = Instance(tmp_path, runner=False)
    script = instance.run(job_command='echo plain > "$OUT"', terminate_after_job=False)
    assert "timeout" not in script
    assert instance.out.read_text() == "plain\n"
    assert instance.calls_made() == ["startup"]


def test_a_job_stopped_at_its_time_limit_ends_with_124(tmp_path):
    # timeout's stand-in stops the job after 0.2 s instead of the minute asked for.
    instance = Instance(tmp_path, runner=False, timeout_after=0.2)
    instance.run(job_command="exec /bin/sleep 30", job_time_limit=1, max_lifetime_minutes=5)
    log = instance.log.read_text()
    assert "job ended with status 124" in log
    assert "the job reached its time limit of 1 min" in log
    assert instance.calls_made()[-2:] == ["sync", "systemctl poweroff"]


def test_the_runner_follows_the_startup_script_directory():
    assert job_runner_path("/srv/app/start.sh") == "/srv/app/burst_job.py"
    assert job_runner_path(None) == "/opt/burst/burst_job.py"
    script = build_user_data(startup_script=None, job_command="true")
    assert "if [ -x /opt/burst/burst_job.py ]; then" in script
    assert "/usr/bin/python3 /opt/burst/burst_job.py -- bash -c true" in script


def test_a_job_id_the_runner_cannot_take_is_left_to_it():
    # The runner names a status file after the job id: with a / it names the job by the instance id.
    script = build_user_data(job_command="true", job_id="team/job-42", job_log="/var/log/{instance_id}.log")
    assert "/usr/bin/python3 /opt/burst/burst_job.py --log-to '/var/log/{instance_id}.log' -- bash -c true" in script
    with pytest.raises(LaunchError, match=r"names \{job_id\}, and the job id 'team/job-42' cannot be given"):
        build_user_data(job_command="true", job_id="team/job-42", job_log="/var/log/{job_id}.log")


def test_a_failed_efs_mount_is_recorded_by_the_runner_as_a_failed_job(tmp_path):
    instance = Instance(tmp_path)
    instance._tool("mount", "exit 32")
    instance.run(
        job_command='echo ran > "$OUT"',
        job_id="job-efs",
        job_log="/var/log/job.log",
        job_time_limit=10,
        efs_file_system_id="fs-12345678",
        efs_mount_point=str(tmp_path / "efs"),
        region="eu-central-1",
    )
    assert not instance.out.exists()
    (call,) = instance.runner_calls()
    assert call[:4] == ["--job-id", "job-efs", "--log-to", "/var/log/job.log"]
    assert "--time-limit" not in call
    assert call[-3:-1] == ["bash", "-c"] and call[-1].endswith("exit 1")
    log = instance.log.read_text()
    assert "EFS is not mounted: the job does not run" in log
    assert "job ended with status 1" in log


@pytest.mark.parametrize(
    ("destination", "kind"),
    [
        ("/var/log/burst/{job_id}.log", "file"),
        ("file:/var/log/job-{instance_id}.log", "file"),
        ("file:///var/log/job.log", "file"),
        ("s3://burst-logs/jobs/{job_id}/{instance_id}.log", "s3"),
        ("cloudwatch:/burst/jobs", "cloudwatch"),
        ("cloudwatch:/burst/jobs:{job_id}-{instance_id}", "cloudwatch"),
    ],
)
def test_job_log_forms(destination, kind):
    assert job_log_kind(destination) == kind


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        ("", "Invalid job log destination ''"),
        ("relative/job.log", "a file's absolute path"),
        ("file:job.log", "a file's absolute path"),
        ("/var/log/", "a file's absolute path"),
        ("s3://burst-logs", "an S3 bucket name and a key"),
        ("s3://Bad_Bucket/key", "an S3 bucket name and a key"),
        ("cloudwatch:", "a log group"),
        ("cloudwatch:group with spaces", "a log group"),
        ("cloudwatch:/burst/jobs:a*b", "a log stream without : or \\*"),
        ("/var/log/{user}.log", r"the only placeholders are \{job_id\} and \{instance_id\}"),
        ("/var/log/{job_id.log", "the only placeholders"),
        ("/var/log/job\n.log", "Invalid job log destination"),
        ("https://example.com/log", "a file's absolute path"),
        ("file://host/var/log/job.log", "a file's absolute path"),
        ("s3://burst-logs/" + "k" * 1025, "an S3 bucket name and a key"),
    ],
)
def test_bad_job_logs_are_refused(destination, message):
    with pytest.raises(LaunchError, match=message):
        job_log_kind(destination)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"job_command": "true", "job_time_limit": 120, "max_lifetime_minutes": 120}, r"less than the maximum"),
        ({"job_command": "true", "job_time_limit": 0}, "Invalid job time limit 0"),
        ({"job_command": "true", "job_time_limit": True}, "Invalid job time limit True"),
        ({"job_time_limit": 10}, "A job time limit needs a job command"),
        ({"job_log": "/var/log/job.log"}, "A job log destination needs a job command"),
        ({"job_command": "true", "job_log": "ftp://x/y"}, "Invalid job log destination"),
    ],
)
def test_bad_job_options(kwargs, message):
    with pytest.raises(LaunchError, match=message):
        build_user_data(**kwargs)


def test_a_time_limit_without_a_lifetime_is_allowed():
    script = build_user_data(job_command="true", job_time_limit=600, max_lifetime_minutes=0)
    assert "--time-limit 600" in script and "timeout --kill-after=30 600m bash -c true" in script
    assert "burst-max-lifetime" not in script
