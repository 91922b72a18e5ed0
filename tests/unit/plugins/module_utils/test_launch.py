"""Unit tests of the shared launcher (plugins/module_utils/_launch.py, _launch_request.py, _user_data.py, _health.py).

botocore's Stubber plays EC2 and SSM, so that capacity errors, which moto never
gives, can be answered in any order; the Stubber also checks every request
against botocore's model of the API.
"""

from __future__ import annotations

import http.server
import socket
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.stub import ANY, Stubber

from ansible_collections.burst.golden_ami.plugins.module_utils._aws import client_token
from ansible_collections.burst.golden_ami.plugins.module_utils._health import probe_health_many, wait_healthy
from ansible_collections.burst.golden_ami.plugins.module_utils._images import ImageFamily
from ansible_collections.burst.golden_ami.plugins.module_utils._launch import (
    ImageRef,
    Launcher,
    LaunchError,
    LaunchRequest,
    RootVolume,
    summarize_instance,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._user_data import build_user_data

REGION = "eu-central-1"
IMAGE_ID = "ami-0123456789abcdef0"
SUBNETS = ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"]
IMAGE = {
    "ImageId": IMAGE_ID,
    "Name": "burst-golden-v1.2",
    "State": "available",
    "CreationDate": "2026-01-02T03:04:05.000Z",
    "RootDeviceName": "/dev/sda1",
    "BlockDeviceMappings": [
        {"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": "snap-0123456789abcdef0", "VolumeSize": 60}}
    ],
    "Tags": [{"Key": "Version", "Value": "1.2"}],
}


def _client(service):
    return boto3.client(
        service,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - not a secret
        endpoint_url="http://127.0.0.1:9",  # never reached: the Stubber answers
    )


@pytest.fixture
def ec2():
    client = _client("ec2")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def launcher(ec2):
    client, _stubber = ec2
    return Launcher(client, region=REGION, sleep=lambda _s: None)


def _instance(
    instance_id, instance_type="g6e.xlarge", state="running", lifecycle="spot", zone="eu-central-1a", **extra
):
    instance = {
        "InstanceId": instance_id,
        "InstanceType": instance_type,
        "ImageId": IMAGE_ID,
        "State": {"Code": 16, "Name": state},
        "Placement": {"AvailabilityZone": zone},
        "PrivateIpAddress": "10.0.0.5",
        "LaunchTime": datetime(2026, 1, 1, tzinfo=timezone.utc),
        "Tags": [{"Key": "Mode", "Value": "Burst"}],
    }
    if lifecycle:
        instance["InstanceLifecycle"] = lifecycle
    instance.update(extra)
    return instance


def _reservations(*instances):
    return {"Reservations": [{"ReservationId": "r-0123456789abcdef0", "Instances": list(instances)}]}


def _request(**overrides):
    params = dict(
        image=ImageRef(image_id=IMAGE_ID),
        instance_types=["g6e.xlarge", "g6.2xlarge"],
        subnet_ids=SUBNETS,
        spot_max_price="1.50",
        tags={"Mode": "Burst"},
        identity_tag={"BurstJobId": "job-42"},
    )
    params.update(overrides)
    return LaunchRequest(**params)


def _expect_image_and_existing(stubber, existing=()):
    stubber.add_response("describe_images", {"Images": [IMAGE]}, {"ImageIds": [IMAGE_ID]})
    stubber.add_response("describe_instances", _reservations(*existing) if existing else {"Reservations": []})


def _capacity(stubber, code, message="no capacity"):
    stubber.add_client_error("run_instances", service_error_code=code, service_message=message, http_status_code=400)


# ---------------------------------------------------------------- fallback order


def test_capacity_errors_fall_back_over_subnets_then_types_then_on_demand(ec2, launcher):
    _client, stubber = ec2
    _expect_image_and_existing(stubber)
    _capacity(stubber, "InsufficientInstanceCapacity")
    _capacity(
        stubber,
        "Unsupported",
        "Your requested instance type (g6e.xlarge) is not supported in your requested Availability Zone",
    )
    _capacity(stubber, "SpotMaxPriceTooLow")
    _capacity(stubber, "MaxSpotInstanceCountExceeded")
    # The first on-demand attempt: no InstanceMarketOptions at all.
    stubber.add_response(
        "run_instances",
        {"Instances": [_instance("i-0123456789abcdef0", lifecycle=None)]},
        {
            "ImageId": IMAGE_ID,
            "InstanceType": "g6e.xlarge",
            "SubnetId": SUBNETS[0],
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": client_token("BurstJobId", "job-42", "on-demand", "g6e.xlarge", SUBNETS[0], 0),
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": ANY,
            "TagSpecifications": ANY,
        },
    )
    result = launcher.launch(_request(spot_fallback_on_demand=True))

    assert result.changed is True
    assert result.launched_ids == ["i-0123456789abcdef0"]
    assert result.market == "on-demand"
    tried = [(a.market, a.instance_type, a.subnet_id, a.error_code) for a in result.attempts]
    assert tried == [
        ("spot", "g6e.xlarge", SUBNETS[0], "InsufficientInstanceCapacity"),
        ("spot", "g6e.xlarge", SUBNETS[1], "Unsupported"),
        ("spot", "g6.2xlarge", SUBNETS[0], "SpotMaxPriceTooLow"),
        ("spot", "g6.2xlarge", SUBNETS[1], "MaxSpotInstanceCountExceeded"),
        ("on-demand", "g6e.xlarge", SUBNETS[0], None),
    ]


