"""The AWX objects shipped in awx/ are consistent with the collection and with awx.awx.

No AWX runs here, so each file is checked against what AWX and awx.awx
would do with it: the job templates name playbooks that exist and surveys
whose variables those playbooks read, with AWX's survey types; every key is
an option of the awx.awx module that load.yml hands it to; the Hub token is
a secret injected as an environment variable only; the inventory source's
file makes ansible-inventory list a launched burst instance; the schedules'
rules parse and point at job templates; the prune playbook prunes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml
from dateutil.rrule import rrulestr
from release_tools import ansible_env, run

REPO = Path(__file__).resolve().parents[2]
AWX = REPO / "awx"
BIN = Path(sys.executable).parent
SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
# Keys of awx/*.yml that awx/load.yml reads itself instead of passing them on.
LOADER_KEYS = {"credential_kinds", "credential_kind", "hosts"}
CREDENTIAL_KINDS = {"aws", "hub", "machine"}


class _AwxLoader(yaml.SafeLoader):
    """Reads !unsafe (Ansible's tag for text that must not be templated) as plain text."""


_AwxLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def _load(name: str) -> dict:
    return yaml.load((AWX / name).read_text(), _AwxLoader)  # noqa: S506 - a SafeLoader with one more tag


@pytest.fixture(scope="module")
def awx_options() -> dict[str, set[str]]:
    modules = ["job_template", "credential_type", "inventory_source", "inventory", "schedule"]
    result = run(
        [str(BIN / "ansible-doc"), "-t", "module", "--json", *(f"awx.awx.{m}" for m in modules)],
        env=ansible_env(ANSIBLE_PYTHON_INTERPRETER=sys.executable),
    )
    assert result.returncode == 0, "awx.awx is not in the ansible bundle: " + result.stderr
    docs = json.loads(result.stdout)
    return {m: set(docs[f"awx.awx.{m}"]["doc"]["options"]) for m in modules}


JOB_TEMPLATES = _load("job_templates.yml")["awx_job_templates"]


def test_the_five_jobs_and_the_nightly_bake_are_there() -> None:
    playbooks = {t["playbook"] for t in JOB_TEMPLATES}
    assert playbooks == {
        "playbooks/bake.yml",
        "playbooks/launch.yml",
        "playbooks/teardown.yml",
        "playbooks/cleanup.yml",
        "awx/playbooks/prune.yml",
    }
    names = [t["name"] for t in JOB_TEMPLATES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("template", JOB_TEMPLATES, ids=lambda t: t["name"])
def test_job_template(template: dict, awx_options: dict[str, set[str]]) -> None:
    unknown = set(template) - awx_options["job_template"] - LOADER_KEYS
    assert not unknown, f"not options of awx.awx.job_template: {sorted(unknown)}"
    assert set(template["credential_kinds"]) <= CREDENTIAL_KINDS
    playbook = REPO / template["playbook"]
    assert playbook.is_file(), f"{template['playbook']} is not in the project"
    # What the playbook (and the vars files it loads) reads.
    readable = playbook.read_text() + "".join(p.read_text() for p in (REPO / "playbooks" / "vars").glob("*.yml"))
    readable += "".join(p.read_text() for p in (REPO / "roles").glob("*/defaults/main.yml"))
    for variable in template.get("extra_vars", {}):
        assert variable in readable, f"extra var {variable} is read by no playbook or role"
    if "survey_spec" not in template:
        assert template["name"].endswith("nightly rebake"), "every job a person launches has a survey"
        return
    spec = template["survey_spec"]
    assert spec["name"] and spec["description"] and spec["spec"]
    variables = [q["variable"] for q in spec["spec"]]
    assert len(variables) == len(set(variables)), "a survey asks twice for one variable"
    for question in spec["spec"]:
        name = question["variable"]
        assert question["type"] in SURVEY_TYPES, f"{name}: {question['type']} is no AWX survey type"
        assert question["question_name"]
        assert name in readable, f"survey variable {name} is read by no playbook"
        assert "token" not in name.lower() and question["type"] != "password", f"{name}: secrets come from credentials"
        default = question.get("default")
        if question["type"] == "multiplechoice":
            assert default in question["choices"], f"{name}: default {default!r} is no choice"
        if question["type"] == "multiselect":
            assert set(str(default).split("\n")) <= set(question["choices"]), f"{name}: default is no choice"
        if question["type"] in ("integer", "float") and default is not None:
            assert question["min"] <= default <= question["max"], f"{name}: default outside min..max"
        if question["type"] == "text" and default is not None:
            assert question["min"] <= len(default) <= question["max"], f"{name}: default length outside min..max"


def test_hub_token_is_an_environment_variable_only(awx_options: dict[str, set[str]]) -> None:
    (hub,) = _load("credential_types.yml")["awx_credential_types"]
    assert set(hub) - {"name"} <= awx_options["credential_type"]
    assert hub["kind"] == "cloud"
    (field,) = [f for f in hub["inputs"]["fields"] if f["id"] == "hf_token"]
    assert field["secret"] is True
    assert hub["inputs"]["required"] == ["hf_token"]
    # Only env: no extra_vars and no file injector.
    assert set(hub["injectors"]) == {"env"}
    assert hub["injectors"]["env"] == {"HF_TOKEN": "{{ hf_token }}"}
    # The token reaches the role through the environment, in the bake templates.
    for template in JOB_TEMPLATES:
        if "hub" in template["credential_kinds"]:
            from_env = "{{ lookup('ansible.builtin.env', 'HF_TOKEN') }}"
            assert template["extra_vars"]["model_cache_hf_token"] == from_env


def test_schedules_parse_and_point_at_templates(awx_options: dict[str, set[str]]) -> None:
    schedules = _load("schedules.yml")["awx_schedules"]
    by_name = {t["name"]: t for t in JOB_TEMPLATES}
    for schedule in schedules:
        assert set(schedule) <= awx_options["schedule"], set(schedule) - awx_options["schedule"]
        rule = rrulestr(schedule["rrule"].replace(" RRULE:", "\nRRULE:"))
        first, second = rule[0], rule[1]
        assert first.tzinfo is not None and first.utcoffset().total_seconds() == 0, "schedules run in UTC"
        template = by_name[schedule["unified_job_template"]]
        survey = {q["variable"] for q in template.get("survey_spec", {}).get("spec", [])}
        assert set(schedule.get("extra_data", {})) <= survey, "a schedule's extra data must be survey answers"
        if "nightly" in schedule["unified_job_template"]:
            assert (second - first).total_seconds() == 86400 and first.hour == 6
            nightly = template["extra_vars"]
            assert nightly["bake_ssm_parameter"] and nightly["bake_deprecate_after_days"] == 7
            assert "now(" in nightly["bake_version"], "each night bakes a new version"


def test_inventory_source_lists_a_launched_burst_instance(
    awx_options: dict[str, set[str]], aws_env, tmp_path: Path
) -> None:
    inventories = _load("inventory_sources.yml")
    for source in inventories["awx_inventory_sources"]:
        assert set(source) - awx_options["inventory_source"] <= LOADER_KEYS
        assert source["source"] == "scm"
        assert source["inventory"] in {i["name"] for i in inventories["awx_inventories"]}
    (source,) = inventories["awx_inventory_sources"]
    config = yaml.safe_load((REPO / source["source_path"]).read_text())
    assert config["plugin"] == "burst.golden_ami.burst_ec2"

    ec2 = boto3.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags = [{"Key": "Mode", "Value": "Burst"}, {"Key": "BurstJobId", "Value": "job42"}]
    ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        InstanceType="g6e.xlarge",
        InstanceMarketOptions={"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}},
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    # The shipped file, in the test's region, without the healthcheck: moto's addresses must not be contacted.
    config.update(regions=[aws_env["AWS_REGION"]], health={"enabled": False})
    inventory = tmp_path / "burst.burst_ec2.yml"
    inventory.write_text(yaml.safe_dump(config))
    env = ansible_env(ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    env.update(aws_env)
    result = run(
        [str(BIN / "ansible-inventory"), "-i", str(inventory), "--list"],
        env=env,
    )
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert len(listed["job_job42"]["hosts"]) == 1, result.stdout


def test_prune_playbook_prunes(aws_env, tmp_path: Path) -> None:
    ec2 = boto3.client("ec2")
    base = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    images = [ec2.create_image(InstanceId=instance, Name=f"burst-golden-vprune{n}")["ImageId"] for n in (1, 2, 3)]
    ec2.terminate_instances(InstanceIds=[instance])
    env = ansible_env(ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    env.update(aws_env)
    command = [
        str(BIN / "ansible-playbook"),
        "-i",
        "localhost,",
        str(AWX / "playbooks" / "prune.yml"),
        "-e",
        "prune_name_prefix=burst-golden-vprune",
        "-e",
        "prune_keep_newest=2",
    ]
    check = subprocess.run([*command, "--check"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert len(ec2.describe_images(ImageIds=images)["Images"]) == 3, "check mode deleted an image"
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    left = {
        i["ImageId"]
        for i in ec2.describe_images(Owners=["self"])["Images"]
        if i["Name"].startswith("burst-golden-vprune")
    }
    assert len(left) == 2 and left < set(images), left
