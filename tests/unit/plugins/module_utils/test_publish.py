"""Promotion and Discard (module_utils/_publish.py) against moto in server mode, with injected faults.

Each test builds candidates the way golden_ami does (images and snapshots
tagged at creation, copies in a second region), then promotes or discards
them with the real API wrappers and checks every SSM value and every image
and snapshot in both regions.
"""

from __future__ import annotations

import json

import boto3
import pytest

from ansible_collections.amazon.aws.plugins.module_utils.retries import RetryingBotoClientWrapper
from ansible_collections.burst.golden_ami.plugins.module_utils._aws import default_retry
from ansible_collections.burst.golden_ami.plugins.module_utils._images import (
    ImageApi,
    ImageError,
    ParameterApi,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._prices import PRICES_DATE
from ansible_collections.burst.golden_ami.plugins.module_utils._publish import Discard, Promotion, image_storage
from ansible_collections.burst.golden_ami.plugins.modules.golden_ami import GoldenAmi
from ansible_collections.burst.golden_ami.plugins.modules.golden_ami_prune import GoldenAmiPrune
from localworld import faults

REGION = "eu-central-1"
COPY_REGION = "eu-west-1"
PARAMETER = "/burst/test/latest"


class World:
    """Clients of both regions, some with a fault plan, and the factories the classes take."""

    def __init__(self, plan=None):
        self.plan = plan or []

    def client(self, service, region):
        client = boto3.client(service, region_name=region)
        if self.plan:
            faults.register(client, self.plan)
        return RetryingBotoClientWrapper(client, default_retry())

    def ec2(self, region):
        return ImageApi(self.client("ec2", region), region)

    def ssm(self, region):
        return ParameterApi(self.client("ssm", region), region)


def _candidate(bake_id, stage="candidate", name=None):
    """A captured image in REGION and its copy in COPY_REGION, tagged as golden_ami tags candidates."""
    ec2 = boto3.client("ec2", region_name=REGION)
    [image] = ec2.describe_images(Owners=["amazon"])["Images"][:1]
    instance = ec2.run_instances(ImageId=image["ImageId"], MinCount=1, MaxCount=1)["Instances"][0]
    tags = [{"Key": "BakeId", "Value": bake_id}, {"Key": "ImageStage", "Value": stage}]
    specs = [{"ResourceType": kind, "Tags": tags} for kind in ("image", "snapshot")]
    name = name or f"golden-{bake_id}"
    source = ec2.create_image(InstanceId=instance["InstanceId"], Name=name, TagSpecifications=specs)["ImageId"]
    copy = boto3.client("ec2", region_name=COPY_REGION).copy_image(
        SourceImageId=source, SourceRegion=REGION, Name=name, TagSpecifications=specs
    )["ImageId"]
    return {REGION: source, COPY_REGION: copy}


def _put(region, value):
    boto3.client("ssm", region_name=region).put_parameter(
        Name=PARAMETER, Value=value, Type="String", DataType="aws:ec2:image", Overwrite=True
    )


def _value(region):
    try:
        return boto3.client("ssm", region_name=region).get_parameter(Name=PARAMETER)["Parameter"]["Value"]
    except boto3.client("ssm", region_name=region).exceptions.ParameterNotFound:
        return None


def _bake_resources(bake_id):
    """{region: (image ids, snapshot ids)} still tagged with the bake id."""
    found = {}
    for region in (REGION, COPY_REGION):
        ec2 = boto3.client("ec2", region_name=region)
        by_tag = [{"Name": "tag:BakeId", "Values": [bake_id]}]
        images = [i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=by_tag)["Images"]]
        snapshots = [s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=by_tag)["Snapshots"]]
        found[region] = (sorted(images), sorted(snapshots))
    return found


def _params(bake_id, **overrides):
    params = {"build_id": bake_id, "build_id_tag": "BakeId", "regions": [COPY_REGION], "ssm_parameters": [PARAMETER]}
    params.update(overrides)
    return params


