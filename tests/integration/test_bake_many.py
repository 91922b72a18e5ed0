"""playbooks/bake_many.yml against the local world: two bakes in parallel, one of which fails.

bake_many runs each bake as its own ``ansible-playbook bake.yml`` process;
as in test_bake.py, each builder is launched in moto (on 127.0.0.1) and
reached through a local systemd container, with the configure roles left
out. One run of two bakes (the suite is time-limited): one succeeds, one
fails at once on an invalid variable; plus bad input that starts nothing.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from localworld.localplay import bake_environment

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
BASE_IMAGE = "burst-golden-ami/debian12-systemd:latest"
TIMEOUT_S = 900

pytestmark = [pytest.mark.slow, pytest.mark.docker]


def _docker_ready() -> bool:
    probe = subprocess.run(
        ["docker", "image", "inspect", BASE_IMAGE], capture_output=True, text=True, check=False, timeout=60
    )
    return probe.returncode == 0


@pytest.fixture(scope="module", autouse=True)
def _builder_image():
    if not _docker_ready():
        pytest.fail(f"the builder image {BASE_IMAGE} is missing: run `make base-image` (hack/build-base-image.sh)")


def _bake_vars(bake_id: str, **overrides) -> dict:
    variables = {
        "bake_id": bake_id,
        "bake_builder_connection": "docker",
        "bake_base_image_family": {"name_prefix": "Deep Learning AMI Ubuntu", "owners": ["amazon"]},
        "bake_instance_types": ["g6e.xlarge", "g6.2xlarge", "g5.2xlarge"],
        "bake_configure_roles": [],
        "bake_image_name": f"burst-golden-test-{bake_id}",
        "bake_ssm_parameter": f"/burst/test/{bake_id}",
        "bake_capture_poll_interval": 1,
    }
    variables.update(overrides)
    return variables


def _bake_id(name: str) -> str:
    return f"test-{name}-{secrets.token_hex(3)}"


def _run_bake_many(bakes: dict, aws_env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = bake_environment(aws_env, tmp_path)
    # bake_many's private directory of variables is made here, so that the test sees it removed.
    (tmp_path / "tmp").mkdir()
    env["TMPDIR"] = str(tmp_path / "tmp")
    bakes_file = tmp_path / "bakes.json"
    bakes_file.write_text(json.dumps(bakes))
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(REPO / "playbooks" / "bake_many.yml"), "-e", f"@{bakes_file}"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def _output(result: subprocess.CompletedProcess) -> str:
    return f"{result.stdout}\n{result.stderr}"


def _leftovers(bake_id: str) -> dict[str, list[str]]:
    """What of this bake is still there: active instances, security groups, key pairs, containers, images."""
    ec2 = boto3.client("ec2")
    by_tag = [{"Name": "tag:BakeId", "Values": [bake_id]}]
    instances = [
        i["InstanceId"]
        for r in ec2.describe_instances(
            Filters=[*by_tag, {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
        )["Reservations"]
        for i in r["Instances"]
    ]
    groups = [g["GroupId"] for g in ec2.describe_security_groups(Filters=by_tag)["SecurityGroups"]]
    keys = [k["KeyName"] for k in ec2.describe_key_pairs(Filters=by_tag)["KeyPairs"]]
    images = [i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=by_tag)["Images"]]
    containers = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=burst.golden_ami.bake-id={bake_id}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return {
        "instances": instances,
        "security_groups": groups,
        "key_pairs": keys,
        "containers": containers,
        "images": images,
    }


def test_two_bakes_in_parallel_one_fails(aws_env, tmp_path):
    good, bad = _bake_id("many-good"), _bake_id("many-bad")
    token = "hf_" + secrets.token_hex(17)
    logs = tmp_path / "logs"
    summary_path = tmp_path / "summary.json"
    bakes = {
        "bakes": [
            {"name": "good", "vars": _bake_vars(good)},
            # Refused by the bake's first check, before anything is created.
            {"name": "bad", "vars": _bake_vars(bad, bake_market="sometimes")},
        ],
        # Reaches every bake through its variables file, never a command line or the output.
        "bake_many_common": {"burst_test_hub_token": token},
        "bake_many_log_dir": str(logs),
        "bake_many_summary_path": str(summary_path),
        "bake_many_poll_interval": 2,
    }
    result = _run_bake_many(bakes, aws_env, tmp_path)
    output = _output(result)
    assert result.returncode != 0, output[-6000:]

    summary = json.loads(summary_path.read_text())
    by_name = {bake["name"]: bake for bake in summary["bakes"]}
    assert {name: bake["result"] for name, bake in by_name.items()} == {"good": "ok", "bad": "failed"}, summary
    assert summary["failed"] == ["bad"]
    assert (by_name["good"]["bake_id"], by_name["bad"]["bake_id"]) == (good, bad)
    assert "failed at step 'Check the bake variables'" in by_name["bad"]["error"]
    for bake in by_name.values():
        assert Path(bake["log"]).is_file(), bake
        assert Path(bake["log"]).parent == logs
        assert isinstance(bake["duration_s"], int)
    assert f"Bake {bad} failed at step" in Path(by_name["bad"]["log"]).read_text()
    # The run names the failed bake and its log.
    assert "1 of 2 bake(s) failed: bad" in output
    assert by_name["bad"]["log"] in output

    # The good image exists, in every region its manifest names, and the SSM parameter points at it.
    images = by_name["good"]["images"]
    assert len(images) == 1, images
    ((region, image_id),) = images.items()
    ec2 = boto3.client("ec2", region_name=region)
    found = ec2.describe_images(ImageIds=[image_id])["Images"]
    assert found[0]["Tags"] and {"Key": "BakeId", "Value": good} in found[0]["Tags"]
    parameter = boto3.client("ssm", region_name=region).get_parameter(Name=f"/burst/test/{good}")["Parameter"]
    assert parameter["Value"] == image_id
    manifest = json.loads(Path(by_name["good"]["manifest"]).read_text())
    assert manifest["image_id"] == image_id and manifest["build_id"] == good
    # Each child ran with this run's collection and callbacks: its step durations are beside its log.
    assert (logs / f"{good}.steps.json").is_file()

    # Each bake cleaned up after itself; the failed one left nothing at all.
    good_left = _leftovers(good)
    assert good_left == {**_nothing_left(), "images": [image_id]}
    assert _leftovers(bad) == _nothing_left()
    with pytest.raises(ClientError):
        boto3.client("ssm", region_name=region).get_parameter(Name=f"/burst/test/{bad}")

    # The variables never showed, and their private directory is gone.
    assert token not in output
    for log in logs.iterdir():
        assert token not in log.read_text(), log
    assert list((tmp_path / "tmp").glob("bake_many.*")) == []


def _nothing_left() -> dict[str, list[str]]:
    return {"instances": [], "security_groups": [], "key_pairs": [], "containers": [], "images": []}


def test_duplicate_names_start_nothing(aws_env, tmp_path):
    bake_id = _bake_id("twin")
    bakes = {
        "bakes": [{"name": "twin", "vars": _bake_vars(bake_id)}, {"name": "twin", "vars": _bake_vars(f"{bake_id}-2")}],
        "bake_many_log_dir": str(tmp_path / "logs"),
    }
    result = _run_bake_many(bakes, aws_env, tmp_path)
    output = _output(result)
    assert result.returncode != 0
    assert "Bake names given twice: twin" in output
    assert not (tmp_path / "logs").exists(), "nothing was started"
    assert boto3.client("ec2").describe_instances()["Reservations"] == []
