"""The job templates as AWX runs them: in the execution environment image, through ansible-runner.

AWX runs a job by handing ansible-runner a private data directory (the
project, an inventory, the extra vars, the credentials' environment) and an
execution environment: ansible-runner starts the EE's container with the
directory mounted at /runner and runs the template's playbook inside. These
tests do the same with ``process_isolation_executable="docker"`` and the
image ``make ee`` builds (hack/build-ee.sh, called here too: it returns at
once when the image is current), against the local world's moto:

- the project is this repository's awx/ and playbooks/, and each job runs the
  playbook its template in awx/job_templates.yml names;
- the extra vars are the template's own, the survey's defaults and answers,
  and the local world's settings given at launch, written as AWX writes them
  (everything but the template's own values marked ``!unsafe``);
- the environment holds what the template's credentials inject (the AWS
  keys of a user that holds docs/iam's policy, with moto enforcing IAM; the
  Hub token through awx/credential_types.yml's injector) and the local
  world's endpoint.

Each job must succeed with no failed event and leave its real result in
moto; the collection that ran is the one installed in the image (the
checkout is not in the container).
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from iam_world import BASE_IMAGE_NAME_PREFIX, REPO, IamWorld, for_moto, load_policy
from release_tools import run

from localworld.bakes import ec2_leftovers
from localworld.moto import MotoServer

try:
    import ansible_runner
except ImportError as error:  # pragma: no cover - a missing requirement is a failure, not a skip
    raise ImportError("ansible-runner is not installed: requirements/dev.in must list it") from error

pytestmark = [pytest.mark.docker, pytest.mark.slow]

EE_COLLECTIONS = "/usr/share/ansible/collections/ansible_collections"
JOB_TIMEOUT_S = 420
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


class _AwxLoader(yaml.SafeLoader):
    """awx/*.yml mark AWX's own templates ``!unsafe``: AWX receives them as plain strings."""


_AwxLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


class _UnsafeDumper(yaml.SafeDumper):
    """AWX's ``safe_dump``: every string that is not the template's own extra var is written ``!unsafe``."""


_UnsafeDumper.add_representer(str, lambda dumper, data: dumper.represent_scalar("!unsafe", data))


def _load(path: str) -> dict:
    return yaml.load((REPO / path).read_text(), Loader=_AwxLoader)  # noqa: S506 - a SafeLoader


def _template(name: str) -> dict:
    templates = _load("awx/job_templates.yml")["awx_job_templates"]
    return next(t for t in templates if t["name"] == name)


@pytest.fixture(scope="module")
def ee_image() -> str:
    """The image of this checkout: hack/build-ee.sh builds it unless an image of the same recipe exists."""
    result = run([str(REPO / "hack" / "build-ee.sh")], cwd=REPO, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    version = yaml.safe_load((REPO / "galaxy.yml").read_text())["version"]
    return f"burst-golden-ami-ee:{version}"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[IamWorld]:
    """This module's moto, enforcing IAM, with an administrator and the users of docs/iam's policies."""
    server = MotoServer()
    server.start()
    try:
        world = IamWorld(server, tmp_path_factory.mktemp("moto") / "requests.jsonl")
        world.create_user("admin", ADMIN_POLICY)
        world.create_user("baker", for_moto(load_policy("bake")))
        world.create_user("launcher", for_moto(load_policy("launch")))
        world.enforce()
        yield world
    finally:
        server.stop()


def _base_image_id(world: IamWorld) -> str:
    images = world.client("ec2").describe_images(
        Owners=["amazon"], Filters=[{"Name": "name", "Values": [f"{BASE_IMAGE_NAME_PREFIX}*"]}]
    )["Images"]
    assert images, "moto has no Deep Learning AMI to stand in for the base image"
    return images[0]["ImageId"]


def _image(world: IamWorld, name: str) -> str:
    """An image of this account, captured from an instance of the base image (as a bake leaves one)."""
    ec2 = world.client("ec2")
    instance = ec2.run_instances(ImageId=_base_image_id(world), MinCount=1, MaxCount=1, InstanceType="t3.micro")
    instance_id = instance["Instances"][0]["InstanceId"]
    image_id = ec2.create_image(InstanceId=instance_id, Name=name)["ImageId"]
    ec2.terminate_instances(InstanceIds=[instance_id])
    return image_id


def _parameter(world: IamWorld, name: str, image_id: str) -> str:
    world.client("ssm").put_parameter(Name=name, Value=image_id, Type="String", DataType="aws:ec2:image")
    return name


def _credential_env(world: IamWorld, kinds: list[str], user: str, hub_token: str) -> dict[str, str]:
    """What the template's credentials inject, and the local world's endpoint."""
    env = {k: v for k, v in world.server.env().items() if not k.startswith(("AWS_ACCESS", "AWS_SECRET", "AWS_SESSION"))}
    if "aws" in kinds:
        # AWX's "Amazon Web Services" credential type.
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = world.keys[user]
    if "hub" in kinds:
        hub = next(t for t in _load("awx/credential_types.yml")["awx_credential_types"] if "Hub" in t["name"])
        for name, value in hub["injectors"]["env"].items():
            env[name] = value.replace("{{ hf_token }}", hub_token)
    return env


def _extra_vars(template: dict, answers: dict, launch: dict) -> str:
    """The template's extra vars, the survey's answers (defaults where none is given) and the launch's, as AWX
    writes env/extravars: the template's own values as they are, every other string ``!unsafe``."""
    survey = {}
    for question in template.get("survey_spec", {}).get("spec", []):
        variable = question["variable"]
        if variable in answers:
            survey[variable] = answers[variable]
        elif question.get("default") not in (None, ""):
            default = question["default"]
            survey[variable] = default.split("\n") if question["type"] == "multiselect" else default
        else:
            assert not question["required"], f"answer {variable}: the survey requires it"
    own = template.get("extra_vars", {})
    merged = {**own, **survey, **launch}
    text = ""
    for name, value in merged.items():
        trusted = name in own and own[name] == value
        text += yaml.dump({name: value}, Dumper=yaml.SafeDumper if trusted else _UnsafeDumper, default_flow_style=False)
    return text


def _run_job(
    world: IamWorld,
    ee_image: str,
    root: Path,
    template_name: str,
    *,
    user: str,
    answers: dict,
    launch: dict | None = None,
    volumes: list[str] | None = None,
    verbosity: int = 0,
):
    """Run a job template's playbook in the EE as AWX would; return the runner, its events and its stdout."""
    template = _template(template_name)
    ident = template_name.rsplit(": ", 1)[-1]
    pdd = root / "pdd"
    project = pdd / "project"
    for directory in ("awx", "playbooks"):
        shutil.copytree(REPO / directory, project / directory, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (pdd / "inventory").mkdir(parents=True)
    (pdd / "inventory" / "hosts").write_text("localhost ansible_connection=local\n")
    (pdd / "env").mkdir()
    (pdd / "env" / "extravars").write_text(_extra_vars(template, answers, launch or {}))
    hub_token = "hf_" + secrets.token_hex(16)
    envvars = _credential_env(world, template.get("credential_kinds", []), user, hub_token)
    (pdd / "env" / "envvars").write_text(yaml.safe_dump(envvars))
    (pdd / "env" / "settings").write_text(
        yaml.safe_dump({"job_timeout": min(template["timeout"], JOB_TIMEOUT_S), "suppress_ansible_output": True})
    )
    started = time.monotonic()
    runner = ansible_runner.run(
        private_data_dir=str(pdd),
        playbook=template["playbook"],
        ident=ident,
        process_isolation=True,
        process_isolation_executable="docker",
        container_image=ee_image,
        # dockerd runs without a bridge: the job shares the host's network, where moto listens on loopback.
        container_options=["--network=host"],
        container_volume_mounts=volumes or [],
        verbosity=verbosity,
        quiet=True,
    )
    elapsed = time.monotonic() - started
    events = list(runner.events)
    stdout = runner.stdout.read()
    failed = [
        e
        for e in events
        if e["event"] in ("runner_on_failed", "runner_on_unreachable") and not e["event_data"].get("ignore_errors")
    ]
    assert runner.status == "successful" and runner.rc == 0, (
        f"{template_name}: {runner.status} rc={runner.rc} after {elapsed:.0f}s:\n{stdout[-6000:]}"
    )
    assert not failed, [e["event_data"].get("task") for e in failed]
    stats = [e for e in events if e["event"] == "playbook_on_stats"]
    assert len(stats) == 1 and stats[0]["event_data"]["failures"] == {}
    # The job ran the EE's collection: the checkout is not in the container, and whatever the project's playbook
    # is (the collection's playbook itself, or one importing it), every task comes from the project or from the
    # collections installed in the image.
    command = (pdd / "artifacts" / ident / "command").read_text()
    assert str(REPO) not in command
    assert ee_image in command and "docker" in command
    task_paths = {e["event_data"].get("task_path", "") for e in events if e["event"] == "playbook_on_task_start"}
    assert task_paths and all(p.startswith(("/runner/project/", f"{EE_COLLECTIONS}/")) for p in task_paths), task_paths
    if "import_playbook: burst.golden_ami." in (project / template["playbook"]).read_text():
        assert all(p.startswith(f"{EE_COLLECTIONS}/burst/golden_ami/") for p in task_paths), task_paths
    assert hub_token not in stdout
    return runner, events, stdout, pdd


def test_bake_job(world: IamWorld, ee_image: str, tmp_path: Path) -> None:
    """The bake template: a docker builder (the Docker socket and CLI mounted into the EE), no configure role."""
    base = _parameter(world, "/burst/ee/base-image", _base_image_id(world))
    bake_id = f"bake-ee-{uuid.uuid4().hex[:8]}"
    docker_cli = shutil.which("docker")
    assert docker_cli, "the docker CLI is not on PATH"
    runner, events, _stdout, pdd = _run_job(
        world,
        ee_image,
        tmp_path,
        "Burst golden image: bake",
        user="baker",
        answers={
            "bake_region": world.region,
            "bake_version": "1",
            "bake_base_image_ssm_parameter": base,
            "bake_instance_types": ["g6e.xlarge", "g5.2xlarge"],
            "bake_ssm_parameter": "/burst/ee/golden",
        },
        launch={
            "bake_id": bake_id,
            # The local world: the builder is a systemd container, no configure role.
            "bake_builder_connection": "docker",
            "bake_configure_roles": [],
            "bake_capture_poll_interval": 1,
        },
        volumes=[
            "/var/run/docker.sock:/var/run/docker.sock:ro",
            f"{os.path.realpath(docker_cli)}:/usr/local/bin/docker:ro",
        ],
    )
    capture = [
        e["event_data"]["res"]
        for e in events
        if e["event"] == "runner_on_ok" and e["event_data"].get("task") == "Capture the candidate image and copy it"
    ]
    assert len(capture) == 1 and capture[0]["changed"] is True
    image_id = capture[0]["image_id"]
    ec2 = world.client("ec2")
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert image["Name"] == "burst-golden-v1" and image["State"] == "available"
    assert {"Key": "BakeId", "Value": bake_id} in image["Tags"]
    assert world.client("ssm").get_parameter(Name="/burst/ee/golden")["Parameter"]["Value"] == image_id
    # The default manifest path is the job's working directory: the project, in the private data directory.
    manifest = yaml.safe_load((pdd / "project" / "manifest-burst-golden-v1.json").read_text())
    assert manifest["image_id"] == image_id and manifest["build_id"] == bake_id
    # The cleanup left no builder, no temporary security group or key pair.
    assert ec2_leftovers(ec2, bake_id) == {"instances": [], "security_groups": [], "key_pairs": []}
    assert runner.stats["ok"]["localhost"] > 0


def test_launch_and_teardown_jobs(world: IamWorld, ee_image: str, tmp_path: Path) -> None:
    golden = _image(world, "burst-golden-ee-launch")
    parameter = _parameter(world, "/burst/ee/launch", golden)
    job_id = f"ee-{uuid.uuid4().hex[:8]}"
    ec2 = world.client("ec2")
    job_filter = {"Name": "tag:BurstJobId", "Values": [job_id]}

    _run_job(
        world,
        ee_image,
        tmp_path / "launch",
        "Burst instances: launch",
        user="launcher",
        answers={
            "burst_job_id": job_id,
            "burst_region": world.region,
            "burst_count": 2,
            "burst_image_ssm_parameter": parameter,
            "burst_instance_types": ["g6e.xlarge", "g5.2xlarge"],
        },
    )
    instances = [i for r in ec2.describe_instances(Filters=[job_filter])["Reservations"] for i in r["Instances"]]
    assert len(instances) == 2
    assert {i["State"]["Name"] for i in instances} == {"running"}
    assert {i["ImageId"] for i in instances} == {golden}

    _run_job(
        world,
        ee_image,
        tmp_path / "teardown",
        "Burst instances: teardown",
        user="launcher",
        answers={"burst_job_id": job_id, "burst_region": world.region},
    )
    instances = [i for r in ec2.describe_instances(Filters=[job_filter])["Reservations"] for i in r["Instances"]]
    assert len(instances) == 2
    assert {i["State"]["Name"] for i in instances} == {"terminated"}


def test_prune_job(world: IamWorld, ee_image: str, tmp_path: Path) -> None:
    """Keep the newest image and the one the SSM parameter names; the module's path shows it is the EE's."""
    protected = _image(world, "burst-golden-ee-prune-v1")
    time.sleep(1.1)  # creation times have a resolution of one second
    older = _image(world, "burst-golden-ee-prune-v2")
    time.sleep(1.1)
    newest = _image(world, "burst-golden-ee-prune-v3")
    parameter = _parameter(world, "/burst/ee/prune", protected)

    _runner, _events, stdout, _pdd = _run_job(
        world,
        ee_image,
        tmp_path,
        "Burst golden image: prune",
        user="baker",
        answers={
            "prune_region": world.region,
            "prune_name_prefix": "burst-golden-ee-prune-v",
            "prune_keep_newest": 1,
            "prune_protect_ssm_parameter": parameter,
        },
        # AWX's "3 (Debug)" verbosity: the job's output names the module file it ran.
        verbosity=3,
    )
    assert f"Using module file {EE_COLLECTIONS}/burst/golden_ami/plugins/modules/golden_ami_prune.py" in stdout
    ec2 = world.client("ec2")
    left = {i["ImageId"] for i in ec2.describe_images(ImageIds=[protected, older, newest])["Images"]}
    assert left == {protected, newest}


def test_cleanup_job_sweeps_an_interrupted_bake(world: IamWorld, ee_image: str, tmp_path: Path) -> None:
    """What an interrupted bake left (its builder, security group and key pair) is swept by its bake id."""
    bake_id = f"bake-ee-{uuid.uuid4().hex[:8]}"
    tags = [{"Key": "BakeId", "Value": bake_id}, {"Key": "BakeStarted", "Value": "2026-01-01T00:00:00Z"}]
    ec2 = world.client("ec2")
    vpc_id = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    group_id = ec2.create_security_group(
        GroupName=f"burst-bake-{bake_id}",
        Description="left by an interrupted bake",
        VpcId=vpc_id,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
    )["GroupId"]
    ec2.create_key_pair(KeyName=f"burst-bake-{bake_id}", TagSpecifications=[{"ResourceType": "key-pair", "Tags": tags}])
    instance_id = ec2.run_instances(
        ImageId=_base_image_id(world),
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.micro",
        SecurityGroupIds=[group_id],
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]["InstanceId"]

    _run_job(
        world,
        ee_image,
        tmp_path,
        "Burst golden image: cleanup",
        user="baker",
        answers={"bake_region": world.region, "bake_id": bake_id},
    )
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert instance["State"]["Name"] == "terminated"
    bake_filter = [{"Name": "tag:BakeId", "Values": [bake_id]}]
    assert ec2.describe_security_groups(Filters=bake_filter)["SecurityGroups"] == []
    assert ec2.describe_key_pairs(Filters=bake_filter)["KeyPairs"] == []
