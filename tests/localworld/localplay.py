"""Run playbooks with this checkout's collection: a one-play playbook on localhost, and the bake's environment."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
RECAP = re.compile(r"localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)")


def run_local_play(
    workdir: Path, play: dict, *options: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, dict[str, int]]:
    """Write ``play`` to workdir/play.yml, run it on localhost (connection local); return the process and recap."""
    playbook = workdir / "play.yml"
    playbook.write_text(json.dumps([{"hosts": "localhost", "connection": "local", "gather_facts": False, **play}]))
    full_env = {
        **os.environ,
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".venv" / "collections"),
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        **(env or {}),
    }
    result = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(playbook), *options],
        env=full_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    recap = RECAP.search(result.stdout)
    assert recap, result.stdout + result.stderr
    return result, {"ok": int(recap[1]), "changed": int(recap[2]), "failed": int(recap[3])}


def bake_environment(aws_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The environment of an ``ansible-playbook`` run of the bake playbooks against the local world.

    Nothing of the caller's AWS, Ansible, local-world or Hub settings leaks in; the step timer writes to
    tmp_path/steps.json.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_", "LOCALWORLD_", "HF_"))}
    env.update(aws_env)
    env.update(
        {
            "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".venv" / "collections"),
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_CALLBACKS_ENABLED": "burst.golden_ami.step_timer",
            "BURST_STEP_TIMER_OUTPUT": str(tmp_path / "steps.json"),
        }
    )
    return env


def load_role_file(role: str, filename: str, module_name: str):
    """Import ``roles/<role>/files/<filename>`` (a script a role installs) as module ``module_name``."""
    path = REPO / "roles" / role / "files" / filename
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