def test_spot_request_carries_max_price_imdsv2_tags_and_volume_options(ec2, launcher):
    _client, stubber = ec2
    _expect_image_and_existing(stubber)
    tags = [{"Key": "Mode", "Value": "Burst"}, {"Key": "BurstJobId", "Value": "job-42"}]
    stubber.add_response(
        "run_instances",
        {"Instances": [_instance("i-0123456789abcdef0"), _instance("i-0123456789abcdef1")]},
        {
            "ImageId": IMAGE_ID,
            "InstanceType": "g6e.xlarge",
            "SubnetId": SUBNETS[0],
            "MinCount": 2,
            "MaxCount": 2,
            "ClientToken": ANY,
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 2},
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
            "InstanceMarketOptions": {
                "MarketType": "spot",
                "SpotOptions": {
                    "SpotInstanceType": "one-time",
                    "InstanceInterruptionBehavior": "terminate",
                    "MaxPrice": "1.50",
                },
            },
            "BlockDeviceMappings": [
                {
                    "DeviceName": "/dev/sda1",
                    "Ebs": {
                        "DeleteOnTermination": True,
                        "VolumeSize": 80,
                        "VolumeType": "gp3",
                        "Iops": 6000,
                        "Throughput": 500,
                        "KmsKeyId": "alias/burst",
                        "Encrypted": True,
                        "VolumeInitializationRate": 300,
                    },
                }
            ],
            "UserData": "#!/bin/bash\ntrue\n",
            "SecurityGroupIds": ["sg-0123456789abcdef0"],
            "IamInstanceProfile": {"Name": "burst-worker"},
        },
    )
    request = _request(
        count=2,
        user_data="#!/bin/bash\ntrue\n",
        security_group_ids=["sg-0123456789abcdef0"],
        iam_instance_profile="burst-worker",
        root_volume=RootVolume(
            size=80, volume_type="gp3", iops=6000, throughput=500, kms_key_id="alias/burst", initialization_rate=300
        ),
    )
    result = launcher.launch(request)
    assert result.instance_ids == ["i-0123456789abcdef0", "i-0123456789abcdef1"]
    assert result.market == "spot"


def test_other_errors_stop_at_once(ec2, launcher):
    _client, stubber = ec2
    _expect_image_and_existing(stubber)
    stubber.add_client_error("run_instances", service_error_code="InvalidParameterValue", service_message="bad key")
    with pytest.raises(LaunchError, match="bad key") as caught:
        launcher.launch(_request(spot_fallback_on_demand=True))
    assert [a.error_code for a in caught.value.attempts] == ["InvalidParameterValue"]


def test_unsupported_for_another_reason_is_not_a_capacity_error(ec2, launcher):
    _client, stubber = ec2
    _expect_image_and_existing(stubber)
    _capacity(stubber, "Unsupported", "The requested configuration is currently not supported.")
    with pytest.raises(LaunchError, match="not supported"):
        launcher.launch(_request())


def test_no_capacity_anywhere_names_every_attempt(ec2, launcher):
    _client, stubber = ec2
    _expect_image_and_existing(stubber)
    for _attempt in range(4):
        _capacity(stubber, "InsufficientInstanceCapacity")
    with pytest.raises(LaunchError, match="No capacity") as caught:
        launcher.launch(_request())
    assert len(caught.value.attempts) == 4
    assert "g6.2xlarge/subnet-0bbbbbbbbbbbbbbbb/spot" in caught.value.message


# ---------------------------------------------------------------- idempotence


