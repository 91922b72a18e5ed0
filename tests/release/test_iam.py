"""Least privilege: docs/iam's policies against moto enforcing IAM.

- The launch policy lets ``launch.yml`` and ``teardown.yml`` run as a user
  holding only it; they call every action it lists; without any one of those
  actions the run fails with AWS's access error naming the action.
- The bake policy: a whole bake runs as a user holding only it (through
  ansible-runner, in test_awx_runner.py) and calls every action it lists but
  the ones moto cannot show; here, a bake refused one action fails, naming
  its step and AWS's access error, and still cleans up.
- The manifest upload's policy (bake_manifest_s3.json, added to the bake's
  identity with ``bake_manifest_s3_uri``): bake.yml's upload tasks succeed
  as a user holding only it, and without any one of its actions fail,
  naming the URI and the operation AWS refused.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from iam_world import BASE_IMAGE_NAME_PREFIX, BIN, REPO, SSM_PARAMETER, for_moto, load_policy, policy_actions

from localworld.bakes import ec2_leftovers
from localworld.localplay import load_role_file

# Actions a policy needs on AWS that moto never asks for: tagging at launch
# (RunInstances with TagSpecifications) is authorized as ec2:CreateTags on
# AWS, and moto cannot deprecate images (EnableImageDeprecation fails there).
NOT_SHOWN_BY_MOTO = {
    "launch": {"ec2:CreateTags"},
    "bake": {"ec2:EnableImageDeprecation"},
}
# Calls whose refusal a launch tolerates: the spot price (in launch.json, for the launch's cost) is
# information in the results (the cost's price unknown, its error naming the refusal); without the
# instance types' architectures (left out of launch.json) the check that they fit the image is
# skipped with a warning.
OPTIONAL_READS = {"ec2:DescribeSpotPriceHistory", "ec2:DescribeInstanceTypes"}
TIMEOUT_S = 300
# The tags the job runner on a burst instance sets on its own instance.
RUNNER_TAG_KEYS = {key for _field, key in load_role_file("burst_services", "burst_job.py", "burst_job_iam").Status.TAGS}


@pytest.fixture(scope="module")
def golden_parameter(iam_world) -> str:
    """An SSM parameter holding an image id, as a bake publishes it."""
    ec2 = iam_world.client("ec2")
    images = ec2.describe_images(
        Owners=["amazon"], Filters=[{"Name": "name", "Values": [f"{BASE_IMAGE_NAME_PREFIX}*"]}]
    )
    assert images["Images"], "moto has no Deep Learning AMI to stand in for the golden image"
    iam_world.client("ssm").put_parameter(
        Name=SSM_PARAMETER,
        Value=images["Images"][0]["ImageId"],
        Type="String",
        DataType="aws:ec2:image",
        Overwrite=True,
    )
    return SSM_PARAMETER


def _launch_and_teardown(iam_world, tmp_path: Path) -> subprocess.CompletedProcess:
    extra_vars = {
        "burst_region": iam_world.region,
        "burst_job_id": f"iam-{uuid.uuid4().hex[:8]}",
        "burst_image_ssm_parameter": SSM_PARAMETER,
        "burst_instance_types": ["g6e.xlarge", "g5.2xlarge"],
        "burst_market": "spot",
        "burst_spot_max_price": "1.50",
        "burst_wait_timeout": 120,
    }
    (tmp_path / "vars.yml").write_text(yaml.safe_dump(extra_vars))
    return subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            str(REPO / "playbooks" / "launch.yml"),
            str(REPO / "playbooks" / "teardown.yml"),
            "-e",
            f"@{tmp_path / 'vars.yml'}",
        ],
        env=iam_world.env("launcher"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_policies_are_valid_documents() -> None:
    for name in ("bake", "launch", "bake_manifest_s3", "burst_instance_job"):
        document = load_policy(name)
        assert document["Version"] == "2012-10-17"
        sids = [s["Sid"] for s in document["Statement"]]
        assert len(sids) == len(set(sids)), f"{name}.json repeats a Sid"
        for statement in document["Statement"]:
            assert statement["Effect"] == "Allow"
            assert "*" not in str(statement["Action"]), f"{name}.json: {statement['Sid']} allows a wildcard action"
        for statement in document["Statement"]:
            listed = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
            assert len(listed) == len(set(listed)), f"{name}.json: {statement['Sid']} lists an action twice"
            assert listed == sorted(listed), f"{name}.json: keep {statement['Sid']}'s actions sorted"
    # The manifest's upload writes objects under one prefix, and nothing else.
    (upload,) = load_policy("bake_manifest_s3")["Statement"]
    assert upload["Action"] == ["s3:GetObjectTagging", "s3:PutObject"] and upload["Resource"].endswith("/*")
    # The instance role tags burst instances only, with the job runner's tag keys only.
    (tag, *_logs) = load_policy("burst_instance_job")["Statement"]
    assert tag["Action"] == ["ec2:CreateTags"] and tag["Condition"]["StringEquals"] == {"ec2:ResourceTag/Mode": "Burst"}
    assert set(tag["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"]) == RUNNER_TAG_KEYS
    # Launching never creates or deletes images, key pairs or security groups.
    assert not {
        a for a in policy_actions(load_policy("launch")) if a.split(":")[1].startswith(("Delete", "Deregister"))
    }


def test_launch_policy_is_enough_and_every_action_is_used(iam_world, golden_parameter, tmp_path: Path) -> None:
    iam_world.set_policy("launcher", for_moto(load_policy("launch")))
    iam_world.start_recording()
    result = _launch_and_teardown(iam_world, tmp_path)
    called = iam_world.recorded_actions("launcher")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    listed = policy_actions(load_policy("launch"))
    assert called - listed <= OPTIONAL_READS, f"launch.json lacks {sorted(called - listed - OPTIONAL_READS)}"
    assert listed - called == NOT_SHOWN_BY_MOTO["launch"], f"launch.json allows unused {sorted(listed - called)}"
    # Nothing is left running.
    instances = iam_world.client("ec2").describe_instances(
        Filters=[
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
            {"Name": "tag-key", "Values": ["BurstJobId"]},
        ]
    )
    assert not [i for r in instances["Reservations"] for i in r["Instances"]]


@pytest.mark.parametrize(
    "action",
    sorted(policy_actions(load_policy("launch")) - NOT_SHOWN_BY_MOTO["launch"] - OPTIONAL_READS),
    ids=lambda a: a,
)
def test_launch_fails_clearly_without(action: str, iam_world, golden_parameter, tmp_path: Path) -> None:
    iam_world.set_policy("launcher", for_moto(load_policy("launch"), without=action))
    try:
        result = _launch_and_teardown(iam_world, tmp_path)
    finally:
        iam_world.set_policy("launcher", for_moto(load_policy("launch")))
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"the launch succeeded without {action}"
    assert f"not authorized to perform: {action}" in output or f"not authorized to perform {action}" in output, (
        f"the failure without {action} does not name it:\n{output[-3000:]}"
    )


def test_launch_refused_the_spot_price_history_launches_and_says_the_price_is_unknown(
    iam_world, golden_parameter, tmp_path: Path
) -> None:
    action = "ec2:DescribeSpotPriceHistory"
    iam_world.set_policy("launcher", for_moto(load_policy("launch"), without=action))
    try:
        result = _launch_and_teardown(iam_world, tmp_path)
    finally:
        iam_world.set_policy("launcher", for_moto(load_policy("launch")))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "unknown USD/h" in output and action.split(":")[1] in output, output[-4000:]


@pytest.mark.docker
@pytest.mark.slow
def test_bake_refused_an_action_fails_naming_the_step_and_cleans_up(iam_world, tmp_path: Path) -> None:
    """The bake holds every action of bake.json but one: the run fails at that step, and cleanup runs.

    No subnet is given, so the bake looks the default VPC up first: this run
    also shows the actions that lookup needs.
    """
    action = "ec2:RunInstances"
    iam_world.set_policy("baker", for_moto(load_policy("bake"), without=action))
    bake_id = f"bake-iam-{uuid.uuid4().hex[:8]}"
    extra_vars = {
        "bake_id": bake_id,
        "bake_region": iam_world.region,
        "bake_builder_connection": "docker",
        "bake_configure_roles": [],
        "bake_base_image_family": {"name_prefix": BASE_IMAGE_NAME_PREFIX, "owners": ["amazon"]},
        "bake_image_name": f"burst-golden-refused-{bake_id}",
        "bake_manifest_path": str(tmp_path / "manifest.json"),
    }
    (tmp_path / "vars.yml").write_text(yaml.safe_dump(extra_vars))
    iam_world.start_recording()
    try:
        result = subprocess.run(
            [
                str(BIN / "ansible-playbook"),
                "-i",
                "localhost,",
                str(REPO / "playbooks" / "bake.yml"),
                "-e",
                f"@{tmp_path / 'vars.yml'}",
            ],
            env=iam_world.env("baker"),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    finally:
        iam_world.set_policy("baker", for_moto(load_policy("bake")))
    called = iam_world.recorded_actions("baker")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"Bake {bake_id} failed at step 'Launch the builder instance'" in output, output[-4000:]
    assert f"not authorized to perform: {action}" in output, output[-4000:]
    assert not (tmp_path / "manifest.json").exists()
    assert {"ec2:DescribeVpcs", "ec2:DescribeVpcAttribute"} <= called <= policy_actions(load_policy("bake")) | {action}
    # The cleanup ran: the temporary key pair and security group are gone, no builder runs.
    ec2 = iam_world.client("ec2")
    assert ec2_leftovers(ec2, bake_id) == {"instances": [], "security_groups": [], "key_pairs": []}


def _upload_manifest(iam_world, user: str, tmp_path: Path, uri: str) -> subprocess.CompletedProcess:
    """bake.yml's manifest upload tasks, as they are in the playbook, run as ``user`` after a bake."""
    report = yaml.safe_load((REPO / "playbooks" / "bake.yml").read_text())[-1]
    (upload,) = [t for t in report["tasks"] if t["name"] == "Upload the manifest to S3"]
    play_vars = {k: v for k, v in report["vars"].items() if k.startswith("__bake_manifest_s3_")}
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"image_id": "ami-0123456789abcdef0", "name": "burst-golden-iam-v1"}))
    play = {
        "name": "Upload a bake's manifest",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": play_vars,
        "tasks": [upload],
    }
    playbook = tmp_path / "upload.yml"
    playbook.write_text(yaml.safe_dump([play], sort_keys=False))
    variables = {
        "bake_id": "bake-iam-upload",
        "bake_region": iam_world.region,
        "bake_image_name": "burst-golden-iam-v1",
        "bake_manifest_path": str(manifest),
        "bake_manifest_s3_uri": uri,
    }
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook), "-e", json.dumps(variables)],
        env=iam_world.env(user),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="module")
