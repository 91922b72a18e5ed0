"""Tests of the burst_instance module's logic (BurstInstances) against moto on loopback.

Capacity errors, which moto never gives, come from the test world's fault
plan (localworld.faults) registered on the EC2 client. Health probes go to a
loopback HTTP stand-in only: moto's instance addresses are never contacted.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import sys
import threading

import boto3
import pytest
from ansible.module_utils import basic

from ansible_collections.burst.golden_ami.plugins.module_utils._launch import Launcher, LaunchError
from ansible_collections.burst.golden_ami.plugins.module_utils._prices import PRICES_DATE
from ansible_collections.burst.golden_ami.plugins.modules import burst_instance
from ansible_collections.burst.golden_ami.plugins.modules.burst_instance import BurstInstances, argument_spec
from localworld.faults import register

BASE_IMAGE_NAME = "amzn2-ami-hvm-2.0.20180810-x86_64-gp2"
# One of moto's built-in arm64 images (owned by amazon).
ARM64_IMAGE_PREFIX = "al2022-ami-2022.0.20220728.1-kernel-5.15-arm64"


def _defaults(**overrides):
    params = {name: spec.get("default") for name, spec in argument_spec().items()}
    params.update(overrides)
    return params


@pytest.fixture
def world(aws_env):
    """EC2 and SSM clients on moto, a golden image tagged Version=1.4, and the default VPC's subnets."""
    ec2 = boto3.client("ec2")
    ssm = boto3.client("ssm")
    # One of moto's built-in images, found by name: listing them all takes seconds.
    base = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [BASE_IMAGE_NAME]}])["Images"]
    base = base[0]["ImageId"]
    builder = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1, InstanceType="t3.micro")["Instances"][0]
    image_id = ec2.create_image(
        InstanceId=builder["InstanceId"],
        Name="burst-golden-v1.4",
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "Version", "Value": "1.4"}]}],
    )["ImageId"]
    ec2.terminate_instances(InstanceIds=[builder["InstanceId"]])
    subnets = sorted(ec2.describe_subnets()["Subnets"], key=lambda s: s["AvailabilityZone"])
    return {"ec2": ec2, "ssm": ssm, "image_id": image_id, "subnets": [s["SubnetId"] for s in subnets]}


def _job_instances(ec2, job_id, states=("pending", "running")):
    pages = ec2.describe_instances(
        Filters=[
            {"Name": "tag:BurstJobId", "Values": [job_id]},
            {"Name": "instance-state-name", "Values": list(states)},
        ]
    )
    return [i for r in pages["Reservations"] for i in r["Instances"]]


def _module(world, check_mode=False, **params):
    launcher = Launcher(world["ec2"], world["ssm"], sleep=lambda _s: None)
    return BurstInstances(_defaults(**params), launcher, check_mode=check_mode, sleep=lambda _s: None)