def test_existing_instances_of_the_job_launch_nothing(ec2, launcher):
    _client, stubber = ec2
    stubber.add_response("describe_images", {"Images": [IMAGE]}, {"ImageIds": [IMAGE_ID]})
    stubber.add_response(
        "describe_instances",
        _reservations(_instance("i-0123456789abcdef0"), _instance("i-0123456789abcdef1")),
        {
            "Filters": [
                {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
                {"Name": "tag:BurstJobId", "Values": ["job-42"]},
            ]
        },
    )
    result = launcher.launch(_request(count=2))
    assert result.changed is False
    assert result.instance_ids == ["i-0123456789abcdef0", "i-0123456789abcdef1"]
    assert result.attempts == []


def test_a_missing_instance_is_launched_with_a_token_that_counts_the_existing(ec2, launcher):
    _client, stubber = ec2
    _expect_image_and_existing(stubber, [_instance("i-0123456789abcdef0")])
    stubber.add_response(
        "run_instances",
        {"Instances": [_instance("i-0123456789abcdef1")]},
        {
            "ImageId": IMAGE_ID,
            "InstanceType": "g6e.xlarge",
            "SubnetId": SUBNETS[0],
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": client_token("BurstJobId", "job-42", "spot", "g6e.xlarge", SUBNETS[0], 1),
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": ANY,
            "TagSpecifications": ANY,
            "InstanceMarketOptions": ANY,
        },
    )
    result = launcher.launch(_request(count=2))
    assert result.changed is True
    assert result.launched_ids == ["i-0123456789abcdef1"]
    assert result.instance_ids == ["i-0123456789abcdef0", "i-0123456789abcdef1"]


def test_check_mode_launches_nothing(ec2, launcher):
    _client, stubber = ec2
    _expect_image_and_existing(stubber)
    result = launcher.launch(_request(), check_mode=True)
    assert result.changed is True
    assert result.instances == []


def test_client_tokens_are_stable_and_distinct():
    one = client_token("BurstJobId", "job-42", "spot", "g6e.xlarge", SUBNETS[0], 0)
    assert one == client_token("BurstJobId", "job-42", "spot", "g6e.xlarge", SUBNETS[0], 0)
    assert one != client_token("BurstJobId", "job-42", "spot", "g6e.xlarge", SUBNETS[1], 0)
    assert one != client_token("BurstJobId", "job-43", "spot", "g6e.xlarge", SUBNETS[0], 0)
    assert len(one) <= 64 and one.isascii()


# ---------------------------------------------------------------- images


def test_image_by_ssm_parameter():
    ec2_client, ssm_client = _client("ec2"), _client("ssm")
    with Stubber(ec2_client) as ec2_stub, Stubber(ssm_client) as ssm_stub:
        ssm_stub.add_response(
            "get_parameter",
            {"Parameter": {"Name": "/burst/golden", "Value": IMAGE_ID, "Type": "String"}},
            {"Name": "/burst/golden"},
        )
        ec2_stub.add_response("describe_images", {"Images": [IMAGE]}, {"ImageIds": [IMAGE_ID]})
        image = Launcher(ec2_client, ssm_client).resolve_image(ImageRef(ssm_parameter="/burst/golden"))
    assert image["ImageId"] == IMAGE_ID


def test_missing_ssm_parameter_is_named():
    ssm_client = _client("ssm")
    with Stubber(ssm_client) as ssm_stub:
        ssm_stub.add_client_error("get_parameter", service_error_code="ParameterNotFound")
        with pytest.raises(LaunchError, match="SSM parameter /burst/nope not found"):
            Launcher(_client("ec2"), ssm_client).resolve_image(ImageRef(ssm_parameter="/burst/nope"))


def _family_image(image_id, created, name="burst-golden-v1"):
    return dict(IMAGE, ImageId=image_id, CreationDate=created, Name=name)


def test_newest_image_of_a_tag_family(ec2, launcher):
    _client, stubber = ec2
    stubber.add_response(
        "describe_images",
        {
            "Images": [
                _family_image("ami-0000000000000000a", "2026-01-01T00:00:00.000Z"),
                _family_image("ami-0000000000000000c", "2026-03-01T00:00:00.000Z"),
                _family_image("ami-0000000000000000b", "2026-02-01T00:00:00.000Z"),
            ]
        },
        {
            "Owners": ["self"],
            "Filters": [{"Name": "state", "Values": ["available"]}, {"Name": "tag:Family", "Values": ["burst"]}],
        },
    )
    image = launcher.resolve_image(ImageRef(family_tag={"Family": "burst"}))
    assert image["ImageId"] == "ami-0000000000000000c"


def test_newest_image_by_name_prefix_ignores_lookalikes(ec2, launcher):
    _client, stubber = ec2
    stubber.add_response(
        "describe_images",
        {
            "Images": [
                _family_image("ami-0000000000000000a", "2026-01-01T00:00:00.000Z", "burst-golden-v1"),
                # A filter that is looser than the prefix must not win.
                _family_image("ami-0000000000000000d", "2026-05-01T00:00:00.000Z", "other-burst-golden-v9"),
            ]
        },
    )
    image = launcher.resolve_image(ImageRef(name_prefix="burst-golden-v"))
    assert image["ImageId"] == "ami-0000000000000000a"


def test_a_newer_candidate_is_not_the_newest_of_its_family(ec2, launcher):
    _client, stubber = ec2
    candidate = _family_image("ami-0000000000000000e", "2026-06-01T00:00:00.000Z", "burst-golden-v2")
    candidate["Tags"] = [{"Key": "Version", "Value": "2"}, {"Key": "ImageStage", "Value": "candidate"}]
    promoting = dict(candidate, ImageId="ami-0000000000000000f")
    promoting["Tags"] = [{"Key": "ImageStage", "Value": "promoting"}]
    promoted = _family_image("ami-0000000000000000b", "2026-02-01T00:00:00.000Z", "burst-golden-v1")
    promoted["Tags"] = [{"Key": "Version", "Value": "1"}, {"Key": "ImageStage", "Value": "promoted"}]
    stubber.add_response(
        "describe_images",
        {
            "Images": [
                _family_image("ami-0000000000000000a", "2026-01-01T00:00:00.000Z"),
                promoted,
                candidate,
                promoting,
            ]
        },
        {
            "Owners": ["self"],
            "Filters": [
                {"Name": "state", "Values": ["available"]},
                {"Name": "name", "Values": ["burst-golden-v*"]},
                {"Name": "tag-key", "Values": ["Version"]},
                {"Name": "tag:Project", "Values": ["burst"]},
            ],
        },
    )
    family = ImageFamily(name_prefix="burst-golden-v", tags={"Version": None, "Project": "burst"})
    image = launcher.resolve_image(ImageRef(family=family))
    assert image["ImageId"] == "ami-0000000000000000b"


def test_no_image_in_the_family_is_an_error(ec2, launcher):
    _client, stubber = ec2
    stubber.add_response("describe_images", {"Images": []})
    with pytest.raises(LaunchError, match=r"No available image found .* newest image named burst-golden-v"):
        launcher.resolve_image(ImageRef(name_prefix="burst-golden-v"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one way"),
        ({"image_id": IMAGE_ID, "name_prefix": "x"}, "exactly one way"),
        ({"image_id": "ami-xyz"}, "Invalid image id"),
        ({"family_tag": {"A": "1", "B": "2"}}, "single key"),
    ],
)
def test_bad_image_references(kwargs, message):
    with pytest.raises(LaunchError, match=message):
        ImageRef(**kwargs)


def test_a_family_by_filters_sends_them_all_and_the_newest_match_wins(ec2, launcher):
    _client, stubber = ec2
    arm = dict(IMAGE, Architecture="arm64")
    stubber.add_response(
        "describe_images",
        {
            "Images": [
                dict(arm, ImageId="ami-0000000000000000a", CreationDate="2026-01-01T00:00:00.000Z"),
                dict(arm, ImageId="ami-0000000000000000c", CreationDate="2026-03-01T00:00:00.000Z"),
                # An endpoint looser than its filter: an x86_64 image is not arm64, however new.
                dict(
                    IMAGE,
                    ImageId="ami-0000000000000000d",
                    CreationDate="2026-05-01T00:00:00.000Z",
                    Architecture="x86_64",
                ),
                dict(arm, ImageId="ami-0000000000000000b", CreationDate="2026-02-01T00:00:00.000Z"),
            ]
        },
        {
            "Owners": ["amazon", "123456789012"],
            "Filters": [
                {"Name": "state", "Values": ["available"]},
                {"Name": "name", "Values": ["burst-golden-v*"]},
                {"Name": "tag:Team", "Values": ["ml"]},
                {"Name": "virtualization-type", "Values": ["hvm"]},
                {"Name": "block-device-mapping.volume-type", "Values": ["gp3", "gp2"]},
                {"Name": "ena-support", "Values": ["true"]},
                {"Name": "architecture", "Values": ["arm64"]},
            ],
        },
    )
    family = ImageFamily(
        name_prefix="burst-golden-v",
        tags={"Team": "ml"},
        owners=["amazon", "123456789012"],
        architecture="arm64",
        filters={
            "virtualization-type": "hvm",
            "block-device-mapping.volume-type": ["gp3", "gp2"],
            "ena-support": True,
        },
    )
    image = launcher.resolve_image(ImageRef(family=family))
    assert image["ImageId"] == "ami-0000000000000000c"


def test_filters_alone_make_a_family_and_matching_nothing_names_them(ec2, launcher):
    _client, stubber = ec2
    expected = {
        "Owners": ["amazon"],
        "Filters": [
            {"Name": "state", "Values": ["available"]},
            {"Name": "architecture", "Values": ["arm64"]},
            {"Name": "tag:Team", "Values": ["ml"]},
        ],
    }
    stubber.add_response("describe_images", {"Images": []}, expected)
    family = ImageFamily.from_option({"owners": ["amazon"], "filters": {"architecture": "arm64", "tag:Team": "ml"}})
    with pytest.raises(LaunchError) as failed:
        launcher.resolve_image(ImageRef(family=family))
    assert failed.value.message == (
        f"No available image found in {REGION} for the newest image matching architecture=arm64, tag:Team=ml "
        "owned by amazon"
    )


# ---------------------------------------------------------------- architectures


def _types(**architectures):
    """A DescribeInstanceTypes answer: ``g6e_xlarge=["x86_64"]`` for g6e.xlarge."""
    return {
        "InstanceTypes": [
            {"InstanceType": name.replace("_", "."), "ProcessorInfo": {"SupportedArchitectures": list(archs)}}
            for name, archs in architectures.items()
        ]
    }


def _expect_arm64_image(stubber, existing=()):
    image = dict(IMAGE, Architecture="arm64")
    stubber.add_response("describe_images", {"Images": [image]}, {"ImageIds": [IMAGE_ID]})
    stubber.add_response("describe_instances", _reservations(*existing) if existing else {"Reservations": []})


ARM64_ON_X86 = (
    f"Image {IMAGE_ID} is arm64; none of the instance types g6e.xlarge, g5.2xlarge supports arm64 "
    "(they support x86_64): choose arm64 types such as g5g.xlarge, or an x86_64 image"
)


@pytest.mark.parametrize("check_mode", [False, True])
def test_an_arm64_image_on_x86_types_fails_before_anything_is_launched(ec2, launcher, check_mode):
    _client, stubber = ec2
    _expect_arm64_image(stubber)
    stubber.add_response(
        "describe_instance_types",
        _types(g6e_xlarge=["x86_64"], g5_2xlarge=["x86_64"]),
        {"InstanceTypes": ["g6e.xlarge", "g5.2xlarge"]},
    )
    # No RunInstances answer is planned: the Stubber fails any request for one.
    with pytest.raises(LaunchError) as failed:
        launcher.launch(_request(instance_types=["g6e.xlarge", "g5.2xlarge"]), check_mode=check_mode)
    assert failed.value.message == ARM64_ON_X86
    assert failed.value.attempts == []


def test_types_that_cannot_run_the_image_are_left_out_with_a_warning(ec2, launcher):
    _client, stubber = ec2
    _expect_arm64_image(stubber)
    stubber.add_response(
        "describe_instance_types",
        _types(g6e_xlarge=["x86_64"], g5g_xlarge=["arm64"], g5_2xlarge=["x86_64"]),
        {"InstanceTypes": ["g6e.xlarge", "g5g.xlarge", "g5.2xlarge"]},
    )
    _capacity(stubber, "InsufficientInstanceCapacity")
    stubber.add_response(
        "run_instances",
        {"Instances": [_instance("i-0123456789abcdef0", instance_type="g5g.xlarge")]},
        {
            "ImageId": IMAGE_ID,
            "InstanceType": "g5g.xlarge",
            "SubnetId": SUBNETS[1],
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": ANY,
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": ANY,
            "TagSpecifications": ANY,
            "InstanceMarketOptions": ANY,
        },
    )
    result = launcher.launch(_request(instance_types=["g6e.xlarge", "g5g.xlarge", "g5.2xlarge"]))
    assert [(a.instance_type, a.subnet_id, a.error_code) for a in result.attempts] == [
        ("g5g.xlarge", SUBNETS[0], "InsufficientInstanceCapacity"),
        ("g5g.xlarge", SUBNETS[1], None),
    ]
    assert result.warnings == [
        f"Instance types g6e.xlarge, g5.2xlarge do not support arm64, the architecture of image {IMAGE_ID}: "
        "left out, launching on g5g.xlarge"
    ]


def test_a_type_ec2_says_nothing_about_is_kept(ec2, launcher):
    _client, stubber = ec2
    stubber.add_response("describe_instance_types", {"InstanceTypes": [{"InstanceType": "g6e.xlarge"}]})
    image = dict(IMAGE, Architecture="x86_64")
    assert launcher.usable_instance_types(image, ["g6e.xlarge", "g6.2xlarge"]) == (["g6e.xlarge", "g6.2xlarge"], [])


def test_instance_types_are_read_once_per_launcher(ec2, launcher):
    _client, stubber = ec2
    stubber.add_response("describe_instance_types", _types(g6e_xlarge=["x86_64"]), {"InstanceTypes": ["g6e.xlarge"]})
    stubber.add_response("describe_instance_types", _types(g5g_xlarge=["arm64"]), {"InstanceTypes": ["g5g.xlarge"]})
    assert launcher.instance_architectures(["g6e.xlarge"]) == {"g6e.xlarge": ["x86_64"]}
    assert launcher.instance_architectures(["g6e.xlarge"]) == {"g6e.xlarge": ["x86_64"]}
    both = launcher.instance_architectures(["g5g.xlarge", "g6e.xlarge"])
    assert both == {"g5g.xlarge": ["arm64"], "g6e.xlarge": ["x86_64"]}


def test_an_image_without_an_architecture_is_not_checked(launcher):
    # No DescribeInstanceTypes answer is planned: the Stubber fails any request for one.
    assert launcher.usable_instance_types(IMAGE, ["g6e.xlarge"]) == (["g6e.xlarge"], [])


@pytest.mark.parametrize("code", ["UnauthorizedOperation", "AccessDenied"])
def test_a_denied_describe_instance_types_skips_the_check_with_a_warning(ec2, launcher, code):
    _client, stubber = ec2
    _expect_arm64_image(stubber)
    stubber.add_client_error("describe_instance_types", service_error_code=code, http_status_code=403)
    stubber.add_response("run_instances", {"Instances": [_instance("i-0123456789abcdef0")]})
    result = launcher.launch(_request(instance_types=["g6e.xlarge"]))
    assert result.launched_ids == ["i-0123456789abcdef0"]
    assert result.warnings == [
        f"Not allowed to describe instance types in {REGION} (ec2:DescribeInstanceTypes): the instance types "
        f"were not checked against the architecture of image {IMAGE_ID} (arm64)"
    ]
    # Denied once: not asked again by this launcher.
    assert launcher.instance_architectures(["g5g.xlarge"]) is None


def test_an_unknown_instance_type_is_named(ec2, launcher):
    _client, stubber = ec2
    _expect_arm64_image(stubber)
    stubber.add_client_error(
        "describe_instance_types",
        service_error_code="InvalidInstanceType",
        service_message="The following supplied instance types do not exist: [g9z.xlarge]",
    )
    with pytest.raises(LaunchError) as failed:
        launcher.launch(_request(instance_types=["g5g.xlarge", "g9z.xlarge"]))
    assert failed.value.message == (
        f"Instance type g9z.xlarge does not exist in {REGION}: "
        "The following supplied instance types do not exist: [g9z.xlarge]"
    )


def test_other_describe_instance_types_errors_fail(ec2, launcher):
    _client, stubber = ec2
    stubber.add_client_error("describe_instance_types", service_error_code="InvalidParameterValue")
    with pytest.raises(LaunchError, match=r"Failed to describe instance types g6e\.xlarge in eu-central-1"):
        launcher.usable_instance_types(dict(IMAGE, Architecture="x86_64"), ["g6e.xlarge"])


def test_enough_instances_of_the_job_need_no_check(ec2, launcher):
    _client, stubber = ec2
    _expect_arm64_image(stubber, existing=[_instance("i-0123456789abcdef0")])
    result = launcher.launch(_request(count=1, instance_types=["g6e.xlarge"]))
    assert result.changed is False


# ---------------------------------------------------------------- requests and volumes


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"instance_types": []}, "at least one instance type"),
        ({"instance_types": ["g6e"]}, "Invalid instance type"),
        ({"instance_types": ["g6e.xlarge", "g6e.xlarge"]}, "listed twice"),
        ({"count": 0}, "Invalid count"),
        ({"subnet_ids": ["subnet-zz"]}, "Invalid subnet id"),
        ({"spot_max_price": "cheap"}, "Invalid spot maximum price"),
        ({"spot_max_price": "0"}, "Invalid spot maximum price"),
        ({"market": "on-demand"}, "needs market spot"),
        ({"market": "reserved", "spot_max_price": None}, "Invalid market"),
        ({"tags": {"aws:cloudformation": "x"}}, "aws: prefix"),
        ({"metadata_hop_limit": 0}, "hop limit"),
    ],
)
def test_bad_requests_are_refused(overrides, message):
    with pytest.raises(LaunchError, match=message):
        _request(**overrides)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initialization_rate": 50}, "100 to 300 MiB/s"),
        ({"initialization_rate": 301}, "100 to 300 MiB/s"),
        ({"volume_type": "gp2", "throughput": 200}, "gp3 volumes only"),
        ({"volume_type": "gp2", "iops": 3000}, "IOPS apply"),
        ({"size": 0}, "Invalid root volume size"),
        ({"encrypted": False, "kms_key_id": "alias/x"}, "needs encryption"),
    ],
)
def test_bad_root_volumes_are_refused(kwargs, message):
    with pytest.raises(LaunchError, match=message):
        RootVolume(**kwargs)


