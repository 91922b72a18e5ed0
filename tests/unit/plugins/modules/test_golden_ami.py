"""Unit tests of the golden_ami and golden_ami_prune logic, with AWS stubbed by botocore's Stubber.

They cover what moto cannot show: a pending image, block device overrides,
IMDSv2, deprecation, and the exact order of calls (nothing is published
before every image is available).
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.config import Config
from botocore.stub import ANY, Stubber

from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry, RetryingBotoClientWrapper
from ansible_collections.burst.golden_ami.plugins.module_utils._images import (
    ImageApi,
    ImageError,
    ParameterApi,
    image_tags,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._prices import PRICES_DATE
from ansible_collections.burst.golden_ami.plugins.module_utils._publish import image_storage, snapshot_size
from ansible_collections.burst.golden_ami.plugins.modules.golden_ami import GoldenAmi, copy_client_token
from ansible_collections.burst.golden_ami.plugins.modules.golden_ami_prune import GoldenAmiPrune

REGION = "eu-central-1"
COPY_REGION = "eu-west-1"
INSTANCE_ID = "i-0123456789abcdef0"
BASE_IMAGE = "ami-00000000000000base"
IMAGE_ID = "ami-0aaaaaaaaaaaaaaaa"
COPY_ID = "ami-0bbbbbbbbbbbbbbbb"
SNAPSHOT_ID = "snap-0aaaaaaaaaaaaaaaa"
COPY_SNAPSHOT_ID = "snap-0bbbbbbbbbbbbbbbb"
CREATED = "2030-01-01T10:20:30.000Z"
NAME = "burst-golden-v1.0"


class Stubs:
    """One stubbed EC2 and SSM client per region, handed out through the factories the modules take."""

    def __init__(self):
        self.ec2 = {}
        self.ssm = {}

    def _client(self, service, region):
        client = boto3.client(
            service,
            region_name=region,
            aws_access_key_id="AKIDUNITTEST",
            aws_secret_access_key="unit-test",  # noqa: S106
            endpoint_url="http://127.0.0.1:9",
            config=Config(retries={"total_max_attempts": 1}),
        )
        stubber = Stubber(client)
        stubber.activate()
        return RetryingBotoClientWrapper(client, AWSRetry.jittered_backoff(retries=3, delay=0, max_delay=0)), stubber

    def ec2_stub(self, region):
        if region not in self.ec2:
            self.ec2[region] = self._client("ec2", region)
        return self.ec2[region][1]

    def ssm_stub(self, region):
        if region not in self.ssm:
            self.ssm[region] = self._client("ssm", region)
        return self.ssm[region][1]

    def ec2_api(self, region):
        self.ec2_stub(region)
        return ImageApi(self.ec2[region][0], region)

    def ssm_api(self, region):
        self.ssm_stub(region)
        return ParameterApi(self.ssm[region][0], region)

    def assert_done(self):
        for _client, stubber in list(self.ec2.values()) + list(self.ssm.values()):
            stubber.assert_no_pending_responses()


def params(**overrides):
    base = {
        "name": NAME,
        "version": "1.0",
        "build_id": "build-7",
        "build_id_tag": "BuildId",
        "instance_id": INSTANCE_ID,
        "description": None,
        "no_reboot": False,
        "block_devices": [],
        "boot_mode": None,
        "imds_support": None,
        "tags": {},
        "purge_tags": False,
        "deprecate_at": None,
        "deprecate_after_days": None,
        "launch_permissions": None,
        "copy_regions": [],
        "copy_kms_key_ids": {},
        "copy_encrypted": False,
        "ssm_parameter": None,
        "ssm_parameter_description": None,
        "manifest_path": None,
        "manifest_contents": {},
        "wait_timeout": 60,
        "wait_poll_interval": 5,
    }
    base.update(overrides)
    return base


def build(stubs, check_mode=False, **overrides):
    sleeps = []
    runner = GoldenAmi(
        params(**overrides),
        REGION,
        stubs.ec2_api,
        stubs.ssm_api,
        check_mode=check_mode,
        sleep=sleeps.append,
        clock=lambda: float(len(sleeps)),
    )
    return runner, sleeps


def image(image_id=IMAGE_ID, state="available", snapshot=SNAPSHOT_ID, tags=None, **extra):
    result = {
        "ImageId": image_id,
        "Name": NAME,
        "State": state,
        "CreationDate": CREATED,
        "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snapshot, "VolumeSize": 80}}]
        if snapshot
        else [],
        "Tags": [{"Key": k, "Value": v} for k, v in (tags or {}).items()],
    }
    result.update(extra)
    return result


def expect_lookup(stub, by_name=(), by_build=None):
    stub.add_response(
        "describe_images",
        {"Images": list(by_name)},
        {"Owners": ["self"], "Filters": [{"Name": "name", "Values": [NAME]}]},
    )
    if not by_name and by_build is not None:
        stub.add_response(
            "describe_images",
            {"Images": list(by_build)},
            {"Owners": ["self"], "Filters": [{"Name": "tag:BuildId", "Values": ["build-7"]}]},
        )


def expect_instance(stub):
    stub.add_response(
        "describe_instances",
        {
            "Reservations": [
                {"Instances": [{"InstanceId": INSTANCE_ID, "ImageId": BASE_IMAGE, "State": {"Name": "stopped"}}]}
            ]
        },
        {"InstanceIds": [INSTANCE_ID]},
    )


WANTED_TAGS = {"BuildId": "build-7", "Version": "1.0", "BaseImageId": BASE_IMAGE, "Project": "burst"}
GIB = 1024**3


def expect_snapshots(stub, snapshot_id=SNAPSHOT_ID, volume_size=80, full_bytes=None):
    """DescribeSnapshots of an image's snapshot, read for the storage cost once the image is available."""
    snapshot = {"SnapshotId": snapshot_id, "VolumeSize": volume_size, "State": "completed"}
    if full_bytes is not None:
        snapshot["FullSnapshotSizeInBytes"] = full_bytes
    stub.add_response("describe_snapshots", {"Snapshots": [snapshot]}, {"SnapshotIds": [snapshot_id]})


