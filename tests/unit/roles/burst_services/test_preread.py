"""The boot pre-read: every byte of every model file is read once, problems are reported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from localworld.localplay import load_role_file

SCRIPT = Path(__file__).resolve().parents[4] / "roles" / "burst_services" / "files" / "preread.py"


preread = load_role_file("burst_services", "preread.py", "burst_preread_under_test")


def _model(root: Path) -> int:
    (root / "nested").mkdir(parents=True)
    sizes = {"model-00001.safetensors": 3 * preread.MIB + 17, "nested/config.json": 300, "empty.txt": 0}
    for name, size in sizes.items():
        (root / name).write_bytes(os.urandom(size))
    (root / "link.safetensors").symlink_to(root / "model-00001.safetensors")
    return sum(sizes.values())


def test_ranges_cover_each_file_exactly():
    files = [("a", 10), ("b", 0), ("c", 4)]
    got = list(preread.ranges(files, 4))
    assert got == [("a", 0, 4), ("a", 4, 4), ("a", 8, 2), ("b", 0, 0), ("c", 0, 4)]


def test_reads_every_byte_once_without_following_links(tmp_path):
    expected = _model(tmp_path / "m")
    total, elapsed, count, problems = preread.preread([str(tmp_path / "m")], threads=4, block_mib=1, chunk_mib=1)
    assert (total, count, problems) == (expected, 3, [])
    assert elapsed >= 0


def test_command_logs_rate_and_fails_on_a_missing_path(tmp_path):
    expected = _model(tmp_path / "m")
    missing = tmp_path / "absent"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--threads", "2", str(tmp_path / "m"), str(missing)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"preread: error: {missing}: no such file or directory" in lines
    assert lines[-1].startswith(f"preread: read {expected / preread.MIB:.1f} MiB in 3 files in ")
    assert lines[-1].endswith(" MiB/s)")
