"""Run every integration target under tests/integration/targets against moto on loopback.

Each target is a role whose ``tasks/main.yml`` holds the test. This runner
writes a playbook that applies the role to localhost, and runs it with
``ansible-playbook`` in an environment that points every AWS client at the
local moto server with fake credentials, so that nothing can reach AWS.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TARGETS = Path(__file__).resolve().parent / "targets"
REPO = TARGETS.parents[2]
ANSIBLE_PLAYBOOK = Path(sys.executable).with_name("ansible-playbook")
TIMEOUT_S = 300


def _targets() -> list[str]:
    return sorted(p.name for p in TARGETS.iterdir() if (p / "tasks" / "main.yml").is_file())


PLAYBOOK = """\
- name: Integration target {target}
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: {target}
"""


def _environment(aws_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANSIBLE_"))}
    env.update(aws_env)
    env.update(
        {
            "ANSIBLE_ROLES_PATH": str(TARGETS),
            "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".venv" / "collections"),
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
        }
    )
    return env


@pytest.mark.slow
@pytest.mark.parametrize("target", _targets())
def test_target(target: str, aws_env: dict[str, str], tmp_path: Path) -> None:
    assert aws_env["AWS_URL"].startswith("http://127.0.0.1:"), "targets run against the local moto only"
    playbook = tmp_path / "playbook.yml"
    playbook.write_text(PLAYBOOK.format(target=target))
    output_dir = tmp_path / "output"
    output_dir.mkdir()
    result = subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK),
            "-i",
            "localhost,",
            str(playbook),
            "-e",
            f"output_dir={output_dir}",
        ],
        env=_environment(aws_env, tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(
            f"target {target} failed (rc {result.returncode})\n--- stdout\n{result.stdout[-20000:]}\n"
            f"--- stderr\n{result.stderr[-5000:]}",
            pytrace=False,
        )
    assert "failed=0" in result.stdout