def test_launch_falls_back_on_capacity_errors_and_is_idempotent_by_job_id(world):
    subnets = world["subnets"][:2]
    register(
        world["ec2"],
        [
            {
                "operation": "RunInstances",
                "match": {"InstanceType": "g6e.xlarge"},
                "code": "InsufficientInstanceCapacity",
                "message": "We currently do not have sufficient g6e.xlarge capacity",
            },
            {
                "operation": "RunInstances",
                "match": {"InstanceType": "g6.2xlarge", "SubnetId": subnets[0]},
                "code": "SpotMaxPriceTooLow",
            },
        ],
    )
    params = dict(
        job_id="job-7",
        count=2,
        image_id=world["image_id"],
        instance_types=["g6e.xlarge", "g6.2xlarge", "g5.2xlarge"],
        subnet_ids=subnets,
        spot_max_price="1.50",
        tags={"Team": "ml"},
        root_volume={"size": 80, "volume_type": "gp3", "throughput": 500, "initialization_rate": 300},
    )
    first = _module(world, **params).present()

    assert first["changed"] is True
    assert [(a["instance_type"], a["subnet_id"], a["error_code"]) for a in first["attempts"]] == [
        ("g6e.xlarge", subnets[0], "InsufficientInstanceCapacity"),
        ("g6e.xlarge", subnets[1], "InsufficientInstanceCapacity"),
        ("g6.2xlarge", subnets[0], "SpotMaxPriceTooLow"),
        ("g6.2xlarge", subnets[1], None),
    ]
    assert len(first["instances"]) == 2
    for facts in first["instances"]:
        assert facts["instance_type"] == "g6.2xlarge"
        assert facts["state"] == "running"
        assert facts["market"] == "spot"
        assert facts["spot_max_price"] == "1.50"
        assert facts["image_id"] == world["image_id"]
        assert facts["image_version"] == "1.4"
        assert facts["tags"] == {"Mode": "Burst", "BurstJobId": "job-7", "Team": "ml"}
    assert first["image"]["version"] == "1.4"
    assert sorted(first["launched_ids"]) == sorted(first["instance_ids"])

    launched = _job_instances(world["ec2"], "job-7")
    assert len(launched) == 2
    instance = launched[0]
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    shutdown = world["ec2"].describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="instanceInitiatedShutdownBehavior"
    )
    assert shutdown["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    user_data = world["ec2"].describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
    script = base64.b64decode(user_data["UserData"]["Value"]).decode()
    assert "--on-active=120min" in script and "/opt/burst/startup.sh" in script
    volume_ids = [m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]]
    volumes = world["ec2"].describe_volumes(VolumeIds=volume_ids)["Volumes"]
    root = [v for v in volumes if v["Size"] == 80]
    assert root and root[0]["VolumeType"] == "gp3"
    assert {"Key": "BurstJobId", "Value": "job-7"} in root[0]["Tags"]

    second = _module(world, **params).present()
    assert second["changed"] is False
    assert sorted(second["instance_ids"]) == sorted(first["instance_ids"])
    assert second["attempts"] == [] and second["launched_ids"] == []
    assert len(_job_instances(world["ec2"], "job-7")) == 2


def test_spot_falls_back_to_on_demand(world):
    register(
        world["ec2"],
        [
            {
                "operation": "RunInstances",
                "match": {"InstanceMarketOptions.MarketType": "spot"},
                "code": "InsufficientInstanceCapacity",
            }
        ],
    )
    result = _module(
        world,
        job_id="job-od",
        image_id=world["image_id"],
        instance_types=["g6e.xlarge"],
        spot_fallback_on_demand=True,
    ).present()
    assert [(a["market"], a["error_code"]) for a in result["attempts"]] == [
        ("spot", "InsufficientInstanceCapacity"),
        ("on-demand", None),
    ]
    assert result["instances"][0]["market"] == "on-demand"
    assert result["instances"][0]["spot_max_price"] is None


def test_check_mode_launches_nothing(world):
    result = _module(
        world, check_mode=True, job_id="job-check", image_id=world["image_id"], instance_types=["g6e.xlarge"]
    ).present()
    assert result["changed"] is True
    assert result["instances"] == []
    assert _job_instances(world["ec2"], "job-check") == []


def test_image_by_ssm_parameter_and_by_family(world):
    world["ssm"].put_parameter(
        Name="/burst/golden/latest", Value=world["image_id"], Type="String", DataType="aws:ec2:image"
    )
    by_ssm = _module(
        world, job_id="job-ssm", image_ssm_parameter="/burst/golden/latest", instance_types=["g6e.xlarge"]
    ).present()
    assert by_ssm["image"]["image_id"] == world["image_id"]
    by_family = _module(
        world, job_id="job-family", image_family={"name_prefix": "burst-golden-v"}, instance_types=["g6e.xlarge"]
    ).present()
    assert by_family["image"]["image_id"] == world["image_id"]
    with pytest.raises(LaunchError, match="No available image found"):
        _module(
            world,
            job_id="job-x",
            image_family={"tag_key": "Version", "tag_value": "9.9"},
            instance_types=["g6e.xlarge"],
        ).present()


