"""burst_job.py: a job's log and exit status outlive the instance (tags, status file, S3, CloudWatch Logs, files).

Each test runs the script as a process, as the user data does, against moto
on loopback and a stand-in metadata service (IMDSv2, the instance role's
keys): the AWS keys of the test environment are taken away from the job, so
it signs with the role's keys, in the region the metadata service names.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

SCRIPT = Path(__file__).resolve().parents[4] / "roles" / "burst_services" / "files" / "burst_job.py"
BASE_IMAGE_NAME = "amzn2-ami-hvm-2.0.20180810-x86_64-gp2"
ISO_SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
JOB_ID = "job-42"
# Shell: wait until the test creates ./release.
WAIT_FOR_RELEASE = "while [ ! -e release ]; do sleep 0.05; done"
FIELDS = {
    "status": "BurstJobStatus",
    "exit_code": "BurstJobExitCode",
    "started_at": "BurstJobStartedAt",
    "ended_at": "BurstJobEndedAt",
    "log": "BurstJobLog",
    "log_error": "BurstJobLogError",
    "draining": "BurstDraining",
}


class World:
    def __init__(self, aws_env, imds, tmp_path):
        self.ec2 = boto3.client("ec2")
        self.s3 = boto3.client("s3")
        self.logs = boto3.client("logs")
        image = self.ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [BASE_IMAGE_NAME]}])
        instance = self.ec2.run_instances(ImageId=image["Images"][0]["ImageId"], MinCount=1, MaxCount=1)
        self.instance_id = instance["Instances"][0]["InstanceId"]
        imds.instance_id = self.instance_id
        self.imds = imds
        self.tmp = tmp_path
        self.status_dir = tmp_path / "status"
        self.interruption_file = tmp_path / "run" / "interruption.json"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.update(
            BURST_IMDS_ENDPOINT=imds.url,
            BURST_AWS_ENDPOINT_URL=aws_env["AWS_ENDPOINT_URL"],
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        )

    def argv(self, *options, command, job_id=JOB_ID):
        return [
            sys.executable,
            str(SCRIPT),
            *(["--job-id", job_id] if job_id else []),
            "--status-dir",
            str(self.status_dir),
            "--interruption-file",
            str(self.interruption_file),
            *options,
            "--",
            *command,
        ]

    def run(self, *options, command, job_id=JOB_ID):
        return subprocess.run(
            self.argv(*options, command=command, job_id=job_id),
            env=self.env,
            cwd=self.tmp,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def start(self, *options, command, job_id=JOB_ID):
        return subprocess.Popen(
            self.argv(*options, command=command, job_id=job_id),
            env=self.env,
            cwd=self.tmp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def tags(self):
        answer = self.ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [self.instance_id]}])
        return {tag["Key"]: tag["Value"] for tag in answer["Tags"]}

    def status(self, job_id=JOB_ID):
        return json.loads((self.status_dir / f"{job_id}.json").read_text())


@pytest.fixture
def world(aws_env, fake_imds, tmp_path):
    return World(aws_env, fake_imds, tmp_path)


def wait_for(condition, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def assert_recorded(world, **expected):
    """The status file and the instance's tags both hold ``expected``; absent (None) fields are untagged."""
    status, tags = world.status(), world.tags()
    for field, value in expected.items():
        assert status[field] == value, field
        if value is None:
            assert FIELDS[field] not in tags
        else:
            assert tags[FIELDS[field]] == str(value)
    for field in ("started_at", "ended_at"):
        assert ISO_SECONDS.match(status[field])
        assert tags[FIELDS[field]] == status[field]
    assert status["job_id"] == JOB_ID
    assert status["instance_id"] == world.instance_id


def test_a_job_that_succeeds_leaves_its_log_tags_and_status_file(world):
    log = world.tmp / "efs" / "logs" / JOB_ID / f"{world.instance_id}.log"
    result = world.run(
        "--log-to",
        f"file:{world.tmp}/efs/logs/{{job_id}}/{{instance_id}}.log",
        command=["bash", "-c", "echo out; echo err >&2; printf 'no newline'"],
    )
    assert result.returncode == 0, result.stdout
    assert "out\nerr\nno newline" in result.stdout
    assert log.read_text() == "out\nerr\nno newline"
    assert_recorded(world, status="succeeded", exit_code=0, log=str(log), log_error=None, draining=None)

    # IMDSv2: a token first, then every GET with it; the job signs with the role's keys from it.
    assert world.imds.requests[0][:2] == ("PUT", "/latest/api/token")
    assert all(status == 200 for _method, _path, status in world.imds.requests)
    assert world.imds.credential_fetches == 1


