"""The bake's fault matrix: a failure injected at each stage, and SIGINT at each stage, against the local world.

Every case starts from a family that production already uses: a promoted
image in two regions (eu-central-1 and its copy in eu-west-1), each region's
SSM parameter pointing at it. The bake then runs the shipped playbook with
copies, a temporary IAM role, verify (its health probe pointed at a loopback
stand-in, since moto's instance addresses are never contacted), promote and
prune. After each case the test checks everything a failure could leave:

- the SSM parameter in both regions holds its value from before the bake,
  or the new image in both regions only when promote completed;
- the previous image and its snapshots are intact in both regions;
- nothing of the bake is left in either region: instances, security groups,
  key pairs, IAM roles and instance profiles, images, snapshots, copies,
  builder containers, and the temporary key directory on the controller;
- the error names the step.

Faults are injected into botocore by ``tests/localworld/faults.py``, which
only the tests enable; a rule can be limited to one region.
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import time

import boto3
import pytest

from localworld.bakes import bake_containers, ec2_leftovers, playbook_command, run_playbook
from localworld.faults import fault_env
from localworld.health_stub import HealthStub
from localworld.localplay import bake_environment

BASE_IMAGE = "burst-golden-ami/debian12-systemd:latest"
REGION, COPY_REGION = "eu-central-1", "eu-west-1"
REGIONS = (REGION, COPY_REGION)
TIMEOUT_S = 420
BUILDER_TYPES = ["g6e.xlarge", "g6.2xlarge"]
IAM_PATH = "/burst-golden-ami/"

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture(scope="module")
def health_stub():
    with HealthStub() as stub:
        yield stub


class Bake:
    """One bake of a family that production already uses, and what it may leave."""

    def __init__(self, name, tmp_path, aws_env, health_stub):
        self.bake_id = f"fault-{name}-{secrets.token_hex(3)}"
        self.family = f"fam-{self.bake_id}-v"
        self.parameter = f"/burst/test/{self.bake_id}"
        self.tmp_path = tmp_path
        self.aws_env = aws_env
        self.stub = health_stub
        self.keys = tmp_path / "keys"
        self.keys.mkdir()
        self.previous = self._previous_image()
        self.previous_snapshots = {r: self._snapshots_of(r, i) for r, i in self.previous.items()}

    # -- the family before the bake

    def _previous_image(self):
        ec2 = boto3.client("ec2", region_name=REGION)
        base = ec2.describe_images(
            Owners=["amazon"], Filters=[{"Name": "name", "Values": ["Deep Learning AMI Ubuntu*"]}]
        )
        instance = ec2.run_instances(ImageId=base["Images"][0]["ImageId"], MinCount=1, MaxCount=1)["Instances"][0]
        tags = [{"Key": "BakeId", "Value": f"prev-{self.bake_id}"}, {"Key": "ImageStage", "Value": "promoted"}]
        specs = [{"ResourceType": kind, "Tags": tags} for kind in ("image", "snapshot")]
        name = f"{self.family}1"
        source = ec2.create_image(InstanceId=instance["InstanceId"], Name=name, TagSpecifications=specs)["ImageId"]
        ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
        copy = boto3.client("ec2", region_name=COPY_REGION).copy_image(
            SourceImageId=source, SourceRegion=REGION, Name=name, TagSpecifications=specs
        )["ImageId"]
        images = {REGION: source, COPY_REGION: copy}
        for region, image_id in images.items():
            boto3.client("ssm", region_name=region).put_parameter(
                Name=self.parameter, Value=image_id, Type="String", DataType="aws:ec2:image"
            )
        return images

    @staticmethod
    def _snapshots_of(region, image_id):
        images = boto3.client("ec2", region_name=region).describe_images(ImageIds=[image_id])["Images"]
        return sorted(m["Ebs"]["SnapshotId"] for i in images for m in i["BlockDeviceMappings"] if "Ebs" in m)

    # -- running

    def variables(self, **overrides):
        variables = {
            "bake_id": self.bake_id,
            "bake_region": REGION,
            "bake_builder_connection": "docker",
            "bake_base_image_family": {"name_prefix": "Deep Learning AMI Ubuntu", "owners": ["amazon"]},
            "bake_instance_types": BUILDER_TYPES,
            "bake_configure_roles": [],
            "bake_version": "2",
            "bake_image_name": f"{self.family}2",
            "bake_family": self.family,
            "bake_prune_name_prefix": self.family,
            "bake_prune": True,
            "bake_prune_keep_newest": 1,
            "bake_ssm_parameter": self.parameter,
            "bake_copy_regions": [COPY_REGION],
            "bake_verify": True,
            "bake_verify_instance_types": ["c7i.large"],
            "bake_verify_health_url": self.stub.url("ready"),
            "bake_verify_health_timeout": 60,
            "bake_iam_policy": {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"}],
            },
            "bake_ssh_cidrs": ["127.0.0.1/32"],
            "bake_key_parent": str(self.keys),
            "bake_manifest_path": str(self.tmp_path / "manifest.json"),
            "bake_capture_poll_interval": 1,
            "bake_progress_interval": 1,
        }
        variables.update(overrides)
        return variables

    def environment(self, plan=None):
        env = bake_environment(self.aws_env, self.tmp_path)
        if plan:
            env.update(fault_env(plan, self.tmp_path))
        return env

    def command(self, playbook, variables):
        return playbook_command(playbook, variables, self.tmp_path)

    def run(self, playbook, variables, plan=None):
        result = run_playbook(playbook, variables, self.environment(plan), self.tmp_path, TIMEOUT_S)
        output = f"{result.stdout}\n{result.stderr}"
        (self.tmp_path / f"{playbook}.log").write_text(output)  # kept for a person reading a failure
        return result.returncode, output

    def cleanup(self):
        variables = {
            "bake_region": REGION,
            "bake_id": self.bake_id,
            "bake_copy_regions": [COPY_REGION],
            "bake_ssm_parameter": self.parameter,
            "bake_cleanup_containers": True,
            "bake_key_parent": str(self.keys),
        }
        return self.run("cleanup.yml", variables)

    # -- what is there after

    def values(self):
        return {
            r: boto3.client("ssm", region_name=r).get_parameter(Name=self.parameter)["Parameter"]["Value"]
            for r in REGIONS
        }

    def images(self, region, stage=None):
        filters = [{"Name": "tag:BakeId", "Values": [self.bake_id]}]
        if stage:
            filters.append({"Name": "tag:ImageStage", "Values": [stage]})
        return boto3.client("ec2", region_name=region).describe_images(Owners=["self"], Filters=filters)["Images"]

    def leftovers(self, promoted=False):
        """Everything of the bake still there; with ``promoted``, the promoted images and their snapshots are not."""
        left = {}
        by_tag = [{"Name": "tag:BakeId", "Values": [self.bake_id]}]
        for region in REGIONS:
            ec2 = boto3.client("ec2", region_name=region)
            kept = set()
            images = []
            for image in self.images(region):
                stage = {t["Key"]: t["Value"] for t in image.get("Tags", [])}.get("ImageStage")
                if promoted and stage == "promoted":
                    kept.update(m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "Ebs" in m)
                else:
                    images.append(image["ImageId"])
            snapshots = [
                s["SnapshotId"]
                for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=by_tag)["Snapshots"]
                if s["SnapshotId"] not in kept
            ]
            for kind, found in (
                ("images", images),
                ("snapshots", snapshots),
                *ec2_leftovers(ec2, self.bake_id).items(),
            ):
                if found:
                    left[f"{kind} in {region}"] = found
        iam = boto3.client("iam")
        roles = [r["RoleName"] for r in iam.list_roles(PathPrefix=IAM_PATH)["Roles"] if r["RoleName"] == self.bake_id]
        profiles = [
            p["InstanceProfileName"]
            for p in iam.list_instance_profiles(PathPrefix=IAM_PATH)["InstanceProfiles"]
            if p["InstanceProfileName"] == self.bake_id
        ]
        containers = bake_containers(self.bake_id)
        key_dirs = sorted(p.name for p in self.keys.iterdir())
        for kind, found in (
            ("iam_roles", roles),
            ("instance_profiles", profiles),
            ("containers", containers),
            ("key_dirs", key_dirs),
        ):
            if found:
                left[kind] = found
        return left

    def assert_production(self, promoted):
        values = self.values()
        if promoted:
            new = {r: self.images(r, "promoted")[0]["ImageId"] for r in REGIONS}
            assert values == new, "promote completed: every region names the new image"
        else:
            assert values == self.previous, "production was not changed"
            for region, image_id in self.previous.items():
                assert self._snapshots_of(region, image_id) == self.previous_snapshots[region], "previous image intact"


def _builder_types_without_capacity():
    return [
        {"operation": "RunInstances", "match": {"InstanceType": t}, "code": "InsufficientInstanceCapacity"}
        for t in BUILDER_TYPES
    ]


# name: (variable overrides, fault plan, step named in the error, promote completed)
FAULTS = {
    "launch": ({}, _builder_types_without_capacity(), "Launch the builder instance", False),
    "configure": ({"bake_configure_roles": ["burst_services"]}, None, "(role burst_services)", False),
    "capture": (
        {"bake_capture_timeout": 3},
        [{"operation": "DescribeImages", "region": REGION, "match": {"Owners": None}, "code": "InvalidAMIID.NotFound"}],
        "Capture the candidate image and copy it",
        False,
    ),
    "copy": (
        {"bake_capture_timeout": 3},
        [
            {
                "operation": "DescribeImages",
                "region": COPY_REGION,
                "match": {"Owners": None},
                "code": "InvalidAMIID.NotFound",
            }
        ],
        "Capture the candidate image and copy it",
        False,
    ),
    "verify": ({"__stub_route": "loading", "bake_verify_health_timeout": 3}, None, "wait for its healthcheck", False),
    "promote": (
        {},
        [{"operation": "PutParameter", "region": COPY_REGION, "code": "AccessDeniedException"}],
        "Promote the candidate in every region",
        False,
    ),
    "prune": ({}, [{"operation": "DeregisterImage", "code": "UnauthorizedOperation"}], "Prune older images", True),
}


@pytest.mark.parametrize("stage", sorted(FAULTS))
def test_fault_at_each_stage_leaves_production_as_it_was_and_nothing_of_the_bake(stage, aws_env, tmp_path, health_stub):
    overrides, plan, step, promoted = FAULTS[stage]
    bake = Bake(stage, tmp_path, aws_env, health_stub)
    overrides = dict(overrides)
    route = overrides.pop("__stub_route", None)
    if route:
        overrides["bake_verify_health_url"] = health_stub.url(route)
    code, output = bake.run("bake.yml", bake.variables(**overrides), plan)
    assert code != 0, output[-4000:]
    assert f"Bake {bake.bake_id} failed at step" in output, output[-4000:]
    assert step in output, output[-4000:]
    assert ("Production is on the new image" in output) is promoted, output[-3000:]
    if stage == "verify":
        assert '\\"ready\\": false' in output or '"ready": false' in output, "the verify shows the healthcheck's answer"
        assert "(item=health: 0 of 1 healthy after" in output, "the verify reports its progress"
    if stage == "copy":
        assert "(item=copies: ami-" in output, "the capture reports its progress"
        assert f" in {COPY_REGION} not visible yet after" in output
    if stage == "promote":
        assert f"Restored {bake.parameter} in {REGION}" in output
    bake.assert_production(promoted)
    assert bake.leftovers(promoted=promoted) == {}
    if not promoted:
        assert not (tmp_path / "manifest.json").exists(), "no manifest of a removed candidate"


def test_fault_inside_the_failure_handling_still_runs_every_cleanup_step(aws_env, tmp_path, health_stub):
    bake = Bake("rescue", tmp_path, aws_env, health_stub)
    # Verify fails, then removing the candidate's copy fails: everything else is still removed.
    plan = [{"operation": "DeregisterImage", "region": COPY_REGION, "code": "UnauthorizedOperation"}]
    variables = bake.variables(bake_verify_health_url=health_stub.url("loading"), bake_verify_health_timeout=3)
    code, output = bake.run("bake.yml", variables, plan)
    assert code != 0
    assert "wait for its healthcheck" in output
    assert "The cleanup could not remove everything: Could not remove" in output, output[-4000:]
    assert f"images {bake.images(COPY_REGION)[0]['ImageId']} in {COPY_REGION}" in output
    left = bake.leftovers()
    assert set(left) == {f"images in {COPY_REGION}", f"snapshots in {COPY_REGION}"}, left
    bake.assert_production(promoted=False)
    # The printed command removes the rest.
    command = output.split("Once the cause is fixed, run: ")[1].split("\n")[0].strip().rstrip('"').replace("\\'", "'")
    argv = shlex.split(command)
    assert argv[:2] == ["ansible-playbook", "burst.golden_ami.cleanup"], command
    cleanup_code, cleanup_output = bake.cleanup()
    assert cleanup_code == 0, cleanup_output[-4000:]
    assert bake.leftovers() == {}
    bake.assert_production(promoted=False)


def test_fault_inside_the_cleanup_still_runs_every_other_step(aws_env, tmp_path, health_stub):
    bake = Bake("cleanup", tmp_path, aws_env, health_stub)
    plan = [{"operation": "DeleteKeyPair", "code": "UnauthorizedOperation"}]
    code, output = bake.run("bake.yml", bake.variables(), plan)
    assert code != 0
    assert "succeeded, but its cleanup could not remove everything" in output, output[-4000:]
    assert f"key_pairs {bake.bake_id} in {REGION}: " in output, output[-4000:]
    assert bake.leftovers(promoted=True) == {f"key_pairs in {REGION}": [bake.bake_id]}
    bake.assert_production(promoted=True)
    cleanup_code, cleanup_output = bake.cleanup()
    assert cleanup_code == 0, cleanup_output[-4000:]
    assert bake.leftovers(promoted=True) == {}


# name: the task whose start triggers SIGINT, and whether promote may have completed by then.
SIGINT_AT = {
    "launch": "TASK [Launch the builder instance]",
    "configure": "TASK [Gather the builder's facts]",
    "capture": "TASK [Start capturing the candidate image]",
    "verify": "TASK [Start booting an instance from the candidate]",
    "promote": "TASK [Promote the candidate in every region]",
    "prune": "TASK [Prune older images of the family in every region]",
}


@pytest.mark.parametrize("stage", list(SIGINT_AT))
def test_sigint_at_each_stage_then_cleanup_leaves_nothing(stage, aws_env, tmp_path, health_stub):
    bake = Bake(f"int-{stage}", tmp_path, aws_env, health_stub)
    # A verify that waits, so that SIGINT lands while it runs.
    variables = bake.variables(bake_verify_health_url=health_stub.url("loading" if stage == "verify" else "ready"))
    process = subprocess.Popen(
        bake.command("bake.yml", variables),
        env=bake.environment(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen = []
    try:
        deadline = time.monotonic() + TIMEOUT_S
        for line in process.stdout:
            seen.append(line)
            if SIGINT_AT[stage] in line:
                time.sleep(1.0)
                process.send_signal(signal.SIGINT)
                break
            assert time.monotonic() < deadline, "the stage was not reached in time"
        else:
            pytest.fail("the bake ended before the stage: " + "".join(seen)[-3000:])
        process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode != 0
    code, output = bake.cleanup()
    assert code == 0, output[-4000:]
    promoted = bool(bake.images(REGION, "promoted"))
    assert stage in ("promote", "prune") or not promoted
    assert bake.leftovers(promoted=promoted) == {}
    values = bake.values()
    if promoted:
        assert values == {r: bake.images(r, "promoted")[0]["ImageId"] for r in REGIONS}
    else:
        bake.assert_production(promoted=False)


def test_stages_stop_at_a_verified_candidate_that_verify_and_promote_take_on_their_own(aws_env, tmp_path, health_stub):
    bake = Bake("stages", tmp_path, aws_env, health_stub)
    code, output = bake.run("bake.yml", bake.variables(bake_stages=["capture", "verify"]))
    assert code == 0, output[-4000:]
    assert "candidate (not promoted)" in output
    bake.assert_production(promoted=False)
    candidates = {r: bake.images(r, "candidate") for r in REGIONS}
    assert all(len(images) == 1 for images in candidates.values()), candidates
    # Nothing else of the bake is left: its images stay, as candidates.
    assert set(bake.leftovers()) == {f"{kind} in {r}" for kind in ("images", "snapshots") for r in REGIONS}

    group = boto3.client("ec2", region_name=REGION).create_security_group(GroupName=bake.bake_id, Description="verify")
    common = {"bake_region": REGION, "bake_id": bake.bake_id, "bake_key_parent": str(bake.keys)}
    code, output = bake.run(
        "verify.yml",
        dict(common, bake_security_group_ids=[group["GroupId"]], bake_verify_health_url=health_stub.url("ready"),
             bake_builder_connection="docker", bake_verify_instance_types=["c7i.large"]),
    )  # fmt: skip
    assert code == 0, output[-4000:]
    promote_vars = dict(
        common,
        bake_copy_regions=[COPY_REGION],
        bake_ssm_parameter=bake.parameter,
        bake_prune=True,
        bake_prune_name_prefix=bake.family,
        bake_prune_keep_newest=1,
    )
    code, output = bake.run("promote.yml", promote_vars)
    assert code == 0, output[-4000:]
    bake.assert_production(promoted=True)
    for region, image_id in bake.previous.items():
        assert not boto3.client("ec2", region_name=region).describe_images(
            Filters=[{"Name": "image-id", "Values": [image_id]}]
        )["Images"], "the prune retired the previous image in both regions"
    assert bake.leftovers(promoted=True) == {}
    # A second promote changes nothing.
    code, output = bake.run("promote.yml", promote_vars)
    assert code == 0 and "changed=0" in output, output[-3000:]
