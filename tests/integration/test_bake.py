"""playbooks/bake.yml and playbooks/cleanup.yml end to end, with faults, against the local world.

Each test runs the real playbook with ``ansible-playbook``: the builder is
launched in moto (on 127.0.0.1) by the collection's launcher, and reached
through a local systemd container (``bake_builder_connection: docker``);
nothing connects to moto's instance addresses. The configure roles are left
out (``bake_configure_roles: []``) to keep the suite fast; image_sanitize,
which always runs, still sanitizes and scans the container. ``make demo``
runs the whole bake with every role.

Every test ends by checking that no instance, security group, key pair or
container of its bake is left. The failures at each stage (a role, the
capture, SIGINT...) are the fault matrix of test_bake_faults.py.
"""

from __future__ import annotations

import base64
import json
import secrets
import string
import subprocess
import time
from pathlib import Path

import boto3
import pytest

from localworld.bakes import (
    BASE_IMAGE,
    bake_containers,
    bake_vars,
    ec2_leftovers,
    new_bake_id,
    output,
    run_playbook,
)
from localworld.faults import fault_env
from localworld.localplay import bake_environment

TIMEOUT_S = 300

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.usefixtures("builder_image")]


def _bake_vars(tmp_path: Path, bake_id: str, **overrides) -> dict:
    return bake_vars(bake_id, bake_manifest_path=str(tmp_path / "manifest.json"), **overrides)


def _environment(aws_env: dict[str, str], tmp_path: Path, plan: list | None = None) -> dict[str, str]:
    env = bake_environment(aws_env, tmp_path)
    if plan is not None:
        env.update(fault_env(plan, tmp_path))
    return env