def test_the_family_leaves_out_a_newer_unverified_candidate(world):
    ec2 = world["ec2"]
    base = ec2.describe_images(ImageIds=[world["image_id"]])["Images"][0]
    builder = ec2.run_instances(ImageId=world["image_id"], MinCount=1, MaxCount=1, InstanceType="t3.micro")
    builder = builder["Instances"][0]["InstanceId"]
    tags = [{"Key": "Version", "Value": "1.5"}, {"Key": "ImageStage", "Value": "candidate"}]
    candidate = ec2.create_image(
        InstanceId=builder, Name="burst-golden-v1.5", TagSpecifications=[{"ResourceType": "image", "Tags": tags}]
    )["ImageId"]
    ec2.terminate_instances(InstanceIds=[builder])
    assert base["Name"] == "burst-golden-v1.4"
    for family in ({"name_prefix": "burst-golden-v"}, {"tags": {"Version": None}}, {"tag_key": "Version"}):
        result = _module(
            world, job_id="job-candidate", image_family=family, instance_types=["g6e.xlarge"], check_mode=True
        ).present()
        assert result["image"]["image_id"] == world["image_id"] != candidate, family


def _arm64_family(**more):
    return dict(name_prefix=ARM64_IMAGE_PREFIX, owners=["amazon"], architecture="arm64", **more)


@pytest.mark.parametrize("check_mode", [False, True])
def test_an_arm64_image_on_x86_types_fails_before_anything_is_launched(world, check_mode):
    logic = _module(
        world,
        check_mode=check_mode,
        job_id="job-arm-on-x86",
        image_family=_arm64_family(),
        instance_types=["g6e.xlarge", "g5.2xlarge"],
    )
    with pytest.raises(LaunchError) as failed:
        logic.present()
    assert failed.value.message.startswith("Image ami-")
    assert failed.value.message.endswith(
        " is arm64; none of the instance types g6e.xlarge, g5.2xlarge supports arm64 (they support x86_64): "
        "choose arm64 types such as g5g.xlarge, or an x86_64 image"
    )
    assert _job_instances(world["ec2"], "job-arm-on-x86") == []


def test_a_family_by_filters_and_types_left_out_for_the_architecture(world):
    ec2 = world["ec2"]
    arm = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [f"{ARM64_IMAGE_PREFIX}*"]}])
    arm = arm["Images"][0]["ImageId"]
    made = {}
    # An arm64 image, then a newer x86_64 one, in the same family (an image's architecture is its instance's).
    for name, base, instance_type in (
        ("burst-multi-v1", arm, "g5g.xlarge"),
        ("burst-multi-v2", world["image_id"], "t3.micro"),
    ):
        builder = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1, InstanceType=instance_type)
        builder = builder["Instances"][0]["InstanceId"]
        made[name] = ec2.create_image(InstanceId=builder, Name=name)["ImageId"]
        ec2.terminate_instances(InstanceIds=[builder])

    logic = _module(
        world,
        job_id="job-multi-arm",
        image_family={
            "name_prefix": "burst-multi-v",
            "filters": {"architecture": "arm64", "virtualization-type": "hvm"},
        },
        instance_types=["g6e.xlarge", "g5g.xlarge"],
    )
    result = logic.present()
    assert result["image"]["image_id"] == made["burst-multi-v1"]
    assert [(a["instance_type"], a["error_code"]) for a in result["attempts"]] == [("g5g.xlarge", None)]
    assert result["instances"][0]["instance_type"] == "g5g.xlarge"
    assert logic.warnings == [
        f"Instance type g6e.xlarge does not support arm64, the architecture of image {made['burst-multi-v1']}: "
        "left out, launching on g5g.xlarge"
    ]

    x86 = _module(
        world,
        check_mode=True,
        job_id="job-multi-x86",
        image_family={"name_prefix": "burst-multi-v", "architecture": "x86_64"},
        instance_types=["g6e.xlarge"],
    )
    assert x86.present()["image"]["image_id"] == made["burst-multi-v2"]
    assert x86.warnings == []

    with pytest.raises(LaunchError) as failed:
        _module(
            world,
            check_mode=True,
            job_id="job-multi-none",
            image_family={"name_prefix": "burst-multi-v", "filters": {"architecture": "i386"}},
            instance_types=["g6e.xlarge"],
        ).present()
    assert failed.value.message.endswith("for the newest image named burst-multi-v* matching architecture=i386")