def test_root_volume_smaller_than_the_snapshot_is_refused():
    with pytest.raises(LaunchError, match="smaller than the 60 GiB snapshot"):
        RootVolume(size=40).block_device_mapping(IMAGE)


def test_initialization_rate_needs_a_snapshot():
    image = dict(IMAGE, BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}])
    with pytest.raises(LaunchError, match="only to volumes created from a snapshot"):
        RootVolume(initialization_rate=200).block_device_mapping(image)


def test_default_root_volume_changes_nothing():
    assert RootVolume().block_device_mapping(IMAGE) is None


# ---------------------------------------------------------------- waiting, terminating, prices


def test_wait_running_polls_until_running(ec2, launcher):
    _client, stubber = ec2
    stubber.add_client_error("describe_instances", service_error_code="InvalidInstanceID.NotFound")
    stubber.add_response("describe_instances", _reservations(_instance("i-0123456789abcdef0", state="pending")))
    stubber.add_response("describe_instances", _reservations(_instance("i-0123456789abcdef0")))
    instances = launcher.wait_running(["i-0123456789abcdef0"], poll_interval=0)
    assert instances[0]["State"]["Name"] == "running"


def test_wait_running_fails_on_a_terminated_instance(ec2, launcher):
    _client, stubber = ec2
    gone = _instance(
        "i-0123456789abcdef0",
        state="terminated",
        StateReason={"Code": "x", "Message": "Server.SpotInstanceTermination"},
    )
    stubber.add_response("describe_instances", _reservations(gone))
    with pytest.raises(LaunchError, match="SpotInstanceTermination"):
        launcher.wait_running(["i-0123456789abcdef0"])