def _run(playbook: str, variables: dict, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    return run_playbook(playbook, variables, env, tmp_path, TIMEOUT_S)


def _output(result: subprocess.CompletedProcess) -> str:
    return output(result)


def _leftovers(bake_id: str) -> dict[str, list[str]]:
    """What of this bake is still there: active instances, security groups, key pairs, containers."""
    return {**ec2_leftovers(boto3.client("ec2"), bake_id), "containers": bake_containers(bake_id)}


def _nothing_left(_bake_id: str) -> dict[str, list[str]]:
    return {"instances": [], "security_groups": [], "key_pairs": [], "containers": []}


def _builder_instances(bake_id: str) -> list[dict]:
    ec2 = boto3.client("ec2")
    reservations = ec2.describe_instances(
        Filters=[{"Name": "tag:BakeId", "Values": [bake_id]}, {"Name": "tag:Mode", "Values": ["GoldenAmiBuilder"]}]
    )["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def _bake_id(name: str) -> str:
    return new_bake_id(name)


def test_bake_falls_back_on_capacity_errors_and_publishes(aws_env, tmp_path):
    bake_id = _bake_id("capacity")
    plan = [
        {
            "operation": "RunInstances",
            "match": {"InstanceType": instance_type},
            "code": "InsufficientInstanceCapacity",
            "message": f"We currently do not have sufficient {instance_type} capacity in the zone you requested.",
        }
        for instance_type in ("g6e.xlarge", "g6.2xlarge")
    ]
    result = _run("bake.yml", _bake_vars(tmp_path, bake_id), _environment(aws_env, tmp_path, plan), tmp_path)
    output = _output(result)
    assert result.returncode == 0, output[-6000:]

    builders = _builder_instances(bake_id)
    assert [b["InstanceType"] for b in builders] == ["g5.2xlarge"], "the launcher moved on to the third type"
    assert builders[0]["State"]["Name"] == "terminated"
    assert builders[0]["MetadataOptions"]["HttpTokens"] == "required"
    ec2 = boto3.client("ec2")
    builder_id = builders[0]["InstanceId"]
    behaviour = ec2.describe_instance_attribute(InstanceId=builder_id, Attribute="instanceInitiatedShutdownBehavior")
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    user_data = ec2.describe_instance_attribute(InstanceId=builder_id, Attribute="userData")["UserData"]["Value"]
    assert "--on-active=180min" in base64.b64decode(user_data).decode(), "the builder's lifetime is bounded on it"

    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:BakeId", "Values": [bake_id]}])["Images"]
    assert len(images) == 1
    image_id = images[0]["ImageId"]
    parameter = boto3.client("ssm").get_parameter(Name=f"/burst/test/{bake_id}")["Parameter"]
    assert parameter["Value"] == image_id

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["image_id"] == image_id
    assert manifest["contents"]["bake_id"] == bake_id
    assert manifest["contents"]["builder"]["instance_type"] == "g5.2xlarge"
    # The bill of materials, fetched next to the manifest: the builder's OS and its packages from dpkg.
    bom = json.loads((tmp_path / f"burst-golden-test-{bake_id}.cdx.json").read_text())
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    assert bom["metadata"]["component"]["name"] == f"burst-golden-test-{bake_id}"
    purls = [c.get("purl", "") for c in bom["components"]]
    assert any(p.startswith("pkg:deb/debian/systemd@") for p in purls), purls[:20]
    steps = [s["step"] for s in json.loads((tmp_path / "steps.json").read_text())["steps"]]
    assert {"Launch the builder", "image_sanitize", "Capture the image", "Clean up the bake"} <= set(steps)
    assert _leftovers(bake_id) == _nothing_left(bake_id)


def test_planted_token_fails_the_secret_scan_without_printing_it(aws_env, tmp_path):
    bake_id = _bake_id("token")
    container = f"burst-bake-{bake_id}"
    token = "hf_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _index in range(34))
    subprocess.run(
        [
            "docker", "run", "-d", "--name", container,
            "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
            "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
            "--network", "host", BASE_IMAGE, "/lib/systemd/systemd",
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    try:
        subprocess.run(
            ["docker", "exec", "-i", container, "sh", "-c", "mkdir -p /opt/app && cat > /opt/app/settings.env"],
            input=f"HF_TOKEN={token}\n",
            text=True,
            check=True,
            timeout=60,
        )
        variables = _bake_vars(tmp_path, bake_id, bake_builder_container=container)
        result = _run("bake.yml", variables, _environment(aws_env, tmp_path), tmp_path)
        output = _output(result)
        assert result.returncode != 0
        assert f"Bake {bake_id} failed at step" in output
        assert "(role image_sanitize)" in output
        assert "/opt/app/settings.env" in output, "the failure names the file"
        assert token not in output
        assert token[3:] not in output
        assert not (tmp_path / "manifest.json").exists()
        assert _leftovers(bake_id) == _nothing_left(bake_id)
        # A container given to the bake is the caller's: it is kept.
        kept = subprocess.run(["docker", "inspect", container], capture_output=True, check=False, timeout=60)
        assert kept.returncode == 0
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False, timeout=120)


def test_cleanup_by_age_keeps_young_bakes(aws_env, tmp_path):
    ec2 = boto3.client("ec2")
    old, young = _bake_id("old"), _bake_id("young")
    # Each bake also has a builder container, labelled as bake.yml labels them; the young one runs.
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for bake_id, started, label in (
        (old, "2020-01-01T00:00:00Z", "2020-01-01T00:00:00Z"),
        (young, "2999-01-01T00:00:00Z", now),
    ):
        tags = [{"Key": "BakeId", "Value": bake_id}, {"Key": "BakeStarted", "Value": started}]
        ec2.create_key_pair(KeyName=bake_id, TagSpecifications=[{"ResourceType": "key-pair", "Tags": tags}])
        ec2.create_security_group(
            GroupName=bake_id, Description="test", TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}]
        )
        subprocess.run(
            ["docker", "create", "--label", f"burst.golden_ami.bake-id={bake_id}",
             "--label", f"burst.golden_ami.bake-started={label}", BASE_IMAGE, "true"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    try:
        variables = {"bake_cleanup_older_than": 60, "bake_cleanup_containers": True}
        cleanup = _run("cleanup.yml", variables, _environment(aws_env, tmp_path), tmp_path)
        assert cleanup.returncode == 0, _output(cleanup)[-6000:]
        assert _leftovers(old) == _nothing_left(old)
        young_left = _leftovers(young)
        assert young_left["security_groups"] and young_left["key_pairs"] == [young]
        assert len(young_left["containers"]) == 1, "a container of a bake younger than the cutoff is kept"
    finally:
        for container in _leftovers(young)["containers"] + _leftovers(old)["containers"]:
            subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False, timeout=120)
