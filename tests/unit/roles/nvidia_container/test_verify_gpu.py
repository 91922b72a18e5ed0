"""burst-verify-gpu, run for real with stand-in nvidia-smi and docker programs first on PATH."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[4] / "roles" / "nvidia_container" / "files" / "burst-verify-gpu"

SMI_TWO_GPUS = """#!/bin/sh
case "$*" in
  *--query-gpu*) printf 'NVIDIA L40S, 550.90.07, 46068 MiB\\nNVIDIA L40S, 550.90.07, 46068 MiB\\n' ;;
  -L) printf 'GPU 0: NVIDIA L40S (UUID: GPU-1)\\nGPU 1: NVIDIA L40S (UUID: GPU-2)\\n' ;;
  *) exit 9 ;;
esac
"""
DOCKER = """#!/bin/sh
echo "$*" >> "$DOCKER_LOG"
case "$1" in
  info) echo '{RUNTIMES}' ;;
  run) {RUN} ;;
  rm) exit 0 ;;
  *) exit 9 ;;
esac
"""
WITH_NVIDIA = '{"io.containerd.runc.v2":{"path":"runc"},"nvidia":{"path":"nvidia-container-runtime"}}'
WITHOUT_NVIDIA = '{"io.containerd.runc.v2":{"path":"runc"},"runc":{"path":"runc"}}'


def _program(directory: Path, name: str, text: str) -> None:
    path = directory / name
    path.write_text(text)
    path.chmod(0o755)


def _run(
    tmp_path: Path, *args: str, smi: str | None = SMI_TWO_GPUS, runtimes: str = WITH_NVIDIA, run: str = ""
) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if smi is not None:
        _program(bin_dir, "nvidia-smi", smi)
    _program(bin_dir, "docker", DOCKER.replace("{RUNTIMES}", runtimes).replace("{RUN}", run or "exit 9"))
    # Only the stand-ins and the basic tools the script uses: no real nvidia-smi can leak in.
    for tool in ("timeout", "grep", "paste", "cat", "env", "sh", "bash", "tr", "sleep"):
        found = shutil.which(tool)
        assert found, tool
        if not (bin_dir / tool).exists():
            (bin_dir / tool).symlink_to(found)
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env={"PATH": str(bin_dir), "LANG": "C.UTF-8", "DOCKER_LOG": str(tmp_path / "docker.log")},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_all_checks_pass_with_gpus_runtime_and_container(tmp_path):
    listed = "printf 'GPU 0: NVIDIA L40S (UUID: GPU-1)\\nGPU 1: NVIDIA L40S (UUID: GPU-2)\\n'"
    result = _run(tmp_path, "--image", "nvidia/cuda:12.4.1-base-ubuntu22.04", "--json", run=listed)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == 0
    assert [(c["name"], c["ok"]) for c in report["checks"]] == [
        ("driver", True),
        ("runtime", True),
        ("container", True),
    ]
    assert report["checks"][0]["detail"].startswith("2 GPU(s): NVIDIA L40S, 550.90.07, 46068 MiB;")
    assert report["checks"][2]["detail"] == "2 GPU(s) inside nvidia/cuda:12.4.1-base-ubuntu22.04"


def test_gpus_and_runtime_pass_without_a_container_check(tmp_path):
    result = _run(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["driver", "ok"], ["runtime", "ok"]]
    assert "2 GPU(s): NVIDIA L40S, 550.90.07, 46068 MiB;NVIDIA L40S" in lines[0]
    # Without --image no container is started.
    assert (tmp_path / "docker.log").read_text().splitlines() == ["info --format {{json .Runtimes}}"]


def test_no_driver_exits_2(tmp_path):
    result = _run(tmp_path, smi=None)
    assert result.returncode == 2
    assert "nvidia-smi not found" in result.stdout


def test_driver_without_gpu_exits_2(tmp_path):
    result = _run(tmp_path, "--json", smi="#!/bin/sh\necho 'No devices were found' >&2\nexit 6\n")
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report == {
        "status": 2,
        "checks": [{"name": "driver", "ok": False, "detail": "nvidia-smi failed: No devices were found"}],
    }


def test_missing_runtime_exits_1(tmp_path):
    result = _run(tmp_path, runtimes=WITHOUT_NVIDIA)
    assert result.returncode == 1
    assert "runtime   FAILED  the nvidia runtime is not registered" in result.stdout


def test_container_without_gpus_exits_1_and_json_escapes_output(tmp_path):
    failing = (
        "echo 'docker: Error response from daemon:"
        ' could not select device driver "" with capabilities: [[gpu]].\' >&2; exit 125'
    )
    result = _run(tmp_path, "--image", "cuda", "--json", run=failing)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    container = report["checks"][-1]
    assert container["name"] == "container" and container["ok"] is False
    assert 'could not select device driver ""' in container["detail"]


def test_a_container_past_the_limit_fails_and_is_removed(tmp_path):
    result = _run(tmp_path, "--image", "cuda", "--timeout", "1", "--json", run="sleep 30")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["checks"][-1] == {
        "name": "container",
        "ok": False,
        "detail": "docker run --gpus all cuda failed: no answer within 1s",
    }
    calls = (tmp_path / "docker.log").read_text().splitlines()
    name = calls[1].split("--name ")[1].split()[0]
    assert calls[1] == f"run --rm --name {name} --gpus all cuda nvidia-smi -L"
    assert calls[2] == f"rm --force {name}"


def test_json_detail_drops_control_characters(tmp_path):
    result = _run(tmp_path, "--json", runtimes="\033[31m{}\033[0m\ttab")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["checks"][1]["detail"] == "the nvidia runtime is not registered with the engine: [31m{}[0m\ttab"


def test_help_exits_0(tmp_path):
    result = _run(tmp_path, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: burst-verify-gpu")
    assert "Exit status: 0 all checks passed, 2 no NVIDIA GPU or driver, 1 a check failed." in result.stdout


def test_a_hanging_command_times_out(tmp_path):
    result = _run(tmp_path, "--timeout", "1", smi="#!/bin/sh\nsleep 30\n")
    assert result.returncode == 2
    assert "nvidia-smi failed" in result.stdout


@pytest.mark.parametrize(
    "args", [["--bogus"], ["--timeout", "soon"], ["--timeout", "0"], ["--image"], ["--image", ""], ["--image="]]
)
def test_bad_usage_exits_64(tmp_path, args):
    result = _run(tmp_path, *args)
    assert result.returncode == 64
    expected = "--timeout must be a whole number" if "--timeout" in args else "Usage: burst-verify-gpu"
    assert expected in result.stderr


def test_script_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: run hack/ensure-world-deps.sh"
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout
    assert os.access(SCRIPT, os.X_OK)