def test_a_denied_describe_instance_types_launches_with_a_warning(world):
    register(world["ec2"], [{"operation": "DescribeInstanceTypes", "code": "UnauthorizedOperation", "status": 403}])
    logic = _module(world, job_id="job-denied", image_id=world["image_id"], instance_types=["g6e.xlarge"])
    result = logic.present()
    assert result["changed"] is True and len(result["launched_ids"]) == 1
    assert len(logic.warnings) == 1
    assert logic.warnings[0].startswith("Not allowed to describe instance types in ")
    assert "were not checked against the architecture of image" in logic.warnings[0]


def test_an_unknown_instance_type_is_named(world):
    with pytest.raises(LaunchError, match=r"^Instance type g9z\.xlarge does not exist in "):
        _module(world, job_id="job-unknown", image_id=world["image_id"], instance_types=["g9z.xlarge"]).present()
    assert _job_instances(world["ec2"], "job-unknown") == []


def test_absent_by_job_id_by_ids_and_by_tags(world):
    def launch(job_id, tags=None):
        return _module(
            world, job_id=job_id, image_id=world["image_id"], instance_types=["g6e.xlarge"], tags=tags or {}
        ).present()["instance_ids"]

    job_a = launch("job-a")
    job_b = launch("job-b")
    job_c = launch("job-c", tags={"Batch": "nightly"})

    check = _module(world, check_mode=True, state="absent", job_id="job-a").absent()
    assert check["changed"] is True and check["instance_ids"] == job_a
    assert len(_job_instances(world["ec2"], "job-a")) == 1

    by_job = _module(world, state="absent", job_id="job-a").absent()
    assert by_job["changed"] is True and by_job["instance_ids"] == job_a
    assert _job_instances(world["ec2"], "job-a") == []
    assert _module(world, state="absent", job_id="job-a").absent()["changed"] is False

    by_id = _module(world, state="absent", instance_ids=job_b).absent()
    assert by_id["instance_ids"] == job_b
    assert _job_instances(world["ec2"], "job-b") == []

    by_tag = _module(world, state="absent", tags={"Batch": "nightly"}).absent()
    assert by_tag["instance_ids"] == job_c
    assert _job_instances(world["ec2"], "job-c") == []


def test_absent_needs_a_selector(world):
    with pytest.raises(LaunchError, match="needs instance_ids, job_id or tags"):
        _module(world, state="absent").absent()


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path = self.path.split("?")[0]
        ready = path in ("/ready", "/booted")
        self.send_response(200 if ready else 503)
        self.end_headers()
        if path == "/booted":
            # The instance's healthcheck aggregator says how long the boot took.
            self.wfile.write(b'{"ready": true, "boot_to_ready_s": 74.5}')
        else:
            self.wfile.write(b'{"ready": true}' if ready else b'{"ready": false}')

    def log_message(self, *_args):
        pass