def manifest_bucket(iam_world) -> str:
    bucket = f"burst-manifests-{uuid.uuid4().hex[:8]}"
    iam_world.client("s3").create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": iam_world.region}
    )
    if "uploader" not in iam_world.keys:
        iam_world.create_user("uploader", for_moto(load_policy("bake_manifest_s3")))
    return bucket


def test_manifest_upload_needs_only_its_policy(iam_world, manifest_bucket: str, tmp_path: Path) -> None:
    iam_world.set_policy("uploader", for_moto(load_policy("bake_manifest_s3")))
    result = _upload_manifest(iam_world, "uploader", tmp_path, f"s3://{manifest_bucket}/golden-ami/")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    body = iam_world.client("s3").get_object(Bucket=manifest_bucket, Key="golden-ami/burst-golden-iam-v1.json")["Body"]
    assert json.loads(body.read())["image_id"] == "ami-0123456789abcdef0"


@pytest.mark.parametrize("action", sorted(policy_actions(load_policy("bake_manifest_s3"))), ids=lambda a: a)
def test_manifest_upload_fails_clearly_without(action: str, iam_world, manifest_bucket: str, tmp_path: Path) -> None:
    iam_world.set_policy("uploader", for_moto(load_policy("bake_manifest_s3"), without=action))
    uri = f"s3://{manifest_bucket}/refused-{action.split(':')[1]}/"
    try:
        result = _upload_manifest(iam_world, "uploader", tmp_path, uri)
    finally:
        iam_world.set_policy("uploader", for_moto(load_policy("bake_manifest_s3")))
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"the upload succeeded without {action}"
    assert f"could not be uploaded to {uri}burst-golden-iam-v1.json" in output, output[-4000:]
    assert f"AccessDenied) when calling the {action.split(':')[1]} operation" in output, output[-4000:]
