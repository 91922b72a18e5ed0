"""buildkit's registration with ``docker buildx``, run for real with ansible-playbook on localhost.

Debian 12 packages no buildx, so ``buildkit_docker_bin`` points at a stand-in ``docker`` that answers
``docker buildx version|inspect|create|rm|use`` as buildx does, keeps its builders in a JSON file and logs
every call. Only the role's buildx tasks run; the container itself is covered by the molecule scenario.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from localworld.localplay import run_local_play

IMAGE = "127.0.0.1:5000/standin/buildkit@sha256:" + "ab" * 32
OTHER_IMAGE = "127.0.0.1:5000/standin/buildkit@sha256:" + "cd" * 32

# The stand-in CLI. `inspect` prints the fields of buildx's own output the role reads.
FAKE_DOCKER = r"""#!PYTHON
import json, os, sys
state_path, log_path = os.environ["FAKE_BUILDX_STATE"], os.environ["FAKE_BUILDX_LOG"]
with open(log_path, "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\n")
state = json.load(open(state_path)) if os.path.exists(state_path) else {"builders": {}, "current": "default"}
args = sys.argv[1:]
if not os.environ.get("FAKE_BUILDX_INSTALLED"):
    sys.exit("docker: 'buildx' is not a docker command.")
if args[:2] == ["buildx", "version"]:
    print("github.com/docker/buildx v0.17.1 stand-in")
    sys.exit(0)
if args[:2] == ["buildx", "inspect"]:
    name = args[2].lower() if len(args) > 2 else state["current"]
    builder = state["builders"].get(name)
    if builder is None:
        sys.exit(f"ERROR: no builder {name!r} found")
    opts = " ".join(f'{k}="{v}"' for k, v in sorted(builder["opts"].items()))
    print(f"Name:          {name}\nDriver:        {builder['driver']}\n\nNodes:\nName:           {builder['node']}\n"
          f"Endpoint:       unix:///var/run/docker.sock\nDriver Options: {opts}\nStatus:         running")
    sys.exit(0)
if args[:2] == ["buildx", "create"]:
    opt = lambda flag: [args[i + 1] for i, a in enumerate(args) if a == flag]
    name = opt("--name")[0].lower()  # buildx keeps builder names in lower case
    if name in state["builders"]:
        sys.exit(f"ERROR: existing instance for {name!r} but no append mode")
    state["builders"][name] = {"node": opt("--node")[0], "driver": opt("--driver")[0],
                               "opts": dict(o.split("=", 1) for o in opt("--driver-opt"))}
elif args[:2] == ["buildx", "rm"]:
    state["builders"].pop(args[-1].lower())
    state["current"] = "default" if state["current"] == args[-1].lower() else state["current"]
elif args[:2] == ["buildx", "use"]:
    if args[-1].lower() not in state["builders"]:
        sys.exit(f"ERROR: run `docker buildx create --name {args[-1]}`")
    state["current"] = args[-1].lower()
else:
    sys.exit(f"stand-in docker: unexpected {args}")
json.dump(state, open(state_path, "w"))
"""


@pytest.fixture
def fake(tmp_path: Path) -> dict:
    docker = tmp_path / "docker"
    docker.write_text(FAKE_DOCKER.replace("PYTHON", sys.executable, 1))
    docker.chmod(0o755)
    return {"bin": docker, "state": tmp_path / "buildx.json", "log": tmp_path / "calls.log"}


def _play(tmp_path: Path, fake: dict, *, installed: bool = True, image: str = IMAGE, check: bool = False):
    """Run the role's buildx tasks once for root; return the process, the recap and the calls made."""
    fake["log"].write_text("")
    play = {
        "tasks": [
            {
                "name": "Register the builder",
                "ansible.builtin.include_role": {"name": "burst.golden_ami.buildkit", "tasks_from": "buildx"},
                "vars": {
                    "buildkit_image": image,
                    "buildkit_builder_name": "Baked-Builder",
                    "buildkit_docker_bin": str(fake["bin"]),
                    "__buildkit_buildx_user": "root",
                },
            }
        ],
    }
    env = {
        "ANSIBLE_BECOME_METHOD": "su",
        "FAKE_BUILDX_STATE": str(fake["state"]),
        "FAKE_BUILDX_LOG": str(fake["log"]),
        "FAKE_BUILDX_INSTALLED": "1" if installed else "",
    }
    result, recap = run_local_play(tmp_path, play, *(["--check"] if check else []), env=env)
    calls = [json.loads(line) for line in fake["log"].read_text().splitlines()]
    return result, recap, calls