@pytest.fixture
def health_port():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_waits_for_the_healthcheck(world, health_port):
    # The template uses the instance id only: the probe goes to the loopback stand-in, never to moto's addresses.
    result = _module(
        world,
        job_id="job-health",
        image_id=world["image_id"],
        instance_types=["g6e.xlarge"],
        health_url=f"http://127.0.0.1:{health_port}/ready?instance={{instance_id}}",
        health_timeout=5,
    ).present()
    assert result["instances"][0]["health"] == "ready"

    with pytest.raises(LaunchError, match=r"waiting for the healthcheck: i-[0-9a-f]+: starting"):
        _module(
            world,
            job_id="job-sick",
            image_id=world["image_id"],
            instance_types=["g6e.xlarge"],
            health_url=f"http://127.0.0.1:{health_port}/loading",
            health_timeout=0,
        ).present()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"instance_types": None}, "instance_types is required"),
        ({"image_family": {"tag_key": "Version", "name_prefix": "x", "owners": ["self"]}}, "not both"),
        ({"image_family": {"filters": ["architecture=arm64"]}}, "image_family: Image filters must be a dict"),
        ({"image_family": {"filters": {"": "arm64"}}}, "image_family: Invalid image filter name ''"),
        ({"efs": {"file_system_id": "fs-12345678", "mount_point": "relative"}}, "absolute path"),
        ({"root_volume": {"initialization_rate": 500}}, "100 to 300 MiB/s"),
        ({"root_volume": {"size": 2}}, "smaller than the"),
    ],
)
def test_bad_input_is_refused_before_launching(world, params, message):
    base = dict(job_id="job-bad", image_id=world["image_id"], instance_types=["g6e.xlarge"])
    base.update(params)
    if "image_family" in params:
        base.pop("image_id")
    with pytest.raises(LaunchError, match=message):
        _module(world, **base).present()
    assert _job_instances(world["ec2"], "job-bad") == []


def test_the_health_answer_gives_boot_to_ready(world, health_port):
    result = _module(
        world,
        job_id="job-boot",
        count=2,
        image_id=world["image_id"],
        instance_types=["g6e.xlarge"],
        health_url=f"http://127.0.0.1:{health_port}/booted?instance={{instance_id}}",
        health_timeout=5,
    ).present()
    assert [(f["health"], f["boot_to_ready_s"]) for f in result["instances"]] == [("ready", 74.5), ("ready", 74.5)]
    silent = _module(
        world,
        job_id="job-boot-silent",
        image_id=world["image_id"],
        instance_types=["g6e.xlarge"],
        health_url=f"http://127.0.0.1:{health_port}/ready?instance={{instance_id}}",
        health_timeout=5,
    ).present()
    assert silent["instances"][0]["boot_to_ready_s"] is None


# ---------------------------------------------------------------- jobs: access, logs, outcomes


def _instance_profile(name="burst-job-runner"):
    iam = boto3.client("iam")
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
    iam.create_instance_profile(InstanceProfileName=name)
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return name


def _user_data(ec2, instance_id):
    attribute = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(attribute["UserData"]["Value"]).decode()


def test_a_job_gets_its_profile_key_extra_user_data_and_runner_options(world):
    ec2 = world["ec2"]
    profile = _instance_profile()
    ec2.create_key_pair(KeyName="burst-debug")
    result = _module(
        world,
        job_id="job-access",
        image_id=world["image_id"],
        instance_types=["g6e.xlarge"],
        iam_instance_profile=profile,
        key_name="burst-debug",
        extra_user_data="echo extra-step",
        job_command="python3 /opt/app/run.py --input 'a b'",
        job_log="s3://burst-job-logs/{job_id}/{instance_id}.log",
        job_time_limit=90,
        max_lifetime=100,
    ).present()
    (instance,) = _job_instances(ec2, "job-access")
    assert instance["MetadataOptions"]["HttpTokens"] == "required"
    assert instance["KeyName"] == "burst-debug"
    assert instance["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/{profile}")
    script = _user_data(ec2, instance["InstanceId"])
    assert "\necho extra-step\n" in script
    assert "--on-active=100min" in script
    assert (
        "/usr/bin/python3 /opt/burst/burst_job.py --job-id job-access "
        "--log-to 's3://burst-job-logs/{job_id}/{instance_id}.log' --time-limit 90 -- "
        "bash -c 'python3 /opt/app/run.py --input '\"'\"'a b'\"'\"''"
    ) in script
    assert "timeout --kill-after=30 90m bash -c" in script
    # The cost is bounded by the job's limit, which ends the instance before its lifetime.
    assert result["cost"]["time_limit_minutes"] == 90


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"job_log": "s3://burst-logs/{job_id}.log"}, r"written to S3 with the instance's credentials"),
        ({"job_log": "cloudwatch:/burst/jobs"}, r"written to CloudWatch Logs .* without iam_instance_profile"),
        ({"job_log": "logs/job.log"}, "Invalid job log destination 'logs/job.log'"),
        ({"job_log": "/var/log/{job}.log"}, r"the only placeholders are \{job_id\} and \{instance_id\}"),
        ({"job_time_limit": 120}, r"job_time_limit \(120 min\) must be less than max_lifetime \(120 min\)"),
        ({"job_time_limit": 0}, "Invalid job_time_limit 0"),
        ({"job_command": None, "job_log": "/var/log/job.log"}, "job_log needs job_command"),
        ({"job_command": None, "wait_for_job": True}, "wait_for_job needs job_command"),
        ({"cost_cap": 5.0, "max_lifetime": 0}, "cost_cap needs a time limit, and max_lifetime is 0"),
        ({"cost_cap": -1.0}, "Invalid cost_cap -1.0"),
        ({"on_demand_prices": {"g6e.xlarge": "free"}}, "Invalid on-demand price 'g6e.xlarge'"),
    ],
)
def test_bad_job_and_cost_options_are_refused_before_launching(world, params, message):
    base = dict(job_id="job-bad", image_id=world["image_id"], instance_types=["g6e.xlarge"], job_command="true")
    base.update(params)
    with pytest.raises(LaunchError, match=message):
        _module(world, **base).present()
    assert _job_instances(world["ec2"], "job-bad") == []