def test_create_waits_tags_snapshots_sets_imds_and_deprecation_then_publishes(tmp_path):
    stubs = Stubs()
    ec2 = stubs.ec2_stub(REGION)
    ssm = stubs.ssm_stub(REGION)
    expect_lookup(ec2, by_build=[])
    expect_instance(ec2)
    ec2.add_response(
        "create_image",
        {"ImageId": IMAGE_ID},
        {
            "InstanceId": INSTANCE_ID,
            "Name": NAME,
            "NoReboot": True,
            "BlockDeviceMappings": [
                {
                    "DeviceName": "/dev/sda1",
                    "Ebs": {"VolumeSize": 80, "VolumeType": "gp3", "Iops": 6000, "Throughput": 500, "Encrypted": True},
                }
            ],
            "TagSpecifications": [
                {"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in WANTED_TAGS.items()]}
                for kind in ("image", "snapshot")
            ],
        },
    )
    ec2.add_client_error(
        "describe_images", "InvalidAMIID.NotFound", "not yet", 400, expected_params={"ImageIds": [IMAGE_ID]}
    )
    ec2.add_response(
        "describe_images", {"Images": [image(state="pending", tags=WANTED_TAGS)]}, {"ImageIds": [IMAGE_ID]}
    )
    ec2.add_response("describe_images", {"Images": [image(tags=WANTED_TAGS)]}, {"ImageIds": [IMAGE_ID]})
    ec2.add_response("describe_tags", {"Tags": []}, {"Filters": [{"Name": "resource-id", "Values": [SNAPSHOT_ID]}]})
    ec2.add_response(
        "create_tags",
        {},
        {"Resources": [SNAPSHOT_ID], "Tags": ANY},
    )
    ec2.add_response("modify_image_attribute", {}, {"ImageId": IMAGE_ID, "ImdsSupport": {"Value": "v2.0"}})
    ec2.add_response(
        "enable_image_deprecation",
        {"Return": True},
        {"ImageId": IMAGE_ID, "DeprecateAt": "2030-01-08T10:20:00.000Z"},
    )
    ec2.add_response(
        "describe_images", {"Images": [image(tags=WANTED_TAGS, ImdsSupport="v2.0")]}, {"ImageIds": [IMAGE_ID]}
    )
    expect_snapshots(ec2, full_bytes=12 * GIB + GIB // 2)
    ssm.add_client_error("get_parameter", "ParameterNotFound", "none", 400, expected_params={"Name": "/burst/ami"})
    ssm.add_response(
        "put_parameter",
        {"Version": 1},
        {"Name": "/burst/ami", "Value": IMAGE_ID, "Type": "String", "DataType": "aws:ec2:image", "Overwrite": True},
    )

    runner, sleeps = build(
        stubs,
        no_reboot=True,
        tags={"Project": "burst"},
        imds_support="v2.0",
        deprecate_after_days=7,
        ssm_parameter="/burst/ami",
        manifest_path=str(tmp_path / "manifest.json"),
        block_devices=[
            {
                "device_name": "/dev/sda1",
                "volume_size": 80,
                "volume_type": "gp3",
                "iops": 6000,
                "throughput": 500,
                "encrypted": True,
                "no_device": False,
            }
        ],
    )
    result = runner.run()

    stubs.assert_done()
    assert sleeps == [5, 5]
    assert result["changed"] is True
    assert result["image_id"] == IMAGE_ID
    assert result["images"][REGION]["snapshot_ids"] == [SNAPSHOT_ID]
    assert result["ssm_parameters"] == {REGION: {"name": "/burst/ami", "value": IMAGE_ID}}
    assert result["manifest"]["builds"][0]["artifact_id"] == f"{REGION}:{IMAGE_ID}"
    assert result["manifest"]["source_image"] == BASE_IMAGE
    assert (tmp_path / "manifest.json").is_file()
    assert [a.split(" ")[0] for a in result["actions"]] == ["create", "tag", "require", "deprecate", "publish", "write"]
    # What the image costs to keep: the bytes the snapshot stores, at the list price of its region.
    storage = result["storage"]
    assert storage["regions"][REGION]["snapshots"] == [
        {"snapshot_id": SNAPSHOT_ID, "size_gib": 12.5, "size_source": "full-snapshot-size"}
    ]
    assert storage["regions"][REGION]["usd_per_month"] == 0.675  # 12.5 GiB at 0.054
    assert storage["total_usd_per_month"] == 0.675
    assert "error" not in storage
    assert result["manifest"]["storage"] == storage
    assert json.loads((tmp_path / "manifest.json").read_text())["storage"] == storage


def test_existing_image_in_step_changes_nothing():
    stubs = Stubs()
    ec2 = stubs.ec2_stub(REGION)
    ssm = stubs.ssm_stub(REGION)
    tags = {"BuildId": "build-7", "Version": "1.0"}
    current = image(tags=tags, DeprecationTime="2030-01-08T10:20:00.000Z")
    expect_lookup(ec2, by_name=[current])
    ec2.add_response("describe_images", {"Images": [current]}, {"ImageIds": [IMAGE_ID]})
    ec2.add_response(
        "describe_tags", {"Tags": [{"ResourceId": SNAPSHOT_ID, "Key": k, "Value": v} for k, v in tags.items()]}
    )
    ec2.add_response("describe_images", {"Images": [current]}, {"ImageIds": [IMAGE_ID]})
    expect_snapshots(ec2)
    ssm.add_response("get_parameter", {"Parameter": {"Name": "/burst/ami", "Value": IMAGE_ID}})

    runner, _sleeps = build(stubs, deprecate_after_days=7, ssm_parameter="/burst/ami")
    result = runner.run()

    stubs.assert_done()
    assert result["changed"] is False
    assert result["actions"] == []
    # A rerun reports the cost too; without FullSnapshotSizeInBytes the volume's size is the upper bound.
    assert result["storage"]["regions"][REGION]["snapshots"][0]["size_source"] == "volume-size"
    assert result["storage"]["total_usd_per_month"] == 4.32  # 80 GiB at 0.054


def test_failed_image_fails_before_anything_is_published():
    stubs = Stubs()
    ec2 = stubs.ec2_stub(REGION)
    stubs.ssm_stub(REGION)  # no SSM call may happen
    expect_lookup(ec2, by_build=[])
    expect_instance(ec2)
    ec2.add_response("create_image", {"ImageId": IMAGE_ID})
    failed = image(state="failed", StateReason={"Code": "Client.InternalError", "Message": "Snapshot failed"})
    ec2.add_response("describe_images", {"Images": [failed]})

    runner, _sleeps = build(stubs, ssm_parameter="/burst/ami")
    with pytest.raises(ImageError, match="is failed: Snapshot failed"):
        runner.run()
    stubs.assert_done()


def test_copies_get_a_client_token_kms_key_and_tags_and_ssm_waits_for_them():
    stubs = Stubs()
    src = stubs.ec2_stub(REGION)
    dst = stubs.ec2_stub(COPY_REGION)
    ssm_src = stubs.ssm_stub(REGION)
    ssm_dst = stubs.ssm_stub(COPY_REGION)
    tags = {"BuildId": "build-7", "Version": "1.0"}
    source = image(tags=tags)
    src.add_response("describe_regions", {"Regions": [{"RegionName": REGION}, {"RegionName": COPY_REGION}]})
    expect_lookup(src, by_name=[source])
    expect_lookup(dst, by_build=[])
    src.add_response("describe_images", {"Images": [source]})
    src.add_response(
        "describe_tags", {"Tags": [{"ResourceId": SNAPSHOT_ID, "Key": k, "Value": v} for k, v in tags.items()]}
    )
    dst.add_response(
        "copy_image",
        {"ImageId": COPY_ID},
        {
            "SourceImageId": IMAGE_ID,
            "SourceRegion": REGION,
            "Name": NAME,
            "ClientToken": copy_client_token(IMAGE_ID, COPY_REGION, NAME),
            "Encrypted": True,
            "KmsKeyId": "alias/golden-west",
            "TagSpecifications": [
                {
                    "ResourceType": kind,
                    "Tags": [
                        {"Key": k, "Value": v}
                        for k, v in dict(tags, SourceImageId=IMAGE_ID, SourceRegion=REGION).items()
                    ],
                }
                for kind in ("image", "snapshot")
            ],
        },
    )
    dst.add_response("describe_images", {"Images": [image(COPY_ID, state="pending", snapshot=None)]})
    copy = image(COPY_ID, snapshot=COPY_SNAPSHOT_ID)
    dst.add_response("describe_images", {"Images": [copy]})
    dst.add_response("describe_tags", {"Tags": []})
    copy_tags = dict(tags, SourceImageId=IMAGE_ID, SourceRegion=REGION)
    for resource in (COPY_ID, COPY_SNAPSHOT_ID):
        dst.add_response(
            "create_tags",
            {},
            {"Resources": [resource], "Tags": [{"Key": k, "Value": v} for k, v in sorted(copy_tags.items())]},
        )
    src.add_response("describe_images", {"Images": [source]})
    dst.add_response("describe_images", {"Images": [image(COPY_ID, snapshot=COPY_SNAPSHOT_ID, tags=copy_tags)]})
    expect_snapshots(src, full_bytes=10 * GIB)
    expect_snapshots(dst, COPY_SNAPSHOT_ID, full_bytes=10 * GIB)
    ssm_src.add_response("get_parameter", {"Parameter": {"Name": "/burst/ami", "Value": IMAGE_ID}})
    ssm_dst.add_response("get_parameter", {"Parameter": {"Name": "/burst/ami", "Value": "ami-0old"}})
    ssm_dst.add_response(
        "put_parameter",
        {"Version": 2},
        {"Name": "/burst/ami", "Value": COPY_ID, "Type": "String", "DataType": "aws:ec2:image", "Overwrite": True},
    )

    runner, sleeps = build(
        stubs,
        copy_regions=[COPY_REGION, REGION],
        copy_kms_key_ids={COPY_REGION: "alias/golden-west"},
        ssm_parameter="/burst/ami",
    )
    result = runner.run()

    stubs.assert_done()
    assert sleeps == [5]
    assert result["changed"] is True
    assert result["images"][COPY_REGION]["snapshot_ids"] == [COPY_SNAPSHOT_ID]
    assert result["manifest"]["builds"][0]["artifact_id"] == f"{REGION}:{IMAGE_ID},{COPY_REGION}:{COPY_ID}"
    regions = result["storage"]["regions"]
    assert {r: (e["image_id"], e["size_gib"], e["usd_per_gb_month"]) for r, e in regions.items()} == {
        REGION: (IMAGE_ID, 10.0, 0.054),
        COPY_REGION: (COPY_ID, 10.0, 0.05),
    }
    assert result["storage"]["total_usd_per_month"] == 1.04


def test_check_mode_creates_nothing():
    stubs = Stubs()
    ec2 = stubs.ec2_stub(REGION)
    stubs.ssm_stub(REGION)
    expect_lookup(ec2, by_build=[])
    expect_instance(ec2)
    runner, _sleeps = build(stubs, check_mode=True, ssm_parameter="/burst/ami")
    result = runner.run()
    stubs.assert_done()
    assert result["changed"] is True
    assert result["image_id"] is None
    assert result["storage"] is None
    assert result["actions"][0] == f"create image {NAME} from {INSTANCE_ID} in {REGION}"
    assert any(a.startswith("publish the image id to SSM parameter /burst/ami") for a in result["actions"])


def test_name_held_by_another_build_is_refused():
    stubs = Stubs()
    ec2 = stubs.ec2_stub(REGION)
    expect_lookup(ec2, by_name=[image(tags={"BuildId": "build-6"})])
    runner, _sleeps = build(stubs)
    with pytest.raises(ImageError, match=r"already taken in eu-central-1 by ami-0aaaaaaaaaaaaaaaa \(build id build-6"):
        runner.run()


def test_deprecate_at_conflicts_are_validated_before_any_call():
    stubs = Stubs()
    runner, _sleeps = build(stubs, copy_regions=["eu-west-1"], copy_kms_key_ids={"us-east-1": "k"})
    with pytest.raises(ImageError, match="copy_kms_key_ids names regions that are not in copy_regions: us-east-1"):
        runner.run()
    runner, _sleeps = build(stubs, deprecate_after_days=0)
    with pytest.raises(ImageError, match="deprecate_after_days must be 1 or more"):
        runner.run()


def test_prune_plans_protects_and_deletes_in_order():
    stubs = Stubs()
    ec2 = stubs.ec2_stub(REGION)
    ssm = stubs.ssm_stub(REGION)

    def family_image(image_id, created, snapshot):
        return {
            "ImageId": image_id,
            "Name": f"burst-golden-v{image_id[-1]}",
            "State": "available",
            "CreationDate": created,
            "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snapshot}}],
        }

    family = [
        family_image("ami-1", "2030-01-01T00:00:00.000Z", "snap-1"),
        family_image("ami-2", "2030-01-02T00:00:00.000Z", "snap-2"),
        family_image("ami-3", "2030-01-03T00:00:00.000Z", "snap-3"),
    ]
    ec2.add_response(
        "describe_images",
        {"Images": family},
        {"Owners": ["self"], "Filters": [{"Name": "name", "Values": ["burst-golden-v*"]}]},
    )
    ssm.add_response("get_parameter", {"Parameter": {"Name": "/burst/ami", "Value": "ami-1"}})
    ec2.add_response("describe_instances", {"Reservations": []})
    ec2.add_response("describe_launch_templates", {"LaunchTemplates": []})
    ec2.add_response("deregister_image", {}, {"ImageId": "ami-2"})
    ec2.add_client_error(
        "delete_snapshot", "InvalidSnapshot.InUse", "still used", 400, expected_params={"SnapshotId": "snap-2"}
    )
    ec2.add_response("delete_snapshot", {}, {"SnapshotId": "snap-2"})
    prune_params = {
        "name_prefix": "burst-golden-v",
        "family_tags": {},
        "regions": [],
        "keep_newest": 1,
        "max_age_days": None,
        "protect_ssm_parameters": ["/burst/ami"],
        "delete_snapshots": True,
    }
    sleeps = []
    result = GoldenAmiPrune(prune_params, REGION, stubs.ec2_api, stubs.ssm_api, sleep=sleeps.append).run()
    stubs.assert_done()
    assert result["changed"] is True
    assert [d["image_id"] for d in result["deleted"]] == ["ami-2"]
    assert {k["image_id"]: k["reasons"] for k in result["kept"]} == {
        "ami-3": ["newest of the family"],
        "ami-1": ["referenced by SSM parameter /burst/ami"],
    }
    assert sleeps == [1]


def test_check_mode_with_an_existing_image_plans_the_missing_copy_and_its_parameter():
    stubs = Stubs()
    src = stubs.ec2_stub(REGION)
    dst = stubs.ec2_stub(COPY_REGION)
    ssm = stubs.ssm_stub(REGION)
    tags = {"BuildId": "build-7", "Version": "1.0"}
    source = image(tags=tags)
    src.add_response("describe_regions", {"Regions": [{"RegionName": REGION}, {"RegionName": COPY_REGION}]})
    expect_lookup(src, by_name=[source])
    expect_lookup(dst, by_build=[])
    src.add_response("describe_images", {"Images": [source]})
    src.add_response(
        "describe_tags", {"Tags": [{"ResourceId": SNAPSHOT_ID, "Key": k, "Value": v} for k, v in tags.items()]}
    )
    expect_snapshots(src)
    ssm.add_response("get_parameter", {"Parameter": {"Name": "/burst/ami", "Value": IMAGE_ID}})

    runner, _sleeps = build(stubs, check_mode=True, copy_regions=[COPY_REGION], ssm_parameter="/burst/ami")
    result = runner.run()

    stubs.assert_done()
    assert result["changed"] is True
    # Check mode reports what the existing image costs; the copy it would make is not there to measure.
    assert list(result["storage"]["regions"]) == [REGION]
    assert result["actions"] == [
        f"copy image {IMAGE_ID} to {COPY_REGION}",
        f"publish the copy's image id to SSM parameter /burst/ami in {COPY_REGION}",
    ]


def test_image_of_the_build_under_another_name_is_returned_with_a_warning():
    stubs = Stubs()
    ec2 = stubs.ec2_stub(REGION)
    earlier = image(tags={"BuildId": "build-7", "Version": "1.0"}, Name="burst-golden-v0.9")
    expect_lookup(ec2, by_build=[earlier])
    ec2.add_response("describe_images", {"Images": [earlier]})
    ec2.add_response("describe_tags", {"Tags": [{"ResourceId": SNAPSHOT_ID, "Key": "BuildId", "Value": "build-7"}]})
    ec2.add_response("create_tags", {}, {"Resources": [SNAPSHOT_ID], "Tags": [{"Key": "Version", "Value": "1.0"}]})
    ec2.add_response("describe_images", {"Images": [earlier]})
    expect_snapshots(ec2)
    warnings = []
    runner = GoldenAmi(params(), REGION, stubs.ec2_api, stubs.ssm_api, warn=warnings.append, sleep=lambda _s: None)
    result = runner.run()
    stubs.assert_done()
    assert result["image_id"] == IMAGE_ID
    assert result["actions"] == [f"tag {SNAPSHOT_ID} in {REGION}"]
    assert warnings and "burst-golden-v0.9" in warnings[0]


def test_prune_takes_the_family_as_burst_instance_does_and_leaves_candidates_out():
    stubs = Stubs()
    ec2 = stubs.ec2_stub(REGION)

    def member(image_id, created, stage=None):
        tags = [{"Key": "BakeFamily", "Value": "burst"}]
        if stage:
            tags.append({"Key": "ImageStage", "Value": stage})
        return {
            "ImageId": image_id,
            "Name": f"burst-golden-{image_id}",
            "State": "available",
            "CreationDate": created,
            "Tags": tags,
        }

    ec2.add_response(
        "describe_images",
        {
            "Images": [
                member("ami-1", "2030-01-01T00:00:00.000Z", "promoted"),
                member("ami-2", "2030-01-02T00:00:00.000Z"),
                member("ami-3", "2030-01-03T00:00:00.000Z", "candidate"),
            ]
        },
        {
            "Owners": ["self"],
            "Filters": [
                {"Name": "name", "Values": ["burst-golden-*"]},
                {"Name": "tag-key", "Values": ["BakeFamily"]},
                {"Name": "tag:Project", "Values": ["burst"]},
            ],
        },
    )
    ec2.add_response("describe_instances", {"Reservations": []})
    ec2.add_response("describe_launch_templates", {"LaunchTemplates": []})
    params = {
        "image_family": {"name_prefix": "burst-golden-", "tags": {"BakeFamily": None}},
        # The deprecated option still counts, combined with image_family.
        "family_tags": {"Project": "burst"},
        "regions": [],
        "keep_newest": 5,
        "protect_ssm_parameters": [],
    }
    result = GoldenAmiPrune(params, REGION, stubs.ec2_api, stubs.ssm_api, check_mode=True).run()
    stubs.assert_done()
    assert [k["image_id"] for k in result["kept"]] == ["ami-2", "ami-1"]
    assert result["deleted"] == []


def test_storage_that_cannot_be_read_or_priced_never_fails_the_publish(tmp_path):
    stubs = Stubs()
    ec2 = stubs.ec2_stub(REGION)
    ssm = stubs.ssm_stub(REGION)
    current = image(tags={"BuildId": "build-7", "Version": "1.0"})
    expect_lookup(ec2, by_name=[current])
    ec2.add_response("describe_images", {"Images": [current]})
    ec2.add_response(
        "describe_tags",
        {"Tags": [{"ResourceId": SNAPSHOT_ID, "Key": k, "Value": v} for k, v in image_tags(current).items()]},
    )
    ec2.add_response("describe_images", {"Images": [current]})
    ec2.add_client_error("describe_snapshots", "UnauthorizedOperation", "no ec2:DescribeSnapshots", 403)
    ssm.add_client_error("get_parameter", "ParameterNotFound", "none", 400)
    ssm.add_response("put_parameter", {"Version": 1})

    runner, _sleeps = build(stubs, ssm_parameter="/burst/ami", manifest_path=str(tmp_path / "manifest.json"))
    result = runner.run()

    stubs.assert_done()
    assert result["ssm_parameters"] == {REGION: {"name": "/burst/ami", "value": IMAGE_ID}}
    assert result["storage"]["total_usd_per_month"] is None
    assert "UnauthorizedOperation" in result["storage"]["error"]
    assert REGION in result["storage"]["error"]
    assert json.loads((tmp_path / "manifest.json").read_text())["storage"]["error"] == result["storage"]["error"]


def test_storage_in_a_region_without_a_list_price_needs_the_users_price():
    stubs = Stubs()
    ec2 = stubs.ec2_api("ap-south-2")
    stub = stubs.ec2_stub("ap-south-2")
    images = {"ap-south-2": {"image_id": IMAGE_ID, "snapshot_ids": [SNAPSHOT_ID]}}
    expect_snapshots(stub, volume_size=30, full_bytes=3 * GIB)
    unpriced = image_storage(lambda _region: ec2, images)
    assert unpriced["regions"]["ap-south-2"]["usd_per_month"] is None
    assert unpriced["total_usd_per_month"] is None
    assert "No snapshot storage price for ap-south-2" in unpriced["error"]

    expect_snapshots(stub, volume_size=30, full_bytes=3 * GIB)
    priced = image_storage(lambda _region: ec2, images, {"ap-south-2": 0.06})
    stubs.assert_done()
    assert priced["regions"]["ap-south-2"] == {
        "image_id": IMAGE_ID,
        "snapshots": [{"snapshot_id": SNAPSHOT_ID, "size_gib": 3.0, "size_source": "full-snapshot-size"}],
        "size_gib": 3.0,
        "usd_per_gb_month": 0.06,
        "price_source": "given",
        "usd_per_month": 0.18,
    }
    assert priced["total_usd_per_month"] == 0.18
    assert priced["prices_as_of"] == PRICES_DATE
    assert "error" not in priced


def test_snapshot_size_prefers_the_bytes_stored_over_the_volume_size():
    assert snapshot_size({"SnapshotId": "snap-1", "VolumeSize": 80, "FullSnapshotSizeInBytes": 5 * GIB}) == (
        5.0,
        "full-snapshot-size",
    )
    assert snapshot_size({"SnapshotId": "snap-1", "VolumeSize": 80, "FullSnapshotSizeInBytes": 1234567890}) == (
        1.15,
        "full-snapshot-size",
    )
    assert snapshot_size({"SnapshotId": "snap-1", "VolumeSize": 80}) == (80.0, "volume-size")
    with pytest.raises(ImageError, match="neither FullSnapshotSizeInBytes nor VolumeSize"):
        snapshot_size({"SnapshotId": "snap-1"})


def test_bad_snapshot_storage_prices_are_refused_before_anything_is_created():
    runner, _sleeps = build(Stubs(), snapshot_storage_prices={"eu-central-1": "cheap"})
    with pytest.raises(ImageError, match="snapshot_storage_prices: snapshot storage price of eu-central-1"):
        runner.run()