def test_snapshots_and_copies_are_tagged_at_creation(aws_env):
    images = _candidate("bake-tags")
    for region, image_id in images.items():
        ec2 = boto3.client("ec2", region_name=region)
        image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
        assert {t["Key"]: t["Value"] for t in image["Tags"]}["ImageStage"] == "candidate"
        snapshot_id = image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
        snapshot = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
        assert {t["Key"]: t["Value"] for t in snapshot["Tags"]}["BakeId"] == "bake-tags"


def _capture_params(manifest_path, **overrides):
    params = {
        "name": "golden-storage",
        "version": "1.0",
        "build_id": "bake-storage",
        "build_id_tag": "BakeId",
        "instance_id": None,
        "stage": "candidate",
        "copy_regions": [COPY_REGION],
        "copy_kms_key_ids": {},
        "manifest_path": str(manifest_path),
        "manifest_contents": {},
        "tags": {},
        "wait_timeout": 60,
        "wait_poll_interval": 1,
    }
    params.update(overrides)
    return params


def test_capture_reports_what_the_image_and_its_copy_cost_to_keep(aws_env, tmp_path):
    ec2 = boto3.client("ec2", region_name=REGION)
    [base] = ec2.describe_images(Owners=["amazon"])["Images"][:1]
    instance = ec2.run_instances(ImageId=base["ImageId"], MinCount=1, MaxCount=1)["Instances"][0]
    world = World()
    params = _capture_params(tmp_path / "manifest.json", instance_id=instance["InstanceId"])

    result = GoldenAmi(params, REGION, world.ec2, world.ssm, sleep=lambda _s: None).run()

    storage = result["storage"]
    assert storage["currency"] == "USD"
    assert storage["prices_as_of"] == PRICES_DATE
    assert set(storage["regions"]) == {REGION, COPY_REGION}
    for region, entry in storage["regions"].items():
        image = boto3.client("ec2", region_name=region).describe_images(ImageIds=[entry["image_id"]])["Images"][0]
        assert entry["image_id"] == result["images"][region]["image_id"]
        [snapshot] = entry["snapshots"]
        assert snapshot["snapshot_id"] == image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
        # moto gives no FullSnapshotSizeInBytes: the volume's size stands in, an upper bound.
        volume_size = boto3.client("ec2", region_name=region).describe_snapshots(SnapshotIds=[snapshot["snapshot_id"]])[
            "Snapshots"
        ][0]["VolumeSize"]
        assert snapshot["size_source"] == "volume-size"
        assert snapshot["size_gib"] == entry["size_gib"] == float(volume_size) > 0
        assert entry["price_source"] == "table"
        assert entry["usd_per_month"] == round(entry["size_gib"] * entry["usd_per_gb_month"], 4)
    assert storage["regions"][REGION]["usd_per_gb_month"] == 0.054
    assert storage["regions"][COPY_REGION]["usd_per_gb_month"] == 0.05
    assert storage["total_usd_per_month"] == round(sum(e["usd_per_month"] for e in storage["regions"].values()), 4)
    assert storage["total_usd_per_month"] > 0
    assert "error" not in storage
    assert json.loads((tmp_path / "manifest.json").read_text())["storage"] == storage

    # A rerun (and its check mode) finds the same images and reports the same cost, changing nothing.
    again = GoldenAmi(params, REGION, world.ec2, world.ssm, sleep=lambda _s: None).run()
    assert again["changed"] is False, again["actions"]
    assert again["storage"] == storage
    planned = GoldenAmi(params, REGION, world.ec2, world.ssm, check_mode=True, sleep=lambda _s: None).run()
    assert planned["storage"] == storage

    # The user's price replaces the table's in the region given.
    priced = GoldenAmi(
        dict(params, snapshot_storage_prices={COPY_REGION: 0.1}), REGION, world.ec2, world.ssm, check_mode=True
    ).run()["storage"]["regions"][COPY_REGION]
    assert (priced["usd_per_gb_month"], priced["price_source"]) == (0.1, "given")