def _tag(ec2, instance_id, **tags):
    """What the job runner does on the instance, with the instance's role."""
    ec2.create_tags(Resources=[instance_id], Tags=[{"Key": k, "Value": v} for k, v in tags.items()])


def test_wait_for_job_returns_each_outcome(world):
    ec2 = world["ec2"]
    launched = {}
    outcomes = {
        "succeeded": dict(BurstJobStatus="succeeded", BurstJobExitCode="0", BurstJobLog="s3://logs/a.log"),
        "failed": dict(BurstJobStatus="failed", BurstJobExitCode="3"),
        "timed_out": dict(BurstJobStatus="timed_out", BurstJobExitCode="124", BurstJobLogError="AccessDenied"),
        "interrupted": dict(BurstJobStatus="running", BurstDraining="2026-01-01T00:05:00Z"),
        "lost": dict(BurstJobStatus="running"),
    }

    def job_runs(_seconds):
        # At the first wait, every job ends its own way: the ids are those of the launch, in order.
        if launched:
            return
        ids = sorted(i["InstanceId"] for i in _job_instances(ec2, "job-outcomes"))
        launched.update(zip(outcomes, ids))
        for name, instance_id in launched.items():
            _tag(ec2, instance_id, BurstJobStartedAt="2026-01-01T00:01:00Z", **outcomes[name])
            if name in ("timed_out", "failed", "succeeded"):
                _tag(ec2, instance_id, BurstJobEndedAt="2026-01-01T00:09:00Z")
        ec2.terminate_instances(InstanceIds=[launched["interrupted"], launched["lost"], launched["timed_out"]])

    launcher = Launcher(world["ec2"], world["ssm"], sleep=job_runs)
    params = _defaults(
        job_id="job-outcomes",
        count=5,
        image_id=world["image_id"],
        instance_types=["g6e.xlarge"],
        iam_instance_profile=_instance_profile(),
        job_command="/opt/app/run.sh",
        wait_for_job=True,
    )
    logic = BurstInstances(params, launcher, sleep=lambda _s: None)
    result = logic.present()

    jobs = {f["instance_id"]: f["job"] for f in result["instances"]}
    by_outcome = {name: jobs[instance_id] for name, instance_id in launched.items()}
    assert {name: job["status"] for name, job in by_outcome.items()} == {name: name for name in outcomes}
    assert by_outcome["succeeded"] == {
        "status": "succeeded",
        "exit_code": 0,
        "started_at": "2026-01-01T00:01:00Z",
        "ended_at": "2026-01-01T00:09:00Z",
        "log": "s3://logs/a.log",
        "log_error": None,
    }
    assert by_outcome["failed"]["exit_code"] == 3
    assert by_outcome["timed_out"]["exit_code"] == 124 and by_outcome["timed_out"]["log_error"] == "AccessDenied"
    assert by_outcome["lost"]["exit_code"] is None
    assert result["jobs_failed"] == 4
    states = {f["instance_id"]: f["state"] for f in result["instances"]}
    assert states[launched["lost"]] == "terminated" and states[launched["succeeded"]] == "running"
    assert logic.warnings == []
    failure = BurstInstances.job_failure(result)
    assert failure.startswith("4 of 5 jobs did not succeed: ")
    assert f"{launched['failed']} failed, exit code 3" in failure
    assert f"{launched['timed_out']} timed_out, exit code 124" in failure
    assert f"{launched['interrupted']} interrupted" in failure and f"{launched['lost']} lost" in failure
    assert launched["succeeded"] not in failure