def test_wait_running_times_out(ec2):
    client, stubber = ec2
    ticks = iter(range(0, 1000, 10))
    launcher = Launcher(client, region=REGION, sleep=lambda _s: None, clock=lambda: next(ticks))
    for _poll in range(3):
        stubber.add_response("describe_instances", _reservations(_instance("i-0123456789abcdef0", state="pending")))
    with pytest.raises(LaunchError, match="Timed out after 25s waiting for i-0123456789abcdef0"):
        launcher.wait_running(["i-0123456789abcdef0"], timeout=25)


def test_terminate_then_wait(ec2, launcher):
    _client, stubber = ec2
    stubber.add_response("terminate_instances", {"TerminatingInstances": []}, {"InstanceIds": ["i-0123456789abcdef0"]})
    stubber.add_response("describe_instances", _reservations(_instance("i-0123456789abcdef0", state="shutting-down")))
    stubber.add_response("describe_instances", {"Reservations": []})
    assert launcher.terminate(["i-0123456789abcdef0"], wait=True, poll_interval=0) == ["i-0123456789abcdef0"]


def test_spot_prices_keep_the_newest_linux_price(ec2, launcher):
    _client, stubber = ec2
    now = datetime.now(timezone.utc)
    stubber.add_response(
        "describe_spot_price_history",
        {
            "SpotPriceHistory": [
                {
                    "AvailabilityZone": "eu-central-1a",
                    "InstanceType": "g6e.xlarge",
                    "ProductDescription": "Linux/UNIX",
                    "SpotPrice": "1.10",
                    "Timestamp": now - timedelta(hours=1),
                },
                {
                    "AvailabilityZone": "eu-central-1a",
                    "InstanceType": "g6e.xlarge",
                    "ProductDescription": "Linux/UNIX",
                    "SpotPrice": "1.17",
                    "Timestamp": now,
                },
                {
                    "AvailabilityZone": "eu-central-1a",
                    "InstanceType": "g6e.xlarge",
                    "ProductDescription": "Windows",
                    "SpotPrice": "2.50",
                    "Timestamp": now,
                },
                {
                    "AvailabilityZone": "eu-central-1b",
                    "InstanceType": "g6e.xlarge",
                    "ProductDescription": "Linux/UNIX",
                    "SpotPrice": "0.90",
                    "Timestamp": now,
                },
            ]
        },
    )
    assert launcher.spot_prices([("g6e.xlarge", "eu-central-1a")]) == {("g6e.xlarge", "eu-central-1a"): "1.17"}