def test_storage_of_candidates_in_two_regions(aws_env):
    images = _candidate("bake-cost")
    world = World()
    summaries = {}
    for region, image_id in images.items():
        image = boto3.client("ec2", region_name=region).describe_images(ImageIds=[image_id])["Images"][0]
        summaries[region] = {
            "image_id": image_id,
            "snapshot_ids": [image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]],
        }
    storage = image_storage(world.ec2, summaries)
    assert {region: entry["image_id"] for region, entry in storage["regions"].items()} == images
    assert storage["total_usd_per_month"] == round(
        storage["regions"][REGION]["size_gib"] * 0.054 + storage["regions"][COPY_REGION]["size_gib"] * 0.05, 4
    )
    # A snapshot that is gone makes an error, not a failure; the other region is still reported.
    boto3.client("ec2", region_name=COPY_REGION).deregister_image(ImageId=images[COPY_REGION])
    boto3.client("ec2", region_name=COPY_REGION).delete_snapshot(SnapshotId=summaries[COPY_REGION]["snapshot_ids"][0])
    partial = image_storage(world.ec2, summaries)
    assert list(partial["regions"]) == [REGION]
    assert partial["total_usd_per_month"] is None
    assert COPY_REGION in partial["error"]


def test_promote_points_every_region_and_records_what_it_replaced(aws_env):
    old = _candidate("bake-old", stage="promoted")
    _put(REGION, old[REGION])
    new = _candidate("bake-new")
    world = World()
    result = Promotion(_params("bake-new"), REGION, world.ec2, world.ssm).run()
    assert result["changed"] is True
    assert _value(REGION) == new[REGION]
    assert _value(COPY_REGION) == new[COPY_REGION]
    assert result["ssm_parameters"][REGION][PARAMETER] == {"value": new[REGION], "previous": old[REGION]}
    assert result["ssm_parameters"][COPY_REGION][PARAMETER]["previous"] is None
    for region, image_id in new.items():
        tags = world.ec2(region).resource_tags([image_id])[image_id]
        assert tags["ImageStage"] == "promoted"
        assert json.loads(tags["PromotedOver"]) == {PARAMETER: old[REGION] if region == REGION else None}
    again = Promotion(_params("bake-new"), REGION, world.ec2, world.ssm).run()
    assert again["changed"] is False, again["actions"]


def test_promote_failing_in_the_second_region_puts_the_first_back(aws_env):
    old = _candidate("bake-old", stage="promoted")
    _put(REGION, old[REGION])
    _candidate("bake-new")
    plan = [{"operation": "PutParameter", "region": COPY_REGION, "code": "AccessDeniedException"}]
    world = World(plan)
    with pytest.raises(ImageError) as raised:
        Promotion(_params("bake-new"), REGION, world.ec2, world.ssm).run()
    assert "Promote failed" in raised.value.message
    assert f"Restored {PARAMETER} in {REGION} to {old[REGION]}" in raised.value.message
    assert _value(REGION) == old[REGION]
    assert _value(COPY_REGION) is None


def test_promote_refuses_a_bake_with_a_missing_copy_before_changing_anything(aws_env):
    ec2 = boto3.client("ec2", region_name=REGION)
    images = _candidate("bake-half")
    boto3.client("ec2", region_name=COPY_REGION).deregister_image(ImageId=images[COPY_REGION])
    _put(REGION, "ami-0123456789abcdef0")
    with pytest.raises(ImageError, match=f"No image of bake bake-half .* in {COPY_REGION}"):
        Promotion(_params("bake-half"), REGION, World().ec2, World().ssm).run()
    assert _value(REGION) == "ami-0123456789abcdef0"
    tags = {t["Key"]: t["Value"] for t in ec2.describe_images(ImageIds=[images[REGION]])["Images"][0]["Tags"]}
    assert tags["ImageStage"] == "candidate"


