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
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from localworld.bakes import (
    ANSIBLE_PLAYBOOK,
    REPO,
    bake_containers,
    bake_vars,
    ec2_leftovers,
    new_bake_id,
    output,
)
from localworld.localplay import bake_environment

TIMEOUT_S = 900

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.usefixtures("builder_image")]


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


def _leftovers(bake_id: str) -> dict[str, list[str]]:
    """What of this bake is still there: active instances, security groups, key pairs, containers, images."""
    ec2 = boto3.client("ec2")
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:BakeId", "Values": [bake_id]}])["Images"]
    return {
        **ec2_leftovers(ec2, bake_id),
        "containers": bake_containers(bake_id),
        "images": [i["ImageId"] for i in images],
    }


def test_two_bakes_in_parallel_one_fails(aws_env, tmp_path):
    good, bad = new_bake_id("many-good"), new_bake_id("many-bad")
    token = "hf_" + secrets.token_hex(17)
    logs = tmp_path / "logs"
    summary_path = tmp_path / "summary.json"
    bakes = {
        "bakes": [
            {"name": "good", "vars": bake_vars(good)},
            # Refused by the bake's first check, before anything is created.
            {"name": "bad", "vars": bake_vars(bad, bake_market="sometimes")},
        ],
        # Reaches every bake through its variables file, never a command line or the output.
        "bake_many_common": {"burst_test_hub_token": token},
        "bake_many_log_dir": str(logs),
        "bake_many_summary_path": str(summary_path),
        "bake_many_poll_interval": 2,
    }
    result = _run_bake_many(bakes, aws_env, tmp_path)
    text = output(result)
    assert result.returncode != 0, text[-6000:]

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
    assert "1 of 2 bake(s) failed: bad" in text
    assert by_name["bad"]["log"] in text

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
    assert token not in text
    for log in logs.iterdir():
        assert token not in log.read_text(), log
    assert list((tmp_path / "tmp").glob("bake_many.*")) == []


def _nothing_left() -> dict[str, list[str]]:
    return {"instances": [], "security_groups": [], "key_pairs": [], "containers": [], "images": []}


def test_duplicate_names_start_nothing(aws_env, tmp_path):
    bake_id = new_bake_id("twin")
    bakes = {
        "bakes": [{"name": "twin", "vars": bake_vars(bake_id)}, {"name": "twin", "vars": bake_vars(f"{bake_id}-2")}],
        "bake_many_log_dir": str(tmp_path / "logs"),
    }
    result = _run_bake_many(bakes, aws_env, tmp_path)
    text = output(result)
    assert result.returncode != 0
    assert "Bake names given twice: twin" in text
    assert not (tmp_path / "logs").exists(), "nothing was started"
    assert boto3.client("ec2").describe_instances()["Reservations"] == []