def _writes(calls: list[list[str]]) -> list[list[str]]:
    return [c for c in calls if c[:2] in (["buildx", "create"], ["buildx", "rm"], ["buildx", "use"])]


def test_registers_the_container_as_the_default_builder_once(tmp_path, fake):
    result, recap, calls = _play(tmp_path, fake, check=True)
    assert recap["failed"] == 0 and recap["changed"] == 1, result.stdout
    shown = " ".join(result.stdout.split())
    assert "buildx create --name Baked-Builder --node baked-builder0" in shown
    assert "--buildkitd-flags '--allow-insecure-entitlement network.host'" in shown
    assert "buildx use --default Baked-Builder" in shown
    assert _writes(calls) == [] and not fake["state"].exists()

    result, recap, calls = _play(tmp_path, fake)
    assert recap["failed"] == 0 and recap["changed"] == 1, result.stdout
    create, use = _writes(calls)
    assert create == [
        "buildx", "create", "--name", "Baked-Builder", "--node", "baked-builder0",
        "--driver", "docker-container", "--driver-opt", f"image={IMAGE}", "--driver-opt", "network=host",
        "--config", "/etc/buildkit/buildkitd.toml",
        "--buildkitd-flags", "--allow-insecure-entitlement network.host",
    ]  # fmt: skip
    assert use == ["buildx", "use", "--default", "Baked-Builder"]

    result, recap, calls = _play(tmp_path, fake)
    assert recap["failed"] == 0 and recap["changed"] == 0, result.stdout
    assert _writes(calls) == []


def test_a_registration_with_another_image_is_replaced_keeping_the_container(tmp_path, fake):
    _play(tmp_path, fake, image=OTHER_IMAGE)
    result, recap, calls = _play(tmp_path, fake)
    assert recap["failed"] == 0 and recap["changed"] == 1, result.stdout
    assert [c[:3] for c in _writes(calls)] == [["buildx", "rm", "--keep-daemon"], ["buildx", "create", "--name"],
                                               ["buildx", "use", "--default"]]  # fmt: skip
    assert _writes(calls)[0] == ["buildx", "rm", "--keep-daemon", "--keep-state", "Baked-Builder"]
    state = json.loads(fake["state"].read_text())
    assert state["current"] == "baked-builder"
    assert state["builders"]["baked-builder"]["opts"] == {"image": IMAGE, "network": "host"}


def test_another_default_builder_is_replaced_by_a_use(tmp_path, fake):
    _play(tmp_path, fake)
    state = json.loads(fake["state"].read_text())
    fake["state"].write_text(json.dumps({**state, "current": "default"}))
    result, recap, calls = _play(tmp_path, fake)
    assert recap["failed"] == 0 and recap["changed"] == 1, result.stdout
    assert _writes(calls) == [["buildx", "use", "--default", "Baked-Builder"]]


def test_without_buildx_it_says_so_and_runs_nothing_else(tmp_path, fake):
    result, recap, calls = _play(tmp_path, fake, installed=False)
    assert recap["failed"] == 0 and recap["changed"] == 0, result.stdout
    assert calls == [["buildx", "version"]]
    assert "docker buildx is not installed for root" in result.stdout