def test_summary_of_an_instance():
    now = datetime(2026, 1, 1, 0, 10, tzinfo=timezone.utc)
    facts = summarize_instance(_instance("i-0123456789abcdef0"), image=IMAGE, spot_price="1.17", now=now)
    assert facts["image_version"] == "1.2"
    assert facts["market"] == "spot"
    assert facts["spot_price"] == "1.17"
    assert facts["uptime_seconds"] == 600
    assert facts["launch_time"] == "2026-01-01T00:00:00Z"
    on_demand = summarize_instance(_instance("i-0123456789abcdef1", lifecycle=None), spot_price="1.17", now=now)
    assert on_demand["market"] == "on-demand" and on_demand["spot_price"] is None


# ---------------------------------------------------------------- user data


def _run_user_data(tmp_path, **kwargs):
    """Run the generated script with stand-ins for systemd-run, systemctl, mount... that log their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    for tool in ("systemd-run", "systemctl", "shutdown", "mount", "sync", "sleep"):
        stub = bin_dir / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n')
        stub.chmod(0o755)
    startup = tmp_path / "startup.sh"
    startup.write_text(f'#!/bin/sh\necho "startup" >> {calls}\n')
    startup.chmod(0o755)
    log = tmp_path / "user-data.log"
    script = build_user_data(startup_script=str(startup), log_path=str(log), **kwargs)
    path = tmp_path / "user-data.sh"
    path.write_text(script)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls)}
    subprocess.run(["/bin/bash", str(path)], check=True, env=env, timeout=30)
    return script, [line.rstrip() for line in calls.read_text().splitlines()], log.read_text()


def test_user_data_arms_the_lifetime_first_and_powers_off_after_the_job(tmp_path):
    marker = tmp_path / "job-ran"
    mount_point = tmp_path / "efs"
    script, calls, log = _run_user_data(
        tmp_path,
        job_command=f'echo "$CALLS" > /dev/null; echo job >> "$CALLS"; touch {marker}; exit 3',
        efs_file_system_id="fs-0fdfeb8ca8304e991",
        efs_mount_point=str(mount_point),
        region="us-east-2",
        max_lifetime_minutes=120,
    )
    assert script.startswith("#!/bin/bash\n")
    assert calls[0].startswith("systemd-run --unit=burst-max-lifetime --on-active=120min")
    assert calls[0].endswith("/bin/systemctl poweroff")
    assert calls[1].startswith("mount -t nfs4 -o nfsvers=4.1")
    assert "fs-0fdfeb8ca8304e991.efs.us-east-2.amazonaws.com:/" in calls[1]
    assert calls[1].endswith(str(mount_point))
    assert calls[2:] == ["startup", "job", "sync", "systemctl poweroff"]
    assert marker.exists() and mount_point.is_dir()
    assert "job ended with status 3" in log


def test_user_data_without_a_job_leaves_the_instance_running(tmp_path):
    _script, calls, log = _run_user_data(tmp_path, max_lifetime_minutes=0)
    assert calls == ["startup"]
    assert "user data done" in log


def test_job_command_is_quoted_not_interpreted_by_the_script(tmp_path):
    hostile = "echo '$(touch /tmp/never)'; echo done >> \"$CALLS\""
    script, calls, _log = _run_user_data(tmp_path, job_command=hostile, terminate_after_job=False)
    assert calls == ["startup", "done"]
    assert "poweroff" not in "".join(calls)
    assert subprocess.run(["bash", "-n"], input=script, text=True, check=False).returncode == 0


def test_a_failed_efs_mount_skips_the_job_and_still_terminates(tmp_path):
    bin_dir = tmp_path / "failbin"
    bin_dir.mkdir()
    (bin_dir / "mount").write_text("#!/bin/sh\nexit 32\n")
    (bin_dir / "mount").chmod(0o755)
    script = build_user_data(
        startup_script=None,
        job_command="echo job-ran",
        efs_file_system_id="fs-12345678",
        efs_mount_point=str(tmp_path / "efs"),
        region=REGION,
        log_path=str(tmp_path / "log"),
    )
    for tool in ("sleep", "systemctl", "sync"):
        (bin_dir / tool).write_text(f"#!/bin/sh\necho {tool} $* >> {tmp_path}/calls\n")
        (bin_dir / tool).chmod(0o755)
    subprocess.run(["/bin/bash", "-c", script], check=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, timeout=30)
    log = (tmp_path / "log").read_text()
    assert "job-ran" not in log
    assert "EFS is not mounted" in log
    assert (tmp_path / "calls").read_text().splitlines()[-1].rstrip() == "systemctl poweroff"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"efs_file_system_id": "efs-1", "efs_mount_point": "/mnt", "region": REGION}, "Invalid EFS file system id"),
        ({"efs_file_system_id": "fs-12345678", "efs_mount_point": "mnt", "region": REGION}, "absolute path"),
        ({"efs_file_system_id": "fs-12345678", "efs_mount_point": "/mnt"}, "needs the region"),
        ({"efs_mount_point": "/mnt"}, "needs an EFS file system id"),
        ({"max_lifetime_minutes": -1}, "Invalid maximum lifetime"),
        ({"startup_script": "startup.sh"}, "absolute path"),
        ({"job_command": "x" * 20000}, "at most 16384"),
    ],
)
def test_bad_user_data_options(kwargs, message):
    with pytest.raises(LaunchError, match=message):
        build_user_data(**kwargs)


# ---------------------------------------------------------------- health


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code, body = self.server.answers[self.path]
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


@pytest.fixture
def health_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.answers = {
        "/ready": (200, b'{"ready": true}'),
        "/plain": (200, b"OK"),
        "/loading": (503, b'{"ready": false}'),
        "/not-ready": (200, b'{"ready": false}'),
    }
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def hanging_port():
    """A socket that accepts connections (backlog) and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def closed_port():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_probes_classify_ready_starting_and_unreachable(health_server, hanging_port, closed_port):
    urls = {
        "ready": f"{health_server}/ready",
        "plain": f"{health_server}/plain",
        "loading": f"{health_server}/loading",
        "not-ready": f"{health_server}/not-ready",
        "hanging": f"http://127.0.0.1:{hanging_port}/",
        "refused": f"http://127.0.0.1:{closed_port}/",
        "none": None,
        "file": "file:///etc/hostname",
    }
    urls.update({f"hanging-{n}": f"http://127.0.0.1:{hanging_port}/{n}" for n in range(20)})
    clock = time.monotonic
    start = clock()
    results = probe_health_many(urls, timeout=0.5)
    elapsed = clock() - start
    statuses = {k: v[0] for k, v in results.items()}
    assert statuses["ready"] == "ready" and statuses["plain"] == "ready"
    assert statuses["loading"] == "starting" and statuses["not-ready"] == "starting"
    assert statuses["refused"] == "unreachable" and statuses["none"] == "unreachable"
    assert statuses["file"] == "unreachable"
    assert all(statuses[f"hanging-{n}"] == "unreachable" for n in range(20))
    # 21 hanging hosts probed at once: about one timeout, not 21.
    assert elapsed < 2 * 0.5 + 0.5