def test_a_job_that_fails_records_its_exit_code(world):
    result = world.run(command=["bash", "-c", "echo about to fail; exit 3"])
    assert result.returncode == 3
    assert "about to fail" in result.stdout
    assert_recorded(world, status="failed", exit_code=3, log=None, log_error=None)


def test_a_command_that_cannot_start_fails_with_127(world):
    result = world.run(command=[str(world.tmp / "no-such-program")])
    assert result.returncode == 127
    assert_recorded(world, status="failed", exit_code=127)


def test_a_job_past_its_time_limit_is_killed_with_its_process_group(world):
    log = world.tmp / "job.log"
    script = 'trap "" TERM; sleep 60 & echo $! > child.pid; echo started; while :; do sleep 0.1; done'
    result = world.run(
        "--log-to", str(log), "--time-limit", "0.02", "--grace-seconds", "0.5", command=["bash", "-c", script]
    )
    assert result.returncode == 124, result.stdout
    assert "time limit of 0.02 min reached" in result.stdout
    assert "SIGKILL" in result.stdout
    text = log.read_text()
    assert text.startswith("started\n")
    assert "[burst_job] " in text and "time limit of 0.02 min reached" in text
    assert_recorded(world, status="timed_out", exit_code=124, log=str(log), log_error=None)

    child = int((world.tmp / "child.pid").read_text())

    def gone():
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        return state in ("Z", "X")

    wait_for(gone, "the job's background process to be killed")


