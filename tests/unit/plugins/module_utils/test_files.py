"""_files: the one atomic JSON writer and its reader."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.burst.golden_ami.plugins.module_utils._files import read_json, sha256_file, write_json_atomic


def test_the_file_is_indented_sorted_and_ends_with_a_newline(tmp_path):
    path = tmp_path / "doc.json"
    write_json_atomic(str(path), {"b": 1, "a": [1, 2]})
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


@pytest.mark.parametrize("sync", [True, False])
def test_mode_and_sync(tmp_path, sync):
    path = tmp_path / "doc.json"
    write_json_atomic(str(path), {"a": 1}, mode=0o444, sync=sync)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
    assert json.loads(path.read_text()) == {"a": 1}


def test_a_failed_write_leaves_the_last_good_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "doc.json"
    write_json_atomic(str(path), {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(str(path), {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]


def test_read_json_gives_none_for_a_missing_or_damaged_file_unless_strict(tmp_path):
    missing = tmp_path / "missing.json"
    damaged = tmp_path / "damaged.json"
    damaged.write_text('{"a": ')
    assert read_json(str(missing)) is None
    assert read_json(str(damaged)) is None
    with pytest.raises(FileNotFoundError):
        read_json(str(missing), strict=True)
    with pytest.raises(ValueError):
        read_json(str(damaged), strict=True)
    write_json_atomic(str(damaged), {"a": 1})
    assert read_json(str(damaged), strict=True) == {"a": 1}


def test_sha256_file(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"abc" * 1000)
    expected = "328de8f1895f8bb09f6e6b4c2012ef2b2a6f067cd002794b750aa040a6f6d8bd"
    assert sha256_file(str(path)) == expected
    assert sha256_file(str(path), chunk=7) == expected