def test_wait_healthy_times_out_naming_the_host(health_server):
    ticks = iter(range(0, 100, 10))
    with pytest.raises(LaunchError, match="i-1: starting"):
        wait_healthy(
            {"i-0": f"{health_server}/ready", "i-1": f"{health_server}/loading"},
            timeout=15,
            interval=0,
            sleep=lambda _s: None,
            clock=lambda: next(ticks),
        )


def test_wait_healthy_reports_each_round_with_what_is_not_ready(health_server):
    ticks = iter(range(0, 100, 5))
    lines = []
    with pytest.raises(LaunchError):
        wait_healthy(
            {"i-0": f"{health_server}/ready", "i-1": f"{health_server}/loading"},
            timeout=15,
            interval=0,
            sleep=lambda _s: None,
            clock=lambda: next(ticks),
            progress=lines.append,
        )
    assert lines[0].startswith("1 of 2 healthy after 5 s: i-1: starting (HTTP 503")
    assert len(lines) == 2, "one line a round, until the timeout"
    assert lines[1].startswith("1 of 2 healthy after 15 s")


# ---------------------------------------------------------------- jobs


def _job_tags(**tags):
    return [{"Key": "Mode", "Value": "Burst"}] + [{"Key": k, "Value": v} for k, v in tags.items()]


def test_a_spot_termination_while_the_job_runs_is_an_interruption(ec2, launcher):
    _client, stubber = ec2
    running = _instance("i-0123456789abcdef0", Tags=_job_tags(BurstJobStatus="running"))
    stubber.add_response("describe_instances", _reservations(running))
    reclaimed = _instance(
        "i-0123456789abcdef0",
        state="terminated",
        StateReason={"Code": "Server.SpotInstanceTermination", "Message": "Server.SpotInstanceTermination: Spot"},
        Tags=_job_tags(BurstJobStatus="running", BurstJobStartedAt="2026-01-01T00:02:00Z"),
    )
    stubber.add_response("describe_instances", _reservations(reclaimed))
    lines = []
    jobs, instances = launcher.wait_jobs(["i-0123456789abcdef0"], poll_interval=0, progress=lines.append)
    assert jobs == {
        "i-0123456789abcdef0": {
            "status": "interrupted",
            "exit_code": None,
            "started_at": "2026-01-01T00:02:00Z",
            "ended_at": None,
            "log": None,
            "log_error": None,
        }
    }
    assert instances["i-0123456789abcdef0"]["State"]["Name"] == "terminated"
    assert lines == [
        "0 of 1 jobs ended: i-0123456789abcdef0 (job running, instance running)",
        "1 of 1 jobs ended",
    ]


def test_a_job_that_outlives_the_wait_names_the_instances_still_running(ec2):
    client, stubber = ec2
    ticks = iter(range(0, 1000, 10))
    launcher = Launcher(client, region=REGION, sleep=lambda _s: None, clock=lambda: next(ticks))
    done = _instance("i-0123456789abcdef0", Tags=_job_tags(BurstJobStatus="succeeded", BurstJobExitCode="0"))
    busy = _instance(
        "i-0123456789abcdef1", Tags=_job_tags(BurstJobStatus="running", BurstJobStartedAt="2026-01-01T00:02:00Z")
    )
    starting = _instance("i-0123456789abcdef2", state="pending")
    # A shutting-down instance without a final status may still show its tags: it is waited for.
    leaving = _instance("i-0123456789abcdef3", state="shutting-down", Tags=_job_tags(BurstJobStatus="running"))
    for _poll in range(3):
        stubber.add_response("describe_instances", _reservations(done, busy, starting, leaving))
    with pytest.raises(LaunchError) as caught:
        launcher.wait_jobs([i["InstanceId"] for i in (done, busy, starting, leaving)], timeout=25)
    assert caught.value.message == (
        "Timed out after 25s waiting for the job to end on 3 instance(s) still running: "
        "i-0123456789abcdef1 (job running since 2026-01-01T00:02:00Z, instance running), "
        "i-0123456789abcdef2 (job not started, instance pending), "
        "i-0123456789abcdef3 (job running, instance shutting-down)"
    )


@pytest.mark.parametrize(
    ("state", "tags", "reason", "status"),
    [
        ("running", {"BurstJobStatus": "failed", "BurstJobExitCode": "3"}, None, "failed"),
        ("terminated", {"BurstJobStatus": "timed_out", "BurstJobExitCode": "124"}, None, "timed_out"),
        ("terminated", {"BurstJobStatus": "running", "BurstDraining": "2026-01-01T00:05:00Z"}, None, "interrupted"),
        ("stopped", {}, {"Code": "Client.UserInitiatedShutdown", "Message": "Client.UserInitiatedShutdown"}, "lost"),
        ("terminated", {"BurstJobStatus": "running"}, None, "lost"),
    ],
)
def test_final_job_statuses(ec2, launcher, state, tags, reason, status):
    _client, stubber = ec2
    extra = {"StateReason": reason} if reason else {}
    instance = _instance("i-0123456789abcdef0", state=state, Tags=_job_tags(**tags), **extra)
    stubber.add_response("describe_instances", _reservations(instance))
    jobs, _instances = launcher.wait_jobs(["i-0123456789abcdef0"], poll_interval=0)
    assert jobs["i-0123456789abcdef0"]["status"] == status
    expected = int(tags["BurstJobExitCode"]) if "BurstJobExitCode" in tags else None
    assert jobs["i-0123456789abcdef0"]["exit_code"] == expected


# ---------------------------------------------------------------- cost