def test_s3_destination_is_uploaded_again_while_the_job_runs(world):
    world.s3.create_bucket(Bucket="burst-logs", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    key = f"jobs/{JOB_ID}/{world.instance_id}.log"

    def body():
        try:
            return world.s3.get_object(Bucket="burst-logs", Key=key)["Body"].read()
        except world.s3.exceptions.NoSuchKey:
            return None

    job = world.start(
        "--log-to",
        "s3://burst-logs/jobs/{job_id}/{instance_id}.log",
        "--flush-seconds",
        "0.2",
        command=["bash", "-c", f"echo one; {WAIT_FOR_RELEASE}; echo two"],
    )
    try:
        wait_for(lambda: body() == b"one\n", "the first line in S3")
        (world.tmp / "release").touch()
        output, _errors = job.communicate(timeout=30)
    finally:
        job.kill()
        job.wait()
    assert job.returncode == 0, output
    assert body() == b"one\ntwo\n"
    assert_recorded(world, status="succeeded", exit_code=0, log=f"s3://burst-logs/{key}", log_error=None)


def test_cloudwatch_destination_gets_one_event_per_line(world):
    world.logs.create_log_group(logGroupName="/burst/jobs")
    result = world.run(
        "--log-to",
        "cloudwatch:/burst/jobs",
        "--flush-seconds",
        "0.2",
        command=["bash", "-c", "echo alpha; sleep 0.5; echo; echo beta"],
    )
    assert result.returncode == 0, result.stdout
    stream = f"{JOB_ID}/{world.instance_id}"
    events = world.logs.get_log_events(logGroupName="/burst/jobs", logStreamName=stream)["events"]
    assert [event["message"] for event in events] == ["alpha", " ", "beta"]
    stamps = [event["timestamp"] for event in events]
    assert stamps == sorted(stamps)
    assert_recorded(world, status="succeeded", exit_code=0, log=f"cloudwatch:/burst/jobs:{stream}", log_error=None)


def test_without_a_job_id_the_instance_id_names_the_job(world):
    world.logs.create_log_group(logGroupName="/burst/jobs")
    result = world.run("--log-to", "cloudwatch:/burst/jobs", command=["echo", "hello"], job_id=None)
    assert result.returncode == 0, result.stdout
    stream = f"{world.instance_id}/{world.instance_id}"
    events = world.logs.get_log_events(logGroupName="/burst/jobs", logStreamName=stream)["events"]
    assert [event["message"] for event in events] == ["hello"]
    status = world.status(world.instance_id)
    assert (status["job_id"], status["status"], status["log"]) == (
        world.instance_id,
        "succeeded",
        f"cloudwatch:/burst/jobs:{stream}",
    )


@pytest.mark.parametrize(
    ("dest", "error"),
    [
        ("s3://no-such-bucket/log.txt", "NoSuchBucket"),
        ("cloudwatch:/burst/missing:my-stream", "log group /burst/missing does not exist"),
        ("{tmp}/a-file/job.log", "cannot write {tmp}/a-file/job.log: File exists ({tmp}/a-file)"),
    ],
    ids=["s3-no-bucket", "cloudwatch-no-group", "path-under-a-file"],
)
def test_a_destination_that_refuses_writes_does_not_stop_the_job(world, dest, error):
    (world.tmp / "a-file").write_text("in the way\n")
    dest, error = dest.format(tmp=world.tmp), error.format(tmp=world.tmp)
    result = world.run("--log-to", dest, "--flush-seconds", "0.2", command=["bash", "-c", "echo still here; exit 0"])
    assert result.returncode == 0, result.stdout
    assert "still here" in result.stdout
    assert "refused the log" in result.stdout
    status, tags = world.status(), world.tags()
    assert status["status"] == "succeeded"
    assert error in status["log_error"]
    assert error in tags["BurstJobLogError"]
    assert len(tags["BurstJobLogError"]) <= 256


def test_a_spot_interruption_notice_flushes_the_log_and_tags_draining(world):
    log = world.tmp / "job.log"
    deadline = "2030-01-01T12:02:00Z"
    job = world.start(
        "--log-to",
        str(log),
        "--flush-seconds",
        "600",
        command=[
            "bash",
            "-c",
            "echo checkpoint-me; touch printed; while [ ! -e release ]; do sleep 0.05; done; echo done",
        ],
    )
    try:
        wait_for((world.tmp / "printed").exists, "the job's first line")
        assert "checkpoint-me" not in log.read_text()  # not flushed yet: the next flush is minutes away
        notice = {
            "reason": "spot-interruption",
            "action": "terminate",
            "deadline": deadline,
            "noticed_at": "2030-01-01T12:00:00Z",
        }
        world.interruption_file.parent.mkdir()
        partial = world.interruption_file.with_suffix(".tmp")
        partial.write_text(json.dumps(notice))
        partial.rename(world.interruption_file)

        wait_for(lambda: "checkpoint-me" in log.read_text(), "the log flushed on the notice")
        wait_for(lambda: world.tags().get("BurstDraining") == deadline, "the BurstDraining tag")
        assert job.poll() is None  # the job is not stopped
        assert world.status()["draining"] == deadline
        assert world.status()["status"] == "running"

        (world.tmp / "release").touch()
        output, _errors = job.communicate(timeout=30)
    finally:
        job.kill()
        job.wait()
    assert job.returncode == 0, output
    text = log.read_text()
    assert text.startswith("checkpoint-me\n")
    assert text.endswith("done\n")
    assert f"spot interruption notice (action terminate, deadline {deadline})" in text
    assert_recorded(world, status="succeeded", exit_code=0, draining=deadline, log=str(log))


@pytest.mark.parametrize(
    "dest",
    ["relative/job.log", "s3://Bad_Bucket/key", "s3://burst-logs", "cloudwatch:bad group", "https://example.com/log"],
)
def test_a_bad_destination_fails_before_the_job_runs(world, dest):
    result = world.run("--log-to", dest, command=["touch", "ran"])
    assert result.returncode == 2
    assert "bad log destination" in result.stdout
    assert not (world.tmp / "ran").exists()
    status = world.status()
    assert (status["status"], status["exit_code"], status["log"]) == ("failed", 2, dest)
    assert dest in status["log_error"]
    assert world.tags()["BurstJobStatus"] == "failed"


def test_usage_errors_exit_2(world):
    assert world.run("--time-limit", "0", command=["true"]).returncode == 2
    assert world.run(command=["true"], job_id="a/b").returncode == 2
    no_command = subprocess.run(
        [sys.executable, str(SCRIPT), "--job-id", JOB_ID], capture_output=True, text=True, timeout=30, check=False
    )
    assert no_command.returncode == 2
    assert "give the command after --" in no_command.stderr
    assert not world.status_dir.exists()


def test_without_a_metadata_service_the_job_runs_untagged(world):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        world.env["BURST_IMDS_ENDPOINT"] = f"http://127.0.0.1:{closed.getsockname()[1]}"
    log = world.tmp / "job.log"
    result = world.run("--log-to", str(log), command=["bash", "-c", "echo local run; exit 4"])
    assert result.returncode == 4
    assert "the instance is not tagged" in result.stdout
    assert log.read_text() == "local run\n"
    status = world.status()
    assert (status["status"], status["exit_code"], status["instance_id"]) == ("failed", 4, None)
    assert "BurstJobStatus" not in world.tags()
