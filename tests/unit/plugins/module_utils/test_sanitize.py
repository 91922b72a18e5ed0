"""Unit tests for the pre-capture checks (plugins/module_utils/_sanitize.py)."""

from __future__ import annotations

import pytest

from ansible_collections.burst.golden_ami.plugins.module_utils import _sanitize

# Built at run time so that no credential-shaped string sits in this file.
HF_TOKEN = "hf_" + "Q7x" * 12
AWS_KEY_ID = "AKIA" + "Z3Q9" * 4
AWS_SECRET = "Ab3/" * 10


def _check(tmp_path, **overrides):
    args = dict(
        absent=[],
        empty=[],
        scan_roots=[str(tmp_path)],
        scan_excludes=[],
        patterns=list(_sanitize.DEFAULT_PATTERNS),
        max_size=1024 * 1024,
        min_free={},
    )
    args.update(overrides)
    return _sanitize.check(**args)


@pytest.mark.parametrize(
    ("content", "kind", "starts_with"),
    [
        (f"HF_TOKEN={HF_TOKEN}\n", "huggingface_token", "hf_"),
        (f"[default]\naws_access_key_id = {AWS_KEY_ID}\n", "aws_access_key_id", "AKIA"),
        (f"aws_secret_access_key = {AWS_SECRET}\n", "aws_secret_access_key", "aws_secret"),
        ('{"auths": {"127.0.0.1:5000": {"auth": "dXNlcjpwYXNzd29yZA=="}}}', "registry_auth", '"auth"'),
    ],
)
def test_each_kind_of_secret_is_found_and_never_returned(tmp_path, content, kind, starts_with):
    planted = tmp_path / "deep" / "dir" / "planted.txt"
    planted.parent.mkdir(parents=True)
    planted.write_text("x" * 100 + content)
    result = _check(tmp_path)
    assert [(f["path"], f["kind"]) for f in result["secrets"]] == [(str(planted), kind)]
    assert result["secrets"][0]["offset"] == 100 + content.index(starts_with)
    rendered = repr(result)
    for value in (HF_TOKEN, AWS_KEY_ID, AWS_SECRET, "dXNlcjpwYXNzd29yZA=="):
        assert value not in rendered
    assert result["problems"] == [f"{kind} found in {planted} (byte {result['secrets'][0]['offset']})"]


def test_documentation_examples_are_not_secrets(tmp_path):
    (tmp_path / "docs.py").write_text(
        'key = "AKIAIOSFODNN7EXAMPLE"\nsecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"\n'
    )
    assert _check(tmp_path)["secrets"] == []


def test_secret_across_a_chunk_boundary_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(_sanitize, "_CHUNK", 64)
    (tmp_path / "big").write_text("a" * 59 + " " + HF_TOKEN)
    result = _check(tmp_path)
    assert result["secrets"] == [{"path": str(tmp_path / "big"), "kind": "huggingface_token", "offset": 60}]


def test_large_files_excluded_dirs_and_symlinks_are_not_read(tmp_path):
    (tmp_path / "weights.safetensors").write_text("w" * 2048 + HF_TOKEN)
    excluded = tmp_path / "var" / "lib" / "docker"
    excluded.mkdir(parents=True)
    (excluded / "layer").write_text(HF_TOKEN)
    outside = tmp_path.parent / (tmp_path.name + "-outside")
    outside.mkdir()
    (outside / "token").write_text(HF_TOKEN)
    (tmp_path / "link").symlink_to(outside, target_is_directory=True)
    result = _check(tmp_path, max_size=1024, scan_excludes=[str(tmp_path / "var/lib/docker")])
    assert result["secrets"] == []
    assert result["files_scanned"] == 1


def test_remaining_paths_globs_and_empty_files(tmp_path):
    keys = tmp_path / "ssh"
    keys.mkdir()
    (keys / "ssh_host_ed25519_key").write_text("k")
    (keys / "sshd_config").write_text("c")
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef\n")
    empty_dir = tmp_path / "leases"
    empty_dir.mkdir()
    result = _check(
        tmp_path,
        scan_roots=[],
        absent=[str(keys / "ssh_host_*"), str(tmp_path / "never-there")],
        empty=[str(machine_id), str(empty_dir), str(tmp_path / "missing-is-fine")],
    )
    assert result["remaining"] == [str(keys / "ssh_host_ed25519_key")]
    assert result["not_empty"] == [str(machine_id)]
    machine_id.write_text("")
    (keys / "ssh_host_ed25519_key").unlink()
    clean = _check(tmp_path, scan_roots=[], absent=[str(keys / "ssh_host_*")], empty=[str(machine_id)])
    assert clean["problems"] == []


def test_free_space_below_minimum_is_a_problem(tmp_path):
    free = _sanitize.free_bytes(str(tmp_path))
    assert _check(tmp_path, scan_roots=[], min_free={str(tmp_path): free // 2})["problems"] == []
    result = _check(tmp_path, scan_roots=[], min_free={str(tmp_path): free * 1000})
    assert result["low_space"][0]["path"] == str(tmp_path)
    assert "bytes free on the filesystem of" in result["problems"][0]


def test_unknown_pattern_is_named():
    with pytest.raises(ValueError, match=r"unknown secret pattern.*stripe_key"):
        _sanitize.compile_patterns(["huggingface_token", "stripe_key"])


def test_remove_matches_hidden_names_keeps_exceptions_and_dry_runs(tmp_path):
    tmp = tmp_path / "tmp"
    (tmp / "build" / "deep").mkdir(parents=True)
    (tmp / ".hidden").write_text("h")
    (tmp / "systemd-private-abc").mkdir()
    (tmp / "link").symlink_to(tmp_path)
    pattern = [str(tmp / "*")]
    keep = [str(tmp / "systemd-private-*")]
    planned = _sanitize.remove(pattern, keep=keep, dry_run=True)
    assert sorted(planned) == sorted(str(tmp / n) for n in (".hidden", "build", "link"))
    assert (tmp / ".hidden").exists()
    assert sorted(_sanitize.remove(pattern, keep=keep)) == sorted(planned)
    assert sorted(p.name for p in tmp.iterdir()) == ["systemd-private-abc"]
    assert tmp_path.exists()  # the symlink went, not what it pointed at
    assert _sanitize.remove(pattern, keep=keep) == []


def test_truncate_empties_files_once(tmp_path):
    log = tmp_path / "syslog.log"
    log.write_text("line\n")
    (tmp_path / "empty.log").write_text("")
    assert _sanitize.truncate([str(tmp_path / "*.log")], dry_run=True) == [str(log)]
    assert log.read_text() == "line\n"
    assert _sanitize.truncate([str(tmp_path / "*.log")]) == [str(log)]
    assert log.read_text() == ""
    assert _sanitize.truncate([str(tmp_path / "*.log")]) == []