def test_the_cost_cap_counts_the_dearest_market_of_a_spot_fallback(launcher):
    # Spot at most 0.50/h, on demand 2.00/h: with the fallback, a type can cost its on-demand price.
    request = _request(
        instance_types=["g6e.xlarge", "g5.xlarge"],
        spot_max_price="0.50",
        spot_fallback_on_demand=True,
        on_demand_prices={"g6e.xlarge": 2.0, "g5.xlarge": 0.8},
        count=2,
        time_limit_minutes=90,
        cost_cap=3.0,
    )
    types, warnings = launcher.affordable_instance_types(request, ["g6e.xlarge", "g5.xlarge"])
    assert types == ["g5.xlarge"]
    assert warnings == [
        "Instance type g6e.xlarge left out: up to 6.00 USD for 2 instance(s) x 90 min at 2.00 USD/h (on-demand), "
        "above the cost cap of 3.00 USD; launching on g5.xlarge"
    ]
    without_fallback = _request(
        instance_types=["g6e.xlarge"], spot_max_price="0.50", count=2, time_limit_minutes=90, cost_cap=3.0
    )
    assert launcher.affordable_instance_types(without_fallback, ["g6e.xlarge"]) == (["g6e.xlarge"], [])


def test_a_cost_cap_is_refused_when_no_type_fits_or_a_price_is_unknown(launcher):
    request = _request(instance_types=["g6e.xlarge", "g6.2xlarge"], spot_max_price=None, time_limit_minutes=60)
    request.cost_cap = 1.0
    with pytest.raises(LaunchError) as caught:
        launcher.affordable_instance_types(request, ["g6e.xlarge", "g6.2xlarge"])
    # eu-central-1's list prices of the table: spot without a maximum costs at most the on-demand price.
    assert caught.value.message == (
        "No instance type fits the cost cap of 1.00 USD for 1 instance(s) x 60 min: "
        "g6e.xlarge up to 2.327 USD, g6.2xlarge up to 1.2225 USD"
    )
    request = _request(instance_types=["t3.micro"], spot_max_price=None, time_limit_minutes=60, cost_cap=1.0)
    with pytest.raises(
        LaunchError,
        match=r"^No on-demand price known for t3\.micro in eu-central-1, the most spot costs .*on_demand_prices",
    ):
        launcher.affordable_instance_types(request, ["t3.micro"])


def test_a_capped_launch_tries_only_the_types_that_fit(ec2, launcher):
    _client, stubber = ec2
    _expect_image_and_existing(stubber)
    stubber.add_response(
        "run_instances",
        {"Instances": [_instance("i-0123456789abcdef0", instance_type="g6.2xlarge")]},
        {
            "ImageId": IMAGE_ID,
            "InstanceType": "g6.2xlarge",
            "SubnetId": SUBNETS[0],
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": ANY,
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 2},
            "TagSpecifications": ANY,
            "InstanceMarketOptions": ANY,
        },
    )
    result = launcher.launch(_request(spot_max_price=None, time_limit_minutes=60, cost_cap=2.0))
    assert [a.instance_type for a in result.attempts] == ["g6.2xlarge"]
    assert len(result.warnings) == 1 and result.warnings[0].startswith("Instance type g6e.xlarge left out: up to 2.327")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cost_cap": 5.0}, "A cost cap needs a time limit"),
        ({"cost_cap": 0, "time_limit_minutes": 60}, "Invalid cost cap 0"),
        ({"cost_cap": "lots", "time_limit_minutes": 60}, "Invalid cost cap 'lots'"),
        ({"time_limit_minutes": 0}, "Invalid time limit 0"),
        ({"on_demand_prices": {"g6e.xlarge": -1}}, "Invalid on-demand price 'g6e.xlarge'"),
        ({"on_demand_prices": {"big": 1.0}}, "Invalid on-demand price 'big'"),
    ],
)
def test_bad_cost_options_are_refused(overrides, message):
    with pytest.raises(LaunchError, match=message):
        _request(**overrides)


def test_cost_summary_prices_each_instance_and_names_what_it_cannot(ec2, launcher):
    _client, stubber = ec2
    stubber.add_response(
        "describe_spot_price_history",
        {
            "SpotPriceHistory": [
                {
                    "AvailabilityZone": "eu-central-1a",
                    "InstanceType": "g6e.xlarge",
                    "ProductDescription": "Linux/UNIX",
                    "SpotPrice": "0.7241",
                    "Timestamp": datetime(2026, 1, 1, tzinfo=timezone.utc),
                }
            ]
        },
    )
    instances = [
        _instance("i-0123456789abcdef0"),
        _instance("i-0123456789abcdef1"),
        _instance("i-0123456789abcdef2", instance_type="g5.2xlarge", lifecycle=None, zone="eu-central-1b"),
    ]
    cost = launcher.cost_summary(instances, time_limit_minutes=60, spot_max_price="1.50", cost_cap=10.0)
    assert cost["instances"][0] == {
        "instance_id": "i-0123456789abcdef0",
        "instance_type": "g6e.xlarge",
        "market": "spot",
        "price_per_hour": 0.7241,
        "source": "spot-price-history",
        "availability_zone": "eu-central-1a",
    }
    assert cost["instances"][2]["price_per_hour"] == 1.5156
    assert cost["instances"][2]["source"] == "on-demand-table"
    assert cost["price_per_hour"] == pytest.approx(0.7241 * 2 + 1.5156)
    assert cost["expected_run_cost"] == pytest.approx(round(0.7241 * 2 + 1.5156, 4))
    assert cost["max_run_cost"] == pytest.approx(1.5 * 2 + 1.5156)
    assert (cost["time_limit_minutes"], cost["cost_cap"], cost["error"]) == (60, 10.0, None)

    stubber.add_client_error("describe_spot_price_history", service_error_code="UnauthorizedOperation")
    odd = [_instance("i-0123456789abcdef3"), _instance("i-0123456789abcdef4", instance_type="t3.micro", lifecycle=None)]
    cost = launcher.cost_summary(odd, time_limit_minutes=None)
    assert cost["price_per_hour"] is None and cost["expected_run_cost"] is None and cost["max_run_cost"] is None
    assert cost["instances"][0]["price_per_hour"] is None
    assert "Failed to read the spot price history of g6e.xlarge in eu-central-1" in cost["error"]
    assert "No on-demand price known for t3.micro in eu-central-1" in cost["error"]
