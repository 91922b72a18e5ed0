"""The bake's extension points against the local world: extra roles, hooks, bake_on_failure and the fingerprint.

As in test_bake.py, each bake runs the real playbook with ``ansible-playbook``:
the builder is launched in moto (on 127.0.0.1) and reached through a local
systemd container (``bake_builder_connection: docker``), with the configure
roles left out. The user's role and hooks are fixtures under
``files/extend/``: the role writes its variable on the builder (or fails on
request), the builder hooks record what they see, and the controller hooks
write it, with the image ids, to a directory on the controller.

- one bake with an extra role (with a variable) and a hook at every stage,
  checked on the controller, in the manifest and on the image; then a second
  bake of the same inputs, which launches nothing and says why;
- a bake whose extra role fails, with ``bake_on_failure: keep``: the builder,
  its container, security group, key pair and private key stay, the
  candidate does not, the bake prints how to connect and how to clean up, and
  the printed cleanup leaves nothing;
- a bake given a role and a hook that do not exist fails before anything is
  created;
- the fingerprint and the checks of the inputs, case by case, without a
  builder (``files/extend/fingerprint_cases.yml``): pinned and unpinned inputs,
  secrets left out, ``bake_force``, shapes refused.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shlex
import subprocess
from pathlib import Path

import boto3
import pytest

from localworld.bakes import ANSIBLE_PLAYBOOK, bake_containers, bake_vars, ec2_leftovers, new_bake_id, playbook_command
from localworld.localplay import bake_environment

REPO = Path(__file__).resolve().parents[2]
FILES = Path(__file__).resolve().parent / "files" / "extend"
ROLE = FILES / "roles" / "extend_marker"
BUILDER_HOOK = FILES / "hooks" / "builder.yml"
CONTROLLER_HOOK = FILES / "hooks" / "controller.yml"
TIMEOUT_S = 300
BUILDER_STAGES = ["before_configure", "after_configure", "before_capture"]
CONTROLLER_STAGES = ["after_capture", "after_verify", "after_promote"]

pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.usefixtures("builder_image")]


def _bake_id(name: str) -> str:
    return new_bake_id(name)


def _bake_vars(tmp_path: Path, bake_id: str, **overrides) -> dict:
    local = {
        "bake_manifest_path": str(tmp_path / "manifest.json"),
        "bake_key_parent": str(_keys(tmp_path)),
        "bake_progress_interval": 1,
    }
    return bake_vars(bake_id, **{**local, **overrides})


def _keys(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    return keys


def _run(playbook: str, variables: dict, aws_env: dict, tmp_path: Path) -> tuple[int, str]:
    return _run_argv(playbook_command(playbook, variables, tmp_path), aws_env, tmp_path)


def _run_argv(argv: list[str], aws_env: dict, tmp_path: Path) -> tuple[int, str]:
    result = subprocess.run(
        argv,
        env=bake_environment(aws_env, tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    output = f"{result.stdout}\n{result.stderr}"
    (tmp_path / f"run-{secrets.token_hex(3)}.log").write_text(output)  # kept for a person reading a failure
    # Messages are folded over several lines: compare them with their spaces collapsed.
    return result.returncode, " ".join(output.split())


def _instances(bake_id: str, states=("pending", "running", "stopping", "stopped")) -> list[dict]:
    reservations = boto3.client("ec2").describe_instances(
        Filters=[{"Name": "tag:BakeId", "Values": [bake_id]}, {"Name": "instance-state-name", "Values": list(states)}]
    )["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def _leftovers(bake_id: str, tmp_path: Path) -> dict[str, list[str]]:
    """What of this bake is still there: instances, groups, key pairs, containers, images, snapshots, key files."""
    ec2 = boto3.client("ec2")
    by_tag = [{"Name": "tag:BakeId", "Values": [bake_id]}]
    left = {
        **ec2_leftovers(ec2, bake_id),
        "containers": bake_containers(bake_id),
        "images": [i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=by_tag)["Images"]],
        "snapshots": [s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=by_tag)["Snapshots"]],
        "key_files": sorted(str(p) for p in _keys(tmp_path).glob(f"burst-bake.{bake_id}.*")),
    }
    return {kind: found for kind, found in left.items() if found}


def _remove_containers(bake_id: str) -> None:
    for container in bake_containers(bake_id):
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False, timeout=120)


def test_extra_role_and_hooks_run_and_are_recorded_then_the_same_inputs_bake_nothing(aws_env, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    bake_id = _bake_id("extend")
    hooks = {stage: [str(BUILDER_HOOK)] for stage in BUILDER_STAGES}
    hooks.update({stage: [str(CONTROLLER_HOOK)] for stage in CONTROLLER_STAGES})
    common = {
        "bake_extra_roles": [{"name": str(ROLE), "vars": {"extend_marker_value": "from-the-test"}}],
        "bake_hooks": hooks,
        "extend_marker_dir": str(markers),
    }
    code, output = _run("bake.yml", _bake_vars(tmp_path, bake_id, **common), aws_env, tmp_path)
    assert code == 0, output[-6000:]

    ec2 = boto3.client("ec2")
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:BakeId", "Values": [bake_id]}])["Images"]
    assert len(images) == 1
    image = images[0]
    parameter = f"/burst/test/{bake_id}"
    assert boto3.client("ssm").get_parameter(Name=parameter)["Parameter"]["Value"] == image["ImageId"]
    builder = _instances(bake_id, states=("terminated",))[0]["InstanceId"]

    # The controller's hooks ran on localhost, in order, with the image ids.
    written = {stage: json.loads((markers / f"{stage}.json").read_text()) for stage in CONTROLLER_STAGES}
    for stage, marker in written.items():
        assert marker["stage"] == stage and marker["host"] == "localhost"
        assert marker["image_id"] == image["ImageId"]
        assert marker["images"] == {"eu-central-1": image["ImageId"]}
    # The builder's hooks ran on the builder, around the configure roles; the role's variable stayed the role's.
    seen = written["after_capture"]["builder"]
    assert [s["stage"] for s in seen] == BUILDER_STAGES
    assert {s["host"] for s in seen} == {builder} and {s["builder"] for s in seen} == {builder}
    assert {s["bake_id"] for s in seen} == {bake_id}
    assert not any(s["role_variable_visible"] for s in seen), "the extra role's vars are its own"
    assert written["after_capture"]["marker"] == "from-the-test\n", "the extra role ran with its variable"

    # Both manifests record the extra role, the hooks and the fingerprint; the image carries the fingerprint.
    in_image = written["after_capture"]["manifest"]
    on_controller = json.loads((tmp_path / "manifest.json").read_text())["contents"]
    for contents in (in_image, on_controller):
        assert [(r["name"], r["vars"]) for r in contents["extra_roles"]] == [(str(ROLE), ["extend_marker_value"])]
        assert re.fullmatch(r"[0-9a-f]{64}", contents["extra_roles"][0]["sha256"])
        assert sorted(contents["hooks"]) == sorted(BUILDER_STAGES + CONTROLLER_STAGES)
        assert contents["hooks"]["before_configure"][0]["name"] == str(BUILDER_HOOK)
        assert contents["hooks"]["before_configure"][0]["runs_on"] == "builder"
        assert contents["hooks"]["after_promote"][0]["runs_on"] == "controller"
        assert contents["fingerprint"]["unpinned"] == []
    fingerprint = on_controller["fingerprint"]["sha256"]
    assert re.fullmatch(r"[0-9a-f]{64}", fingerprint)
    assert in_image["fingerprint"]["sha256"] == fingerprint
    assert {t["Key"]: t["Value"] for t in image["Tags"]}["BakeFingerprint"] == fingerprint
    left = _leftovers(bake_id, tmp_path)
    assert left.pop("images") == [image["ImageId"]], "a successful bake keeps its promoted image"
    assert left.pop("snapshots") == [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "Ebs" in m]
    assert left == {}

    # The same inputs again, under a new bake id and image name: nothing is launched, and the bake says why.
    for marker in markers.iterdir():
        marker.unlink()
    second = _bake_id("same")
    variables = _bake_vars(tmp_path, second, bake_ssm_parameter=parameter, **common)
    code, output = _run("bake.yml", variables, aws_env, tmp_path)
    assert code == 0, output[-6000:]
    assert f"Nothing changed: {parameter} names {image['ImageId']}" in output, output[-4000:]
    assert f"baked with the same fingerprint {fingerprint}" in output
    assert _instances(second, states=("pending", "running", "stopping", "stopped", "terminated")) == []
    assert boto3.client("ssm").get_parameter(Name=parameter)["Parameter"]["Value"] == image["ImageId"]
    assert [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]] == [image["ImageId"]]
    assert list(markers.iterdir()) == [], "no hook runs when nothing is baked"
    assert _leftovers(second, tmp_path) == {}


def test_failed_extra_role_with_keep_leaves_the_builder_then_cleanup_removes_it(aws_env, tmp_path):
    bake_id = _bake_id("keep")
    variables = _bake_vars(
        tmp_path,
        bake_id,
        bake_extra_roles=[{"name": str(ROLE), "vars": {"extend_marker_fail": True}}],
        bake_on_failure="keep",
    )
    try:
        code, output = _run("bake.yml", variables, aws_env, tmp_path)
        assert code != 0, output[-4000:]
        assert f"Bake {bake_id} failed at step 'Fail when asked to' (role {ROLE})" in output, output[-4000:]
        assert "extend_marker was asked to fail" in output
        assert "Kept for debugging (bake_on_failure: keep)" in output, output[-4000:]

        builders = _instances(bake_id)
        assert [b["State"]["Name"] for b in builders] == ["running"], "the builder is kept"
        builder = builders[0]["InstanceId"]
        user_data = boto3.client("ec2").describe_instance_attribute(InstanceId=builder, Attribute="userData")
        assert "--on-active=180min" in base64.b64decode(user_data["UserData"]["Value"]).decode(), "it still expires"
        assert f"docker exec -it {builder} bash" in output, "the bake says how to connect"
        left = _leftovers(bake_id, tmp_path)
        assert set(left) == {"instances", "security_groups", "key_pairs", "containers", "key_files"}, left
        assert left["key_pairs"] == [bake_id]
        key_dir = Path(left["key_files"][0])
        assert (key_dir / "id_ed25519").is_file(), "the private key is kept"
        assert f"private key {key_dir}/id_ed25519" in output
        assert not (tmp_path / "manifest.json").exists()

        # The printed cleanup command removes everything, the key file included.
        command = re.search(r"\[ERROR\]: .*?Remove what is kept with: (.*?) Origin: ", output).group(1)
        argv = shlex.split(command)
        assert argv[:2] == ["ansible-playbook", "burst.golden_ami.cleanup"], command
        assert "bake_cleanup_containers=true" in argv and f"bake_key_parent={_keys(tmp_path)}" in argv, command
        code, cleanup_output = _run_argv([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", *argv[1:]], aws_env, tmp_path)
        assert code == 0, cleanup_output[-4000:]
        assert _leftovers(bake_id, tmp_path) == {}
    finally:
        _remove_containers(bake_id)


def test_missing_role_and_hook_fail_before_anything_is_created(aws_env, tmp_path):
    bake_id = _bake_id("missing")
    variables = _bake_vars(
        tmp_path,
        bake_id,
        bake_extra_roles=[{"name": str(ROLE)}, {"name": "/nonexistent/roles/nothing"}, "no_such.collection.role"],
        bake_hooks={"after_capture": [str(CONTROLLER_HOOK), "/nonexistent/hook.yml"]},
    )
    code, output = _run("bake.yml", variables, aws_env, tmp_path)
    assert code != 0
    step = "Refuse extra roles and hooks that cannot be found"
    assert f"Bake {bake_id} failed at step '{step}'" in output, output[-4000:]
    assert "role /nonexistent/roles/nothing was not found" in output
    assert "role no_such.collection.role was not found" in output
    assert "hook after_capture: /nonexistent/hook.yml does not exist" in output
    ec2 = boto3.client("ec2")
    assert ec2.describe_instances()["Reservations"] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    assert [g["GroupName"] for g in ec2.describe_security_groups()["SecurityGroups"]] == ["default"]
    assert _leftovers(bake_id, tmp_path) == {}
    assert list(_keys(tmp_path).iterdir()) == []


def test_fingerprint_and_input_checks_case_by_case(aws_env, tmp_path):
    ec2 = boto3.client("ec2")
    base = ec2.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": ["Deep Learning AMI Ubuntu*"]}])
    instance = ec2.run_instances(ImageId=base["Images"][0]["ImageId"], MinCount=1, MaxCount=1)["Instances"][0]
    image_id = ec2.create_image(InstanceId=instance["InstanceId"], Name="fingerprinted")["ImageId"]
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    parameter = f"/burst/test/fp-{secrets.token_hex(3)}"
    boto3.client("ssm").put_parameter(Name=parameter, Value=image_id, Type="String", DataType="aws:ec2:image")

    unpinned = {
        "images": [{"name": "tei", "reference": "registry.local/tei:latest"}],
        "models": [{"repo_id": "org/other", "revision": "main"}],
    }
    cases = [
        {"name": "first", "parameter": ""},
        {"name": "same"},
        {"name": "secret", "token": "hf_second"},
        {"name": "force", "force": True},
        # About a second: the image that production uses is older than that, so it is rebaked for its OS updates.
        {"name": "aged", "rebake_after_days": 0.00001},
        {"name": "role_variable", "value": "two"},
        {"name": "size", "size": 100},
        {"name": "string_role", "extra_roles": [str(ROLE)]},
        {"name": "unpinned", **unpinned},
        {"name": "unpinned_not_run", "configure_roles": [], **unpinned},
        {
            "name": "missing",
            "extra_roles": [{"name": "/nonexistent/role"}, {"name": "no_such.collection.role"}, {"name": "no_such"}],
            "hooks": {"after_capture": ["/nonexistent/hook.yml"]},
        },
        {"name": "shape", "extra_roles": [{"name": str(ROLE), "vrs": {}}, 3]},
        {"name": "stage", "hooks": {"after_lunch": []}},
        {"name": "hook_shape", "hooks": {"after_capture": "one.yml"}},
        {"name": "rebake_shape", "rebake_after_days": "weekly"},
    ]
    results_file = tmp_path / "results.json"
    variables = {
        "extend_repo": str(REPO),
        "extend_results_file": str(results_file),
        "extend_image_id": image_id,
        "extend_parameter": parameter,
        "extend_cases": cases,
        "bake_base_image_family": {"name_prefix": "Deep Learning AMI Ubuntu", "owners": ["amazon"]},
    }
    code, output = _run(str(FILES / "fingerprint_cases.yml"), variables, aws_env, tmp_path)
    assert code == 0, output[-6000:]
    results = json.loads(results_file.read_text())
    first = results["first"]
    assert re.fullmatch(r"[0-9a-f]{64}", first["sha256"]), first
    assert "no image to compare with" in first["reason"]
    # A configure role's variable given to the bake is read on the controller; one that needs the builder's facts
    # reads undefined instead of failing the bake.
    assert first["values"]["image_cache_min_free_mb"] == "2048", first["values"]
    assert first["values"]["image_cache_retry_delay"] == "(undefined on the controller)", first["values"]
    assert first["manifest"]["extra_roles"][0]["vars"] == ["extend_marker_value"]
    assert first["manifest"]["hooks"]["after_capture"][0]["runs_on"] == "controller"

    assert results["same"]["sha256"] == first["sha256"]
    assert results["same"]["unchanged"]["image_id"] == image_id
    assert results["same"]["reason"].startswith(f"Nothing changed: {parameter} names {image_id}")
    assert results["secret"]["unchanged"]["image_id"] == image_id, "a token is not part of the fingerprint"
    assert results["force"]["unchanged"] == {} and "bake_force" in results["force"]["reason"]
    assert results["force"]["sha256"] == first["sha256"]
    assert results["aged"].get("unchanged") == {}, results["aged"]
    assert f"is that of {image_id}" in results["aged"]["reason"], results["aged"]["reason"]
    assert "bake_rebake_after_days" in results["aged"]["reason"]

    for name, part in (("role_variable", "extra_roles"), ("size", "variables"), ("string_role", "extra_roles")):
        changed = results[name]
        assert changed["sha256"] != first["sha256"] and changed["unchanged"] == {}, (name, changed)
        assert f"differs from that of {image_id}" in changed["reason"], (name, changed["reason"])
        assert [k for k in first["parts"] if first["parts"][k] != changed["parts"][k]] == [part], name

    assert results["unpinned"]["sha256"] == "" and results["unpinned"]["unchanged"] == {}
    assert results["unpinned"]["unpinned"] == [
        "container image tei has no digest",
        "model org/other at revision main is not pinned to a full commit sha",
    ]
    unknown = "The fingerprint is unknown, so the bake goes ahead: container image tei"
    assert results["unpinned"]["reason"].startswith(unknown)
    assert results["unpinned_not_run"]["sha256"], "the inputs of roles that do not run do not count"

    missing = results["missing"]["error"]
    for name in ("/nonexistent/role", "no_such.collection.role", "no_such"):
        assert f"role {name} was not found (looked in " in missing, missing
    assert "hook after_capture: /nonexistent/hook.yml does not exist" in missing
    shape = results["shape"]["error"]
    assert "bake_extra_roles[0] has keys other than name and vars: vrs" in shape, shape
    assert "bake_extra_roles[1] is neither a role name nor a {name, vars} mapping" in shape, shape
    assert "(not after_lunch)" in results["stage"]["error"], results["stage"]
    assert "bake_hooks.after_capture is not a list of task files" in results["hook_shape"]["error"]
    assert "bake_rebake_after_days a number of days" in results["rebake_shape"]["error"]
