"""From launch to result: the launcher's user data runs the image's job runner, and the launcher reads what it recorded.

The first-boot script that ``build_user_data`` writes runs here as bash does
on the instance, with the role's real ``burst_job.py`` next to the startup
script, against moto on loopback and the stand-in metadata service (the
instance role's keys). The launcher's reader (``job_of``) then reads the job's
outcome from DescribeInstances, as ``burst_instance`` does after the instance
has ended. Only the runner's status directory and interruption file are moved
under the test's directory (a wrapper adds the two options), so that nothing
is written outside it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import boto3
import pytest

from ansible_collections.burst.golden_ami.plugins.module_utils._launch import job_of
from ansible_collections.burst.golden_ami.plugins.module_utils._user_data import build_user_data

RUNNER = Path(__file__).resolve().parents[4] / "roles" / "burst_services" / "files" / "burst_job.py"
BASE_IMAGE_NAME = "amzn2-ami-hvm-2.0.20180810-x86_64-gp2"
JOB_ID = "job-e2e"


@pytest.fixture
def instance(aws_env, fake_imds, tmp_path):
    ec2 = boto3.client("ec2")
    image = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [BASE_IMAGE_NAME]}])
    launched = ec2.run_instances(ImageId=image["Images"][0]["ImageId"], MinCount=1, MaxCount=1)
    instance_id = launched["Instances"][0]["InstanceId"]
    fake_imds.instance_id = instance_id
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        BURST_IMDS_ENDPOINT=fake_imds.url,
        BURST_AWS_ENDPOINT_URL=aws_env["AWS_ENDPOINT_URL"],
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    return ec2, instance_id, env


def write_image_files(root: Path) -> Path:
    """The image's /opt/burst: a startup script and the job runner (the real one, behind a path wrapper)."""
    root.mkdir()
    startup = root / "startup.sh"
    startup.write_text("#!/bin/sh\necho '[startup] services up'\n")
    startup.chmod(0o755)
    wrapper = root / "burst_job.py"
    wrapper.write_text(
        "import os, sys\n"
        f"runner = {str(RUNNER)!r}\n"
        f"extra = ['--status-dir', {str(root / 'jobs')!r}]\n"
        f"extra += ['--interruption-file', {str(root / 'interruption.json')!r}]\n"
        "os.execv(sys.executable, [sys.executable, runner, *extra, *sys.argv[1:]])\n"
    )
    wrapper.chmod(0o755)
    return startup


@pytest.mark.parametrize(
    ("command", "status", "exit_code"),
    [("echo hello from the job", "succeeded", 0), ("echo hello from the job; exit 3", "failed", 3)],
)
def test_the_user_data_runs_the_job_and_the_launcher_reads_its_outcome(instance, tmp_path, command, status, exit_code):
    ec2, instance_id, env = instance
    startup = write_image_files(tmp_path / "opt-burst")
    log_dir = tmp_path / "efs" / "logs"
    user_data_log = tmp_path / "burst-user-data.log"
    script = build_user_data(
        startup_script=str(startup),
        job_command=command,
        job_id=JOB_ID,
        job_log=f"file:{log_dir}/{{job_id}}-{{instance_id}}.log",
        terminate_after_job=False,
        log_path=str(user_data_log),
    )
    (tmp_path / "user-data.sh").write_text(script)

    done = subprocess.run(
        ["bash", str(tmp_path / "user-data.sh")],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    first_boot = user_data_log.read_text()
    assert done.returncode == 0, first_boot + done.stderr
    assert "[startup] services up" in first_boot
    assert "is missing" not in first_boot, first_boot
    assert f"job ended with status {exit_code}" in first_boot, first_boot

    log_file = log_dir / f"{JOB_ID}-{instance_id}.log"
    assert log_file.read_text().splitlines() == ["hello from the job"]

    described = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    ended, job = job_of(described)
    assert ended is True
    assert job["status"] == status
    assert job["exit_code"] == exit_code
    assert job["log"] == str(log_file)
    assert job["log_error"] is None
    assert job["started_at"] <= job["ended_at"]


def test_an_image_without_the_runner_still_runs_the_job_untagged(instance, tmp_path):
    ec2, instance_id, env = instance
    root = tmp_path / "opt-burst"
    root.mkdir()
    script = build_user_data(
        startup_script=str(root / "startup.sh"),
        job_command="echo plain job",
        job_id=JOB_ID,
        terminate_after_job=False,
        log_path=str(tmp_path / "burst-user-data.log"),
    )
    subprocess.run(["bash", "-c", script], env=env, cwd=tmp_path, timeout=60, check=True)
    first_boot = (tmp_path / "burst-user-data.log").read_text()
    assert "plain job" in first_boot
    assert "burst_job.py is missing" in first_boot
    described = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert job_of(described) == (
        False,
        {
            "status": "not started",
            "exit_code": None,
            "started_at": None,
            "ended_at": None,
            "log": None,
            "log_error": None,
        },
    )