def test_a_job_still_running_at_the_timeout_is_named(world):
    logic = _module(
        world,
        job_id="job-slow",
        image_id=world["image_id"],
        instance_types=["g6e.xlarge"],
        job_command="sleep 86400",
        wait_for_job=True,
        job_wait_timeout=0,
    )
    with pytest.raises(LaunchError) as caught:
        logic.present()
    (instance,) = _job_instances(world["ec2"], "job-slow")
    assert caught.value.message == (
        "Timed out after 0s waiting for the job to end on 1 instance(s) still running: "
        f"{instance['InstanceId']} (job not started, instance running)"
    )
    assert logic.warnings == [
        "wait_for_job without iam_instance_profile: the job runner tags the instance with the instance's "
        "credentials, which it has none of, so no job can report its status (a terminated instance's job is then "
        "lost)"
    ]


def _run_module(monkeypatch, args):
    """Run burst_instance's main as Ansible would; returns its JSON result."""
    monkeypatch.setattr(basic, "_ANSIBLE_ARGS", json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode())
    monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy")
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    with pytest.raises(SystemExit):
        burst_instance.main()
    return json.loads(sys.stdout.getvalue())


def test_a_rerun_waits_for_the_job_and_fails_on_a_failed_one_unless_told_not_to(world, monkeypatch):
    ec2 = world["ec2"]
    args = dict(
        job_id="job-rerun",
        count=2,
        image_id=world["image_id"],
        instance_types=["g6e.xlarge"],
        iam_instance_profile=_instance_profile(),
        job_command="/opt/app/run.sh",
        terminate_after_job=False,
    )
    first = _module(world, **args).present()
    assert "jobs_failed" not in first and "job" not in first["instances"][0]
    good, bad = first["instance_ids"]
    _tag(ec2, good, BurstJobStatus="succeeded", BurstJobExitCode="0")
    _tag(ec2, bad, BurstJobStatus="failed", BurstJobExitCode="3", BurstJobLog="/var/log/job.log")

    failed = _run_module(monkeypatch, dict(args, wait_for_job=True))
    assert failed["failed"] is True and failed["changed"] is False
    assert failed["msg"] == f"1 of 2 jobs did not succeed: {bad} failed, exit code 3, log /var/log/job.log"
    assert [i["job"]["status"] for i in failed["instances"]] == ["succeeded", "failed"]
    assert failed["jobs_failed"] == 1 and failed["launched_ids"] == []

    tolerated = _run_module(monkeypatch, dict(args, wait_for_job=True, fail_on_job_error=False))
    assert not tolerated.get("failed") and tolerated["jobs_failed"] == 1
    assert tolerated["instances"][1]["job"]["exit_code"] == 3
    assert len(_job_instances(ec2, "job-rerun")) == 2


# ---------------------------------------------------------------- cost


