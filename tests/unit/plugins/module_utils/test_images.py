"""Unit tests of the image helpers: waiting, validation, retention, manifest. AWS is stubbed with botocore's Stubber."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import boto3
import pytest
from botocore.config import Config
from botocore.parsers import ResponseParserError
from botocore.stub import Stubber

from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry, RetryingBotoClientWrapper
from ansible_collections.burst.golden_ami.plugins.module_utils import _image_options as options
from ansible_collections.burst.golden_ami.plugins.module_utils import _images as images
from ansible_collections.burst.golden_ami.plugins.module_utils._manifest import (
    artifact_id,
    build_manifest,
    manifest_differs,
    write_manifest,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._retention import plan_retention

IMAGE_ID = "ami-0123456789abcdef0"


def stubbed_api(region="eu-central-1", retries=3):
    client = boto3.client(
        "ec2",
        region_name=region,
        aws_access_key_id="AKIDUNITTEST",
        aws_secret_access_key="unit-test",  # noqa: S106
        endpoint_url="http://127.0.0.1:9",
        config=Config(retries={"total_max_attempts": 1}),
    )
    stubber = Stubber(client)
    stubber.activate()
    retry = AWSRetry.jittered_backoff(retries=retries, delay=0, max_delay=0)
    return images.ImageApi(RetryingBotoClientWrapper(client, retry), region), stubber


def image(state, **extra):
    return dict({"ImageId": IMAGE_ID, "State": state, "Name": "golden-v1"}, **extra)


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_wait_goes_from_pending_to_available():
    api, stubber = stubbed_api()
    for state in ("pending", "pending", "available"):
        stubber.add_response("describe_images", {"Images": [image(state)]}, {"ImageIds": [IMAGE_ID]})
    clock = FakeClock()
    done = images.wait_for_images([(api, IMAGE_ID)], timeout=60, poll_interval=5, sleep=clock.sleep, clock=clock)
    assert done["eu-central-1"]["State"] == "available"
    assert clock.sleeps == [5, 5]
    stubber.assert_no_pending_responses()


def test_wait_treats_not_yet_visible_as_pending():
    api, stubber = stubbed_api()
    stubber.add_client_error("describe_images", "InvalidAMIID.NotFound", "not yet", 400)
    stubber.add_response("describe_images", {"Images": [image("available")]})
    clock = FakeClock()
    done = images.wait_for_images([(api, IMAGE_ID)], timeout=60, poll_interval=1, sleep=clock.sleep, clock=clock)
    assert done["eu-central-1"]["ImageId"] == IMAGE_ID


def test_failed_image_fails_with_the_reason_from_aws():
    api, stubber = stubbed_api()
    stubber.add_response("describe_images", {"Images": [image("pending")]})
    failed = image("failed", StateReason={"Code": "Client.InternalError", "Message": "Snapshot creation failed"})
    stubber.add_response("describe_images", {"Images": [failed]})
    clock = FakeClock()
    with pytest.raises(
        images.ImageError, match=r"ami-0123456789abcdef0 in eu-central-1 is failed: Snapshot creation failed"
    ):
        images.wait_for_images([(api, IMAGE_ID)], timeout=60, poll_interval=1, sleep=clock.sleep, clock=clock)


def test_throttling_is_retried_and_never_taken_as_success():
    api, stubber = stubbed_api(retries=3)
    stubber.add_client_error("describe_images", "RequestLimitExceeded", "slow down", 503)
    stubber.add_client_error("describe_images", "Throttling", "slow down", 400)
    stubber.add_response("describe_images", {"Images": [image("pending")]})
    stubber.add_response("describe_images", {"Images": [image("available")]})
    clock = FakeClock()
    done = images.wait_for_images([(api, IMAGE_ID)], timeout=60, poll_interval=2, sleep=clock.sleep, clock=clock)
    assert done["eu-central-1"]["State"] == "available"
    # one poll interval: the throttled attempts were retried inside the first poll
    assert clock.sleeps == [2]
    stubber.assert_no_pending_responses()


def test_throttling_that_outlasts_the_retries_fails():
    api, stubber = stubbed_api(retries=2)
    for _attempt in range(3):
        stubber.add_client_error("describe_images", "RequestLimitExceeded", "slow down", 503)
    clock = FakeClock()
    with pytest.raises(images.ImageError) as error:
        images.wait_for_images([(api, IMAGE_ID)], timeout=60, poll_interval=1, sleep=clock.sleep, clock=clock)
    assert images.error_code(error.value.exception) == "RequestLimitExceeded"


def test_wait_times_out_naming_the_image_and_region():
    api, stubber = stubbed_api()
    for _attempt in range(4):
        stubber.add_response("describe_images", {"Images": [image("pending")]})
    clock = FakeClock()
    with pytest.raises(
        images.ImageError, match=r"Timed out after 10 s waiting for ami-0123456789abcdef0 in eu-central-1"
    ):
        images.wait_for_images([(api, IMAGE_ID)], timeout=10, poll_interval=5, sleep=clock.sleep, clock=clock)


def test_wait_polls_every_region_together():
    source, source_stub = stubbed_api("eu-central-1")
    copy, copy_stub = stubbed_api("eu-west-1")
    source_stub.add_response("describe_images", {"Images": [image("available")]})
    copy_stub.add_response("describe_images", {"Images": [image("pending", ImageId="ami-0000000000000000c")]})
    copy_stub.add_response("describe_images", {"Images": [image("available", ImageId="ami-0000000000000000c")]})
    clock = FakeClock()
    done = images.wait_for_images(
        [(source, IMAGE_ID), (copy, "ami-0000000000000000c")],
        timeout=60,
        poll_interval=3,
        sleep=clock.sleep,
        clock=clock,
    )
    assert sorted(done) == ["eu-central-1", "eu-west-1"]
    assert clock.sleeps == [3]


def test_deprecation_on_an_endpoint_without_it_says_so():
    api, _stubber = stubbed_api()

    def unsupported(**_kwargs):
        raise ResponseParserError("Unable to parse response, invalid XML received")

    api.client.enable_image_deprecation = unsupported
    with pytest.raises(images.ImageError, match="does not support EnableImageDeprecation"):
        api.enable_deprecation(IMAGE_ID, "2030-01-01T00:00:00.000Z")


def test_deprecation_client_error_is_reported_as_such():
    api, stubber = stubbed_api()
    stubber.add_client_error("enable_image_deprecation", "InvalidParameterValue", "too far", 400)
    with pytest.raises(images.ImageError, match="Failed to set deprecation of ami-0123456789abcdef0"):
        api.enable_deprecation(IMAGE_ID, "2130-01-01T00:00:00.000Z")


@pytest.mark.parametrize("name", ["ab", "a" * 129, "bad*name", "name\nnewline", ""])
def test_invalid_image_names_are_refused(name):
    with pytest.raises(images.ImageError, match="Invalid image name"):
        options.validate_image_name(name)


def test_valid_image_name_passes():
    assert options.validate_image_name("osmose-burst-golden-v1.0 (gpu) [l4]") == "osmose-burst-golden-v1.0 (gpu) [l4]"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("/aws/foo", "may not start with 'aws'"),
        ("ssm-thing", "may not start with 'aws' or 'ssm'"),
        ("bad name", "only letters"),
        ("a/b", "must start with '/'"),
        ("/a//b", "empty path segments"),
        ("/" + "/".join("x" * 16), "15 levels"),
    ],
)
def test_invalid_ssm_names_are_refused(name, problem):
    with pytest.raises(images.ImageError, match="Invalid SSM parameter name") as error:
        options.validate_ssm_parameter_name(name)
    assert problem in error.value.message


def test_regions_are_checked_for_form_and_existence():
    assert options.validate_region_names(["eu-west-1"], {"eu-west-1"}) == ["eu-west-1"]
    with pytest.raises(images.ImageError, match="Invalid region name 'EU_WEST'"):
        options.validate_region_names(["EU_WEST"])
    with pytest.raises(images.ImageError, match="Unknown region 'xx-nowhere-1'"):
        options.validate_region_names(["xx-nowhere-1"], {"eu-west-1"})


def test_block_device_overrides_map_to_create_image():
    mappings = options.block_device_mappings(
        [
            {
                "device_name": "/dev/sda1",
                "volume_size": 80,
                "volume_type": "gp3",
                "iops": 6000,
                "throughput": 500,
                "encrypted": True,
                "kms_key_id": "alias/golden",
                "no_device": False,
            },
            {"device_name": "/dev/sdb", "no_device": True},
        ]
    )
    assert mappings == [
        {
            "DeviceName": "/dev/sda1",
            "Ebs": {
                "VolumeSize": 80,
                "VolumeType": "gp3",
                "Iops": 6000,
                "Throughput": 500,
                "Encrypted": True,
                "KmsKeyId": "alias/golden",
            },
        },
        {"DeviceName": "/dev/sdb", "NoDevice": ""},
    ]


def test_block_device_overrides_refuse_contradictions():
    with pytest.raises(images.ImageError, match="kms_key_id needs encrypted=true"):
        options.block_device_mappings([{"device_name": "/dev/sda1", "kms_key_id": "k"}])
    with pytest.raises(images.ImageError, match="throughput applies to gp3"):
        options.block_device_mappings([{"device_name": "/dev/sda1", "volume_type": "io2", "throughput": 500}])


def test_deprecation_time_counts_from_creation_and_rounds_to_the_minute():
    created = "2030-01-01T10:20:30.000Z"
    assert options.deprecation_time(created, deprecate_after_days=7) == "2030-01-08T10:20:00.000Z"
    assert options.deprecation_time(created, deprecate_at="2031-02-03T04:05:06Z") == "2031-02-03T04:05:00.000Z"
    assert options.deprecation_time(created) is None
    assert options.same_time("2030-01-08T10:20:00.000Z", "2030-01-08T10:20:00Z")
    with pytest.raises(images.ImageError, match="Invalid time 'soon'"):
        options.deprecation_time(created, deprecate_at="soon")


def _summary(image_id, created):
    return {"image_id": image_id, "creation_date": created, "region": "eu-central-1"}


NOW = datetime(2030, 3, 1, tzinfo=timezone.utc)
FAMILY = [
    _summary("ami-1", "2030-01-01T00:00:00.000Z"),
    _summary("ami-2", "2030-02-01T00:00:00.000Z"),
    _summary("ami-3", "2030-02-20T00:00:00.000Z"),
    _summary("ami-4", "2030-02-28T00:00:00.000Z"),
]


def _ids(entries):
    return [e["image_id"] for e in entries]


def test_family_filters_combine_with_the_name_prefix_tags_and_architecture():
    family = images.ImageFamily.from_option(
        {
            "name_prefix": "burst-golden-v",
            "tags": {"Team": "ml"},
            "architecture": "arm64",
            "filters": {
                "virtualization-type": "hvm",
                "block-device-mapping.volume-type": ["gp3", 2],
                "ena-support": True,
            },
        }
    )
    assert family.filters(["available"]) == [
        {"Name": "state", "Values": ["available"]},
        {"Name": "name", "Values": ["burst-golden-v*"]},
        {"Name": "tag:Team", "Values": ["ml"]},
        {"Name": "virtualization-type", "Values": ["hvm"]},
        {"Name": "block-device-mapping.volume-type", "Values": ["gp3", "2"]},
        {"Name": "ena-support", "Values": ["true"]},
        {"Name": "architecture", "Values": ["arm64"]},
    ]
    assert family.describe() == (
        "named burst-golden-v* tagged Team=ml matching virtualization-type=hvm, "
        "block-device-mapping.volume-type=gp3,2, ena-support=true, architecture=arm64"
    )
    assert family.holds({"Name": "burst-golden-v1", "Architecture": "arm64"})
    assert not family.holds({"Name": "burst-golden-v1", "Architecture": "x86_64"})
    # The same architecture given both ways is no contradiction.
    same = images.ImageFamily(owners=["amazon"], architecture="arm64", filters={"architecture": "arm64"})
    assert same.filters() == [{"Name": "architecture", "Values": ["arm64"]}]
    assert same.describe() == "matching architecture=arm64 owned by amazon"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filters": ["architecture=arm64"]}, "Image filters must be a dict .* got list"),
        ({"filters": "architecture=arm64"}, "Image filters must be a dict .* got str"),
        ({"filters": {"": "arm64"}}, "Invalid image filter name ''"),
        ({"filters": {"  ": "arm64"}}, "Invalid image filter name '  '"),
        ({"filters": {"architecture": []}}, "Image filter 'architecture' has no value"),
        ({"filters": {"architecture": None}}, "Image filter 'architecture' has no value"),
        ({"filters": {"tag:Team": ["ml", ""]}}, "Image filter 'tag:Team' has no value"),
        ({"filters": {"state": "pending"}}, "Image filter 'state' is set by the state"),
        ({"name_prefix": "burst-", "filters": {"name": "other*"}}, "Image filter 'name' is set by name_prefix"),
        ({"tags": {"Team": "ml"}, "filters": {"tag:Team": "ai"}}, "Image filter 'tag:Team' is set by tags"),
        ({"architecture": "aarch64"}, "Invalid architecture 'aarch64': one of i386, x86_64, arm64"),
        ({"architecture": "arm64", "filters": {"architecture": "x86_64"}}, "disagree"),
        ({"filters": {}}, "needs a name prefix, tags or filters"),
    ],
)
def test_bad_family_filters_are_refused_naming_them(kwargs, message):
    with pytest.raises(images.ImageError, match=message):
        images.ImageFamily(**kwargs)


def test_retention_keeps_the_newest_n():
    kept, deleted = plan_retention(FAMILY, NOW, keep_newest=2)
    assert _ids(kept) == ["ami-4", "ami-3"]
    assert _ids(deleted) == ["ami-2", "ami-1"]
    assert deleted[0]["reasons"] == ["outside the newest 2"]


def test_retention_by_age_always_keeps_the_newest():
    kept, deleted = plan_retention(FAMILY, NOW, max_age_days=0)
    assert _ids(kept) == ["ami-4"]
    assert kept[0]["reasons"] == ["newest of the family"]
    assert _ids(deleted) == ["ami-3", "ami-2", "ami-1"]


def test_retention_with_both_rules_deletes_only_old_images_outside_the_newest():
    kept, deleted = plan_retention(FAMILY, NOW, keep_newest=1, max_age_days=20)
    assert _ids(kept) == ["ami-4", "ami-3"]
    assert "younger than 20 days" in kept[1]["reasons"]
    assert _ids(deleted) == ["ami-2", "ami-1"]
    assert deleted[-1]["reasons"] == ["outside the newest 1", "older than 20 days (59 days)"]


def test_retention_never_deletes_a_protected_image():
    kept, deleted = plan_retention(FAMILY, NOW, keep_newest=1, protected={"ami-1": ["referenced by SSM parameter /p"]})
    assert _ids(kept) == ["ami-4", "ami-1"]
    assert kept[1]["reasons"] == ["referenced by SSM parameter /p"]
    assert _ids(deleted) == ["ami-3", "ami-2"]


def test_retention_needs_a_rule():
    with pytest.raises(ValueError, match="keep_newest, max_age_days or both"):
        plan_retention(FAMILY, NOW)


def test_manifest_is_packer_compatible_and_stable(tmp_path):
    by_region = {
        "eu-west-1": {"image_id": "ami-b", "snapshot_ids": ["snap-b"], "creation_date": "2030-01-01T00:00:05.000Z"},
        "eu-central-1": {"image_id": "ami-a", "snapshot_ids": ["snap-a"], "creation_date": "2030-01-01T00:00:00.000Z"},
    }
    manifest = build_manifest(
        "golden-v1", "eu-central-1", by_region, build_id="b-1", version="1", contents={"models": ["m"]}
    )
    assert artifact_id(by_region, "eu-central-1") == "eu-central-1:ami-a,eu-west-1:ami-b"
    assert manifest["builds"][0]["artifact_id"] == "eu-central-1:ami-a,eu-west-1:ami-b"
    assert manifest["builds"][0]["build_time"] == int(datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp())
    assert manifest["regions"]["eu-west-1"] == {"image_id": "ami-b", "snapshot_ids": ["snap-b"]}
    assert manifest["contents"] == {"models": ["m"]}
    path = tmp_path / "manifest.json"
    assert manifest_differs(str(path), manifest)
    write_manifest(str(path), manifest)
    assert json.loads(path.read_text())["last_run_uuid"] == "b-1"
    assert not manifest_differs(str(path), manifest)
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    with pytest.raises(OSError, match="does not exist"):
        write_manifest(str(tmp_path / "missing" / "manifest.json"), manifest)


def test_wait_reports_each_poll_with_the_snapshot_progress_of_a_pending_image():
    api, stubber = stubbed_api()
    snapshot_id = "snap-0123456789abcdef0"
    mapping = [{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snapshot_id}}]
    # In call order: the first poll, the report's look at the snapshot, the second poll.
    stubber.add_response("describe_images", {"Images": [image("pending", BlockDeviceMappings=mapping)]})
    stubber.add_response(
        "describe_snapshots",
        {"Snapshots": [{"SnapshotId": snapshot_id, "Progress": "45%"}]},
        {"SnapshotIds": [snapshot_id]},
    )
    stubber.add_response("describe_images", {"Images": [image("available", BlockDeviceMappings=mapping)]})
    lines = []

    def report(seen):
        for region, (reporting_api, image_id, found) in seen.items():
            state = found["State"]
            snapshots = reporting_api.snapshot_progress(images.image_snapshot_ids(found)) if state == "pending" else {}
            lines.append((region, image_id, state, snapshots))

    clock = FakeClock()
    images.wait_for_images(
        [(api, IMAGE_ID)], timeout=60, poll_interval=5, sleep=clock.sleep, clock=clock, progress=report
    )
    stubber.assert_no_pending_responses()
    assert lines == [
        ("eu-central-1", IMAGE_ID, "pending", {snapshot_id: "45%"}),
        ("eu-central-1", IMAGE_ID, "available", {}),
    ]