def test_discard_removes_candidates_and_snapshots_in_every_region_and_keeps_promoted(aws_env):
    promoted = _candidate("bake-kept", stage="promoted")
    _candidate("bake-failed")
    world = World()
    result = Discard(_params("bake-failed", ssm_parameters=None), REGION, world.ec2, world.ssm).run()
    assert {d["region"] for d in result["deleted"]} == {REGION, COPY_REGION}
    assert result["left"] == []
    assert _bake_resources("bake-failed") == {REGION: ([], []), COPY_REGION: ([], [])}
    assert all(images for images, _snaps in _bake_resources("bake-kept").values())
    kept = Discard(_params("bake-kept", ssm_parameters=None), REGION, world.ec2, world.ssm).run()
    assert kept["deleted"] == [] and {k["image_id"] for k in kept["kept"]} == set(promoted.values())
    assert Discard(_params("bake-failed"), REGION, world.ec2, world.ssm).run()["changed"] is False


def test_discard_after_an_interrupted_promote_restores_the_recorded_values(aws_env):
    old = _candidate("bake-old", stage="promoted")
    _put(REGION, old[REGION])
    new = _candidate("bake-cut")
    # What an interrupted promote leaves: the record, and the first region already switched.
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.create_tags(
        Resources=[new[REGION]],
        Tags=[
            {"Key": "ImageStage", "Value": "promoting"},
            {"Key": "PromotedOver", "Value": json.dumps({PARAMETER: old[REGION]})},
        ],
    )
    _put(REGION, new[REGION])
    world = World()
    result = Discard(_params("bake-cut", protect_ssm_parameters=[PARAMETER]), REGION, world.ec2, world.ssm).run()
    assert result["restored"] == [f"{PARAMETER} in {REGION} back to {old[REGION]}"]
    assert _value(REGION) == old[REGION]
    assert _bake_resources("bake-cut") == {REGION: ([], []), COPY_REGION: ([], [])}


def test_discard_never_removes_an_image_that_production_names(aws_env):
    images = _candidate("bake-live")
    _put(COPY_REGION, images[COPY_REGION])
    world = World()
    result = Discard(_params("bake-live", protect_ssm_parameters=[PARAMETER]), REGION, world.ec2, world.ssm).run()
    assert [item["resource"] for item in result["left"]] == [images[COPY_REGION]]
    assert "SSM parameter" in result["left"][0]["reason"]
    assert _bake_resources("bake-live")[COPY_REGION][0] == [images[COPY_REGION]]
    assert _bake_resources("bake-live")[REGION] == ([], [])


def test_discard_reports_a_snapshot_that_stays_in_use(aws_env):
    _candidate("bake-busy")
    plan = [{"operation": "DeleteSnapshot", "region": COPY_REGION, "code": "InvalidSnapshot.InUse"}]
    world = World(plan)
    discard = Discard(
        _params("bake-busy", snapshot_attempts=2), REGION, world.ec2, world.ssm, sleep=lambda _seconds: None
    )
    result = discard.run()
    assert [item["region"] for item in result["left"]] == [COPY_REGION]
    assert result["left"][0]["resource"].startswith("snap-")
    assert "still in use" in result["left"][0]["reason"]
    # Once the snapshot is free, a second run removes it: the bake's snapshots are found by tag.
    second = Discard(_params("bake-busy"), REGION, World().ec2, World().ssm).run()
    assert second["left"] == []
    assert _bake_resources("bake-busy") == {REGION: ([], []), COPY_REGION: ([], [])}