def test_the_cost_cap_leaves_out_a_type_and_the_result_has_the_cost(world):
    # eu-central-1's list prices: g6e.xlarge 2.327 USD/h, g5.2xlarge 1.5156 USD/h; 60 min at most.
    logic = _module(
        world,
        job_id="job-capped",
        image_id=world["image_id"],
        instance_types=["g6e.xlarge", "g5.2xlarge"],
        market="on-demand",
        max_lifetime=60,
        cost_cap=2.0,
    )
    result = logic.present()
    assert [a["instance_type"] for a in result["attempts"]] == ["g5.2xlarge"]
    assert logic.warnings == [
        "Instance type g6e.xlarge left out: up to 2.327 USD for 1 instance(s) x 60 min at 2.327 USD/h (on-demand), "
        "above the cost cap of 2.00 USD; launching on g5.2xlarge"
    ]
    assert result["cost"] == {
        "currency": "USD",
        "prices_as_of": PRICES_DATE,
        "instances": [
            {
                "instance_id": result["instance_ids"][0],
                "instance_type": "g5.2xlarge",
                "market": "on-demand",
                "price_per_hour": 1.5156,
                "source": "on-demand-table",
                "availability_zone": result["instances"][0]["availability_zone"],
            }
        ],
        "price_per_hour": 1.5156,
        "time_limit_minutes": 60,
        "expected_run_cost": 1.5156,
        "max_run_cost": 1.5156,
        "cost_cap": 2.0,
        "error": None,
    }


def test_a_cost_cap_no_type_fits_launches_nothing_and_names_each(world):
    with pytest.raises(LaunchError) as caught:
        _module(
            world,
            job_id="job-too-dear",
            count=2,
            image_id=world["image_id"],
            instance_types=["g6e.xlarge", "g5.2xlarge"],
            spot_max_price="1.50",
            max_lifetime=120,
            job_command="/opt/app/run.sh",
            job_time_limit=30,
            on_demand_prices={"g5.2xlarge": 1.0},
            cost_cap=1.0,
        ).present()
    # Spot at 1.50 USD/h at most, for the job's 30 min, on 2 instances.
    assert caught.value.message == (
        "No instance type fits the cost cap of 1.00 USD for 2 instance(s) x 30 min: "
        "g6e.xlarge up to 1.50 USD, g5.2xlarge up to 1.50 USD"
    )
    assert _job_instances(world["ec2"], "job-too-dear") == []
    with pytest.raises(LaunchError, match=r"^No on-demand price known for t3\.micro in eu-central-1"):
        _module(
            world, job_id="job-too-dear", image_id=world["image_id"], instance_types=["t3.micro"], cost_cap=9.0
        ).present()
    assert _job_instances(world["ec2"], "job-too-dear") == []


def test_spot_cost_comes_from_the_price_history_and_a_refusal_is_only_reported(world):
    result = _module(
        world,
        job_id="job-spot-cost",
        image_id=world["image_id"],
        instance_types=["g6e.xlarge"],
        spot_max_price="1.50",
    ).present()
    cost = result["cost"]
    (priced,) = cost["instances"]
    # moto's spot price history answers 0.00001 USD/h for every offering.
    assert (priced["market"], priced["price_per_hour"], priced["source"]) == ("spot", 0.00001, "spot-price-history")
    assert priced["availability_zone"] == result["instances"][0]["availability_zone"]
    assert cost["time_limit_minutes"] == 120 and cost["max_run_cost"] == 3.0 and cost["cost_cap"] is None
    assert cost["expected_run_cost"] == 0.0 and cost["error"] is None

    register(world["ec2"], [{"operation": "DescribeSpotPriceHistory", "code": "UnauthorizedOperation", "status": 403}])
    denied = _module(
        world, job_id="job-spot-denied", image_id=world["image_id"], instance_types=["g6e.xlarge"]
    ).present()
    assert denied["changed"] is True and len(denied["launched_ids"]) == 1
    assert denied["cost"]["instances"][0]["price_per_hour"] is None
    assert denied["cost"]["price_per_hour"] is None and denied["cost"]["expected_run_cost"] is None
    assert denied["cost"]["error"].startswith("Failed to read the spot price history of g6e.xlarge in eu-central-1")
    # The most it can cost is still known: spot without a maximum price costs at most the on-demand price.
    assert denied["cost"]["max_run_cost"] == round(2.327 * 2, 4)
