"""What the release tests share: Ansible's tools run as a user runs them, with this checkout's collection."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def load_hack(name: str):
    """Import ``hack/<name>.py`` (a development tool that the tests share with the Makefile) as a module."""
    spec = importlib.util.spec_from_file_location(f"hack_{name}", REPO / "hack" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ansible_env(**extra: str) -> dict[str, str]:
    """The environment without the caller's ANSIBLE_* settings: this checkout's collection and config, no colour."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        {
            "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".venv" / "collections"),
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            **extra,
        }
    )
    return env


def run(
    argv: list[str], env: dict[str, str] | None = None, timeout: int = 120, **options
) -> subprocess.CompletedProcess:
    """Run a command to its end and capture its output as text; the caller checks the return code."""
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False, **options)
