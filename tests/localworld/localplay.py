"""Run a one-play playbook on localhost with this checkout's collection, as the role unit tests do."""

from __future__ import annotations

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
