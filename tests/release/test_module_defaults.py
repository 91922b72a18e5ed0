"""One module_defaults block for every AWS module a play calls: ``group/burst.golden_ami.aws``.

meta/runtime.yml's action group ``aws`` lists this collection's AWS modules
and extends amazon.aws's group, so that one block gives amazon.aws's modules
and this collection's the same region, endpoint and keys. A play with only
that block (and no AWS variable in its environment) runs
amazon.aws.ec2_ami_info, golden_ami_prune in check mode and burst_instance
``state: absent`` against the local world's moto; without the block, each
fails for lack of a region. ansible-core's own ``group/aws`` extends
amazon.aws's and community.aws's groups only: it does not reach this
collection's modules, which is why the block names this collection's group.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

import boto3
import pytest
import yaml
from release_tools import ansible_env, run

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GROUP = "group/burst.golden_ami.aws"


def test_the_group_extends_amazon_aws_and_lists_the_aws_modules() -> None:
    groups = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())["action_groups"]
    metadata, *modules = groups["aws"]
    assert metadata == {"metadata": {"extend_group": ["amazon.aws.aws"]}}
    aws_modules = {
        path.stem
        for path in (REPO / "plugins" / "modules").glob("*.py")
        if "amazon.aws.common.modules" in path.read_text()
    }
    assert aws_modules, "no module uses amazon.aws's common options"
    assert set(modules) == aws_modules, "every AWS module of the collection, and only those, is in the group"


@pytest.fixture
def family(aws_env) -> dict:
    """Three images of a family and a running instance of a job, in moto."""
    ec2 = boto3.client("ec2")
    base = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    builder = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    prefix = f"burst-golden-md{uuid.uuid4().hex[:6]}-v"
    images = [ec2.create_image(InstanceId=builder, Name=f"{prefix}{n}")["ImageId"] for n in (1, 2, 3)]
    ec2.terminate_instances(InstanceIds=[builder])
    job_id = f"md-{uuid.uuid4().hex[:8]}"
    tags = [{"Key": "Mode", "Value": "Burst"}, {"Key": "BurstJobId", "Value": job_id}]
    instance = ec2.run_instances(
        ImageId=base, MinCount=1, MaxCount=1, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}]
    )["Instances"][0]["InstanceId"]
    return {"prefix": prefix, "images": images, "job_id": job_id, "instance": instance, "env": aws_env}


def _play(family: dict, defaults: dict | None, results: Path) -> list[dict]:
    tasks = [
        {
            "name": "Find the family's images",
            "amazon.aws.ec2_ami_info": {"owners": ["self"], "filters": {"name": f"{family['prefix']}*"}},
            "register": "amis",
            "ignore_errors": True,
        },
        {
            "name": "Plan the family's prune",
            "burst.golden_ami.golden_ami_prune": {"image_family": {"name_prefix": family["prefix"]}, "keep_newest": 1},
            "check_mode": True,
            "register": "prune",
            "ignore_errors": True,
        },
        {
            "name": "Terminate the job's instances",
            "burst.golden_ami.burst_instance": {"state": "absent", "job_id": family["job_id"], "wait_timeout": 60},
            "register": "absent",
            "ignore_errors": True,
        },
        {
            "name": "Write the results",
            "ansible.builtin.copy": {
                "content": "{{ {'amis': amis, 'prune': prune, 'absent': absent} | to_json }}",
                "dest": str(results),
                "mode": "0600",
            },
        },
    ]
    play = {
        "name": "AWS modules of two collections",
        "hosts": "localhost",
        "connection": "local",
        "gather_facts": False,
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "tasks": tasks,
    }
    if defaults is not None:
        play["module_defaults"] = defaults
    return [play]


def _run(family: dict, defaults: dict | None, tmp_path: Path) -> dict:
    name = uuid.uuid4().hex[:6]
    playbook, results = tmp_path / f"play-{name}.yml", tmp_path / f"results-{name}.json"
    playbook.write_text(yaml.safe_dump(_play(family, defaults, results), sort_keys=False))
    # No AWS setting reaches the modules but the block: no AWS_* variable, no config or credentials file.
    env = {k: v for k, v in ansible_env().items() if not k.startswith("AWS_")}
    env.update({"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    result = run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook)], env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return json.loads(results.read_text())


def _moto(family: dict) -> dict:
    env = family["env"]
    return {
        "region": env["AWS_REGION"],
        "endpoint_url": env["AWS_ENDPOINT_URL"],
        "access_key": env["AWS_ACCESS_KEY_ID"],
        "secret_key": env["AWS_SECRET_ACCESS_KEY"],
    }


def test_one_block_reaches_moto_for_both_collections(family: dict, tmp_path: Path) -> None:
    results = _run(family, {GROUP: _moto(family)}, tmp_path)
    for name in ("amis", "prune", "absent"):
        assert not results[name].get("failed"), f"{name}: {results[name].get('msg')}"
    assert sorted(i["image_id"] for i in results["amis"]["images"]) == sorted(family["images"])
    # The plan keeps the newest and would delete the two others; check mode deleted nothing.
    assert results["prune"]["changed"] is True
    assert len(results["prune"]["deleted"]) == 2 and {d["image_id"] for d in results["prune"]["deleted"]} < set(
        family["images"]
    )
    ec2 = boto3.client("ec2")
    assert len(ec2.describe_images(ImageIds=family["images"])["Images"]) == 3
    assert results["absent"]["changed"] is True and results["absent"]["instance_ids"] == [family["instance"]]
    state = ec2.describe_instances(InstanceIds=[family["instance"]])["Reservations"][0]["Instances"][0]["State"]
    assert state["Name"] in ("shutting-down", "terminated")


def test_without_the_block_every_module_lacks_a_region(family: dict, tmp_path: Path) -> None:
    results = _run(family, None, tmp_path)
    for name in ("amis", "prune", "absent"):
        assert results[name].get("failed") is True, f"{name} ran without a region: {results[name]}"
        assert "region" in results[name]["msg"].lower(), results[name]["msg"]
    state = boto3.client("ec2").describe_instances(InstanceIds=[family["instance"]])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "running"


def test_ansible_cores_group_aws_does_not_reach_this_collection(family: dict, tmp_path: Path) -> None:
    results = _run(family, {"group/aws": _moto(family)}, tmp_path)
    assert not results["amis"].get("failed") and len(results["amis"]["images"]) == 3
    for name in ("prune", "absent"):
        assert results[name].get("failed") is True and "region" in results[name]["msg"].lower(), results[name]