def test_discard_lists_an_image_it_cannot_deregister_and_removes_the_rest(aws_env):
    _candidate("bake-denied")
    plan = [{"operation": "DeregisterImage", "region": COPY_REGION, "code": "UnauthorizedOperation"}]
    world = World(plan)
    result = Discard(_params("bake-denied"), REGION, world.ec2, world.ssm, sleep=lambda _seconds: None).run()
    assert [(item["region"], item["resource"][:4]) for item in result["left"]] == [(COPY_REGION, "ami-")]
    assert "UnauthorizedOperation" in result["left"][0]["reason"], result["left"]
    images, snapshots = _bake_resources("bake-denied")[COPY_REGION]
    assert len(images) == 1 and len(snapshots) == 1, "the copy and its snapshot stay together"
    assert _bake_resources("bake-denied")[REGION] == ([], [])


def test_discard_by_age_sweeps_stale_candidates_of_the_family_only(aws_env):
    for bake_id, started, family in (
        ("bake-stale", "2020-01-01T00:00:00Z", "burst"),
        ("bake-young", "2999-01-01T00:00:00Z", "burst"),
        ("bake-other", "2020-01-01T00:00:00Z", "batch"),
    ):
        images = _candidate(bake_id)
        for region, image_id in images.items():
            boto3.client("ec2", region_name=region).create_tags(
                Resources=[image_id],
                Tags=[{"Key": "BakeStarted", "Value": started}, {"Key": "BakeFamily", "Value": family}],
            )
    world = World()
    params = {"older_than_minutes": 60, "family_tags": {"BakeFamily": "burst"}, "regions": [COPY_REGION]}
    result = Discard(params, REGION, world.ec2, world.ssm).run()
    assert {d["image_id"] for d in result["deleted"]} and all(
        images == [] for images, _snaps in _bake_resources("bake-stale").values()
    )
    assert all(images for images, _snaps in _bake_resources("bake-young").values())
    assert all(images for images, _snaps in _bake_resources("bake-other").values())


def test_prune_skips_candidates_and_protects_every_launch_template_version(aws_env):
    live = _candidate("bake-a", stage="promoted", name="fam-v1")
    _candidate("bake-b", stage="promoted", name="fam-v2")
    candidate = _candidate("bake-c", name="fam-v3")
    ec2 = boto3.client("ec2", region_name=REGION)
    template = ec2.create_launch_template(
        LaunchTemplateName="burst-lt", LaunchTemplateData={"ImageId": "ami-0000000000000000f"}
    )["LaunchTemplate"]
    ec2.create_launch_template_version(
        LaunchTemplateId=template["LaunchTemplateId"], LaunchTemplateData={"ImageId": live[REGION]}
    )
    ec2.create_launch_template_version(
        LaunchTemplateId=template["LaunchTemplateId"], LaunchTemplateData={"ImageId": "ami-0000000000000000e"}
    )
    world = World()

    def autoscaling(region):
        from ansible_collections.burst.golden_ami.plugins.module_utils._images import AutoScalingApi

        return AutoScalingApi(world.client("autoscaling", region), region)

    params = {
        "name_prefix": "fam-v",
        "family_tags": {},
        "regions": [REGION, COPY_REGION],
        "keep_newest": 1,
        "max_age_days": None,
        "protect_ssm_parameters": [],
        "delete_snapshots": True,
    }
    result = GoldenAmiPrune(params, REGION, world.ec2, world.ssm, autoscaling=autoscaling).run()
    kept = {(k["region"], k["image_id"]): k["reasons"] for k in result["kept"]}
    assert any("launch template burst-lt (version 2)" in r for r in kept[(REGION, live[REGION])])
    deleted = {(d["region"], d["image_id"]) for d in result["deleted"]}
    assert (COPY_REGION, live[COPY_REGION]) in deleted, "the copy region is pruned too"
    assert not any(image_id in candidate.values() for _region, image_id in deleted | set(kept)), "candidates stay out"
    assert all(images for images, _snaps in _bake_resources("bake-c").values())
