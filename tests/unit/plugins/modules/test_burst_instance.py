"""Tests of the burst_instance module's logic (BurstInstances) against moto on loopback.

Capacity errors, which moto never gives, come from the test world's fault
plan (localworld.faults) registered on the EC2 client. Health probes go to a
loopback HTTP stand-in only: moto's instance addresses are never contacted.
"""

from __future__ import annotations

import base64
import http.server
import threading

import boto3
import pytest

from ansible_collections.burst.golden_ami.plugins.module_utils._launch import Launcher, LaunchError
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
        ready = self.path.split("?")[0] == "/ready"
        self.send_response(200 if ready else 503)
        self.end_headers()
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
