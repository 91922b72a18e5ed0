"""The bake as AWX runs it: ansible-runner, a private data directory, and least privilege.

AWX hands a job to ansible-runner as a private data directory: the project
(this collection's awx/, whose job playbooks import the collection's own
playbooks by name from the installed collection), an inventory, the survey
answers as extra vars, and the credentials as environment variables (the AWS
credential's keys, and the Hub token that awx/credential_types.yml injects
as HF_TOKEN).
This test builds that directory, runs the bake job template's playbook
(awx/playbooks/bake.yml, which imports burst.golden_ami.bake) through
ansible-runner's Python interface against the local world, as the user that
holds only docs/iam/bake.json, with moto enforcing IAM, and checks:

- the run's status and return code, and its events (every play, the
  capture, no failed task, the stats);
- the manifest the bake wrote, against what moto holds (image, copy, SSM
  parameter, pruned older image);
- that every action of bake.json was called (none is surplus) and no other
  was needed;
- that the Hub token reached no event and no output, and no file but
  ansible-runner's owner-only record of the job's environment.

The builder is the local world's systemd container (bake_builder_connection
docker) and the bake runs no configure role: the roles have their own
molecule scenarios; this test is about how the job runs.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
import uuid
from pathlib import Path

import pytest
import yaml
from iam_world import BASE_IMAGE_NAME_PREFIX, REPO, SSM_PARAMETER, load_policy, policy_actions

from localworld.bakes import ec2_leftovers

try:
    import ansible_runner
except ImportError as error:  # pragma: no cover - a missing requirement is a failure, not a skip
    raise ImportError("ansible-runner is not installed: requirements/dev.in must list it") from error

COPY_REGION = "us-east-1"
# The bake policy's actions that this run cannot call, and why.
NOT_SHOWN_BY_MOTO = {"ec2:EnableImageDeprecation"}  # moto cannot deprecate an image
OPTIONAL_READS = {"ec2:DescribeSpotPriceHistory"}  # the spot price is information only
# Called only when no subnet is given (the default VPC's lookup): test_iam.py's bake shows them.
DEFAULT_VPC_ONLY = {"ec2:DescribeVpcs", "ec2:DescribeVpcAttribute"}
# Called only by a bake that fails: looking for its orphan snapshots, and putting an SSM value back after a
# promote that failed half way (tests/integration/test_bake_faults.py runs both).
FAILURE_ONLY = {"ec2:DescribeSnapshots", "ssm:DeleteParameter"}
# moto launches an instance with a profile without asking for iam:PassRole, and creates a role or an
# instance profile with tags without asking for iam:TagRole or iam:TagInstanceProfile; AWS requires all three.
NOT_SHOWN_BY_MOTO = NOT_SHOWN_BY_MOTO | {"iam:PassRole", "iam:TagInstanceProfile", "iam:TagRole"}
BAKE_TIMEOUT_S = 420

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def older_image(iam_world) -> str:
    """An older image of the family, for the bake's prune, and a launch template that uses another image."""
    ec2 = iam_world.client("ec2")
    base = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [f"{BASE_IMAGE_NAME_PREFIX}*"]}])
    base_id = base["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=base_id, MinCount=1, MaxCount=1, InstanceType="t3.micro")["Instances"][0]
    image_id = ec2.create_image(InstanceId=instance["InstanceId"], Name="burst-golden-awx-v0")["ImageId"]
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    ec2.create_launch_template(LaunchTemplateName="burst-awx", LaunchTemplateData={"ImageId": base_id})
    return image_id


def _private_data_dir(root: Path, iam_world, extra_vars: dict, hub_token: str) -> tuple[Path, dict]:
    """A private data directory laid out as AWX lays it out; the credentials go in as envvars, not files."""
    pdd = root / "pdd"
    shutil.copytree(REPO / "awx", pdd / "project" / "awx", ignore=shutil.ignore_patterns("__pycache__"))
    (pdd / "inventory").mkdir(parents=True)
    (pdd / "inventory" / "hosts").write_text("localhost ansible_connection=local\n")
    (pdd / "env").mkdir()
    (pdd / "env" / "extravars").write_text(yaml.safe_dump(extra_vars))
    (pdd / "env" / "settings").write_text(
        yaml.safe_dump({"job_timeout": BAKE_TIMEOUT_S, "suppress_ansible_output": True})
    )
    envvars = iam_world.env("baker")
    envvars["HF_TOKEN"] = hub_token
    envvars["ANSIBLE_CALLBACKS_ENABLED"] = "burst.golden_ami.step_timer"
    envvars["BURST_STEP_TIMER_OUTPUT"] = str(root / "steps.json")
    return pdd, envvars


def test_bake_through_ansible_runner_as_the_baker(iam_world, older_image, tmp_path: Path) -> None:
    ec2 = iam_world.client("ec2")
    subnet = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"][0]
    bake_id = f"bake-awx-{uuid.uuid4().hex[:8]}"
    manifest_path = tmp_path / "manifest.json"
    extra_vars = {
        # The survey's answers of the bake job template (awx/job_templates.yml).
        "bake_id": bake_id,
        "bake_region": iam_world.region,
        "bake_version": "1",
        "bake_image_name": "burst-golden-awx-v1",
        "bake_base_image_family": {"name_prefix": BASE_IMAGE_NAME_PREFIX, "owners": ["amazon"]},
        "bake_instance_types": ["g6e.xlarge", "g5.2xlarge"],
        "bake_subnet_ids": [subnet["SubnetId"]],
        "bake_ssh_cidrs": ["127.0.0.1/32"],
        "bake_market": "spot",
        "bake_spot_max_price": "2.00",
        "bake_copy_regions": [COPY_REGION],
        "bake_ssm_parameter": SSM_PARAMETER,
        "bake_verify": True,
        "bake_prune": True,
        "bake_prune_name_prefix": "burst-golden-awx-v",
        "bake_prune_keep_newest": 1,
        # A temporary role and instance profile for the builder, removed at cleanup.
        "bake_iam_policy": {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"}],
        },
        # The local world: the builder is a systemd container, no configure role.
        "bake_builder_connection": "docker",
        "bake_configure_roles": [],
        "bake_capture_poll_interval": 1,
        "bake_manifest_path": str(manifest_path),
    }
    hub_token = "hf_" + secrets.token_hex(16)
    pdd, envvars = _private_data_dir(tmp_path, iam_world, extra_vars, hub_token)

    iam_world.start_recording()
    started = time.monotonic()
    runner = ansible_runner.run(
        private_data_dir=str(pdd),
        playbook="awx/playbooks/bake.yml",
        envvars=envvars,
        suppress_env_files=True,
        quiet=True,
        ident="bake",
    )
    elapsed = time.monotonic() - started
    called = iam_world.recorded_actions("baker")

    events = list(runner.events)
    failed = [
        e
        for e in events
        if e["event"] in ("runner_on_failed", "runner_on_unreachable") and not e["event_data"].get("ignore_errors")
    ]
    stdout = runner.stdout.read()
    assert runner.status == "successful" and runner.rc == 0, (
        f"{runner.status} rc={runner.rc} after {elapsed:.0f}s:\n{stdout[-5000:]}"
    )
    assert not failed, [e["event_data"].get("task") for e in failed]

    # The events AWX shows: each play, the capture's result, the stats.
    plays = [e["event_data"]["play"] for e in events if e["event"] == "playbook_on_play_start"]
    assert plays == [
        "Launch the builder",
        "Configure the builder",
        "Capture the image",
        "Clean up the bake",
        "Report the bake",
    ]
    capture = [
        e["event_data"]["res"]
        for e in events
        if e["event"] == "runner_on_ok" and e["event_data"].get("task") == "Capture the candidate image and copy it"
    ]
    assert len(capture) == 1 and capture[0]["changed"] is True
    image_id = capture[0]["image_id"]
    stats = [e for e in events if e["event"] == "playbook_on_stats"]
    assert len(stats) == 1 and stats[0]["event_data"]["failures"] == {}
    assert runner.stats["ok"]["localhost"] > 0

    # The manifest, against what moto holds.
    manifest = json.loads(manifest_path.read_text())
    assert manifest["image_id"] == image_id and manifest["build_id"] == bake_id
    assert set(manifest["regions"]) == {iam_world.region, COPY_REGION}
    assert manifest["builds"][0]["artifact_id"].startswith(f"{iam_world.region}:{image_id}")
    assert manifest["contents"]["bake_id"] == bake_id
    assert manifest["contents"]["builder"]["market"] == "spot"
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert image["State"] == "available" and {"Key": "BakeId", "Value": bake_id} in image["Tags"]
    copy_id = manifest["regions"][COPY_REGION]["image_id"]
    assert iam_world.client("ec2", region=COPY_REGION).describe_images(ImageIds=[copy_id])["Images"]
    assert iam_world.client("ssm").get_parameter(Name=SSM_PARAMETER)["Parameter"]["Value"] == image_id
    # The prune deregistered the older image; the cleanup left no builder, group or key.
    assert not ec2.describe_images(Filters=[{"Name": "image-id", "Values": [older_image]}])["Images"]
    assert ec2_leftovers(ec2, bake_id) == {"instances": [], "security_groups": [], "key_pairs": []}

    # Least privilege: the run needed every action of bake.json, and no other.
    listed = policy_actions(load_policy("bake"))
    assert called - listed <= OPTIONAL_READS, f"bake.json lacks {sorted(called - listed - OPTIONAL_READS)}"
    unused = listed - called - NOT_SHOWN_BY_MOTO - DEFAULT_VPC_ONLY - FAILURE_ONLY
    assert not unused, f"bake.json allows actions the bake never called: {sorted(unused)}"

    # The Hub token was handed over in the environment only: no event and no output holds it, and the
    # only file is ansible-runner's own record of the job's command and environment (artifacts/<ident>/
    # command, owner-only, as for every credential AWX injects; AWX removes the directory after the job).
    assert hub_token not in stdout
    assert hub_token not in json.dumps(events)
    files = [path for path in pdd.rglob("*") if path.is_file()]
    holding = sorted(str(path.relative_to(pdd)) for path in files if hub_token.encode() in path.read_bytes())
    assert holding == ["artifacts/bake/command"], f"files that hold the Hub token: {holding}"
    assert (pdd / "artifacts" / "bake" / "command").stat().st_mode & 0o077 == 0
