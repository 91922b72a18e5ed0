"""What the bake tests share: the bake's variables on the local world, running a playbook, what a bake left."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
# The builder's stand-in container image (hack/build-base-image.sh).
BASE_IMAGE = "burst-golden-ami/debian12-systemd:latest"
# moto's copy of the Deep Learning AMI, found by name as a real bake finds its base image.
BASE_IMAGE_FAMILY = {"name_prefix": "Deep Learning AMI Ubuntu", "owners": ["amazon"]}
BUILDER_TYPES = ["g6e.xlarge", "g6.2xlarge", "g5.2xlarge"]
ACTIVE_STATES = ["pending", "running", "stopping", "stopped"]
CONTAINER_LABEL = "burst.golden_ami.bake-id"


def builder_image_missing() -> str | None:
    """Why a bake cannot start its builder container here, or None when the image is there."""
    probe = subprocess.run(
        ["docker", "image", "inspect", BASE_IMAGE], capture_output=True, text=True, check=False, timeout=60
    )
    if probe.returncode == 0:
        return None
    return f"the builder image {BASE_IMAGE} is missing: run `make base-image` (hack/build-base-image.sh)"


def new_bake_id(name: str) -> str:
    return f"test-{name}-{secrets.token_hex(3)}"


def bake_vars(bake_id: str, **overrides) -> dict:
    """A bake of the local world without configure roles (fast): docker connection, moto's base image."""
    variables = {
        "bake_id": bake_id,
        "bake_builder_connection": "docker",
        "bake_base_image_family": BASE_IMAGE_FAMILY,
        "bake_instance_types": BUILDER_TYPES,
        "bake_configure_roles": [],
        "bake_image_name": f"burst-golden-test-{bake_id}",
        "bake_ssm_parameter": f"/burst/test/{bake_id}",
        "bake_capture_poll_interval": 1,
    }
    variables.update(overrides)
    return variables


def playbook_command(playbook: str, variables: dict, workdir: Path) -> list[str]:
    """ansible-playbook of playbooks/<playbook> (or of a playbook's absolute path), its variables in a file."""
    path = Path(playbook) if Path(playbook).is_absolute() else REPO / "playbooks" / playbook
    vars_file = workdir / f"{path.stem}-{secrets.token_hex(2)}.json"
    vars_file.write_text(json.dumps(variables))
    return [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(path), "-e", f"@{vars_file}"]


def run_playbook(
    playbook: str, variables: dict, env: dict, workdir: Path, timeout: float
) -> subprocess.CompletedProcess:
    return subprocess.run(
        playbook_command(playbook, variables, workdir),
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def output(result: subprocess.CompletedProcess) -> str:
    return f"{result.stdout}\n{result.stderr}"


def bake_containers(bake_id: str) -> list[str]:
    """The ids of the builder containers of a bake (the docker connection labels them)."""
    return subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={CONTAINER_LABEL}={bake_id}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()


def ec2_leftovers(ec2, bake_id: str) -> dict[str, list[str]]:
    """What of a bake one region still holds: instances not terminated, security groups, key pairs (by BakeId)."""
    by_tag = [{"Name": "tag:BakeId", "Values": [bake_id]}]
    reservations = ec2.describe_instances(Filters=[*by_tag, {"Name": "instance-state-name", "Values": ACTIVE_STATES}])[
        "Reservations"
    ]
    return {
        "instances": [i["InstanceId"] for r in reservations for i in r["Instances"]],
        "security_groups": [g["GroupId"] for g in ec2.describe_security_groups(Filters=by_tag)["SecurityGroups"]],
        "key_pairs": [k["KeyName"] for k in ec2.describe_key_pairs(Filters=by_tag)["KeyPairs"]],
    }
