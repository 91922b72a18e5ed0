"""The pre-capture secret scan on real files: every kind of secret, planted in every kind of place.

Secrets are generated at run time (random, in each token's published shape), so that no
credential-shaped string sits in this file. Each test asserts that every planted secret is found,
named by file and kind, and that no secret's text appears in what the scan returns or the module prints.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import string

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.burst.golden_ami.plugins.module_utils import _sanitize
from ansible_collections.burst.golden_ami.plugins.modules import image_sanitize_check

ALNUM = string.ascii_letters + string.digits
MiB = 1 << 20


def rand(count, alphabet=ALNUM):
    return "".join(secrets.choice(alphabet) for _index in range(count))


def _armored(label, body, width):
    text = base64.b64encode(body).decode()
    lines = "\n".join(text[i : i + width] for i in range(0, len(text), width))
    return "-----BEGIN " + label + "-----\n" + lines + "\n-----END " + label + "-----\n"


def openssh_key():
    return _armored("OPENSSH PRIVATE KEY", b"openssh-key-v1\0" + secrets.token_bytes(380), 70)


def make_secrets():
    """{kind: (snippet, value)}: the snippet starts where the scan's match starts; value is what must never show."""
    aws_secret = rand(40, ALNUM + "/+")
    registry_password = rand(20)
    auth = base64.b64encode(("robot:" + registry_password).encode()).decode()
    key = openssh_key()
    planted = {
        "private_key": (key, key.splitlines()[1]),
        "aws_access_key_id": ("AKIA" + rand(16, string.ascii_uppercase + string.digits), None),
        "aws_secret_access_key": ("aws_secret_access_key = " + aws_secret, aws_secret),
        "huggingface_token": ("hf_" + rand(34), None),
        "github_token": ("ghp_" + rand(36), None),
        "ngc_api_key": ("nvapi-" + rand(64, ALNUM + "-_"), None),
        "openai_api_key": ("sk-proj-" + rand(120, ALNUM + "-_"), None),
        "slack_token": ("xoxb-" + rand(11, string.digits) + "-" + rand(13, string.digits) + "-" + rand(24), None),
        "registry_auth": ('"auth": "%s"' % auth, auth),
    }
    return {kind: (snippet, value or snippet) for kind, (snippet, value) in planted.items()}


def fine_grained_github():
    return "github_pat_" + rand(22) + "_" + rand(59)


def block(planted, extra=""):
    """One of each kind, a line each, as they sit in configuration files and histories."""
    return "".join("%s\n" % snippet for snippet, _value in planted.values()) + extra


def scan(root, **overrides):
    args = dict(
        absent=[],
        empty=[],
        scan_roots=[str(root)],
        scan_excludes=[],
        patterns=list(_sanitize.DEFAULT_PATTERNS),
        max_size=0,
        min_free={},
    )
    args.update(overrides)
    return _sanitize.check(**args)


def found(result):
    by_file = {}
    for finding in result["secrets"]:
        by_file.setdefault(finding["path"], set()).add(finding["kind"])
    return by_file


def assert_never_shown(text, planted):
    for _snippet, value in planted.values():
        assert value not in text


@pytest.fixture
def world(tmp_path):
    """A builder's filesystem with one of each kind of secret in six kinds of place."""
    planted = make_secrets()
    password = rand(28, ALNUM + "!#%&*+-")
    places = {}

    plain = tmp_path / "opt" / "app" / "notes.txt"
    plain.parent.mkdir(parents=True)
    plain.write_text("Notes of the build\n" + block(planted))
    places[plain] = set(planted)

    # Larger than the old 16 MiB limit; every secret straddles a block boundary or lies past 16 MiB.
    large = tmp_path / "opt" / "app" / "data.bin"
    offsets = {}
    with large.open("wb") as handle:
        for index, (kind, (snippet, _value)) in enumerate(planted.items()):
            boundary = (index + 1) * _sanitize._CHUNK if index < 4 else 16 * MiB + index * 4096
            handle.write(b"\0" * (boundary - len(snippet) // 2 - handle.tell()))
            offsets[kind] = handle.tell()
            handle.write(snippet.encode() + b"\n")
        handle.write(b"\0" * MiB)
    assert large.stat().st_size > 17 * MiB
    places[large] = set(planted)

    # An image layer as Docker's overlay2 driver keeps it, and a container's configuration.
    layer = tmp_path / "var" / "lib" / "docker" / "overlay2" / ("ab" * 32) / "diff" / "app" / "settings.py"
    layer.parent.mkdir(parents=True)
    layer.write_text("# baked into the image\nSETTINGS = '''\n" + block(planted) + "'''\n")
    places[layer] = set(planted)

    docker_config = tmp_path / "root" / ".docker" / "config.json"
    docker_config.parent.mkdir(parents=True)
    auths = {"auths": {"registry.example:5000": {"auth": planted["registry_auth"][1]}}}
    docker_config.write_text(json.dumps(auths, indent=2))
    places[docker_config] = {"registry_auth", "high_entropy_secret"}

    history = tmp_path / "home" / "builder" / ".bash_history"
    history.parent.mkdir(parents=True)
    history.write_text("ls\n" + "".join("export SECRET_%d=%s\n" % (i, s) for i, (s, _v) in enumerate(planted.values())))
    places[history] = set(planted) | {"high_entropy_secret"}

    env_file = tmp_path / "etc" / "burst" / "app.env"
    env_file.parent.mkdir(parents=True)
    env_file.write_text("MODEL=org/name\nDB_PASSWORD=%s\n" % password + block(planted))
    places[env_file] = set(planted) | {"high_entropy_secret"}

    all_values = dict(planted, db_password=("", password))
    return tmp_path, places, all_values, offsets, large


def test_every_kind_is_found_in_every_place_and_never_returned(world):
    root, places, values, _offsets, _large = world
    result = scan(root)
    assert found(result) == {str(path): kinds for path, kinds in places.items()}
    for path, kinds in places.items():
        for kind in kinds:
            assert any(line.startswith("%s found in %s (byte " % (kind, path)) for line in result["problems"])
    assert_never_shown(repr(result), values)


def test_large_files_are_read_whole_and_across_block_boundaries(world):
    _root, _places, _values, offsets, large = world
    result = scan(large)
    assert {f["kind"]: f["offset"] for f in result["secrets"]} == offsets
    assert result["files_scanned"] == 1


def test_a_size_limit_still_skips_larger_files_when_asked(world):
    root, _places, _values, _offsets, large = world
    result = scan(root, max_size=16 * MiB)
    assert str(large) not in found(result)


@pytest.mark.parametrize("chunk", [61, 97, 1024])
def test_each_kind_is_found_wherever_a_block_ends(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(_sanitize, "_CHUNK", chunk)
    planted = make_secrets()
    planted["github_token"] = (fine_grained_github(), None)
    for index, (kind, (snippet, _value)) in enumerate(planted.items()):
        for shift in range(0, len(snippet), max(1, len(snippet) // 7)):
            path = tmp_path / ("%s-%d-%d" % (kind, chunk, shift))
            filler = "." * (3 * chunk - shift + index)
            path.write_text(filler + snippet + "\n")
            result = _sanitize.scan_file(str(path), _sanitize.compile_patterns([kind]))
            assert result == [{"path": str(path), "kind": kind, "offset": len(filler)}], (kind, shift)


@pytest.mark.parametrize(
    "label",
    ["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "OPENSSH PRIVATE KEY"],
)
def test_private_keys_pem_and_openssh(tmp_path, label):
    path = tmp_path / "key"
    path.write_text(_armored(label, secrets.token_bytes(300), 64))
    assert [f["kind"] for f in scan(tmp_path)["secrets"]] == ["private_key"]


def test_private_keys_with_headers_pgp_and_putty(tmp_path):
    pem = _armored("RSA PRIVATE KEY", secrets.token_bytes(300), 64).splitlines(keepends=True)
    (tmp_path / "legacy.pem").write_text(
        pem[0] + "Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0123456789ABCDEF\n\n" + "".join(pem[1:])
    )
    pgp = _armored("PGP PRIVATE KEY BLOCK", secrets.token_bytes(300), 64).splitlines(keepends=True)
    (tmp_path / "key.asc").write_text(pgp[0] + "Version: GnuPG v2\n\n" + "".join(pgp[1:]))
    (tmp_path / "key.ppk").write_text("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: k\n")
    assert sorted(found(scan(tmp_path)).items()) == [
        (str(tmp_path / name), {"private_key"}) for name in ("key.asc", "key.ppk", "legacy.pem")
    ]


def test_what_only_looks_like_a_secret_is_not_reported(tmp_path):
    # Libraries that parse keys carry the armour header as a constant, without key material.
    (tmp_path / "keys.py").write_text(
        'MARKER = b"-----BEGIN OPENSSH PRIVATE KEY-----\\n"\nPEM = "-----BEGIN RSA PRIVATE KEY-----"\n'
    )
    # A JSON "auth" that is not base64 of user:password.
    (tmp_path / "package.json").write_text('{"name": "x", "auth": "passport-local"}\n')
    # Identifiers and placeholders.
    (tmp_path / "code.py").write_text("from huggingface_hub import hf_hub_download\nkey = 'sk-your-key-here'\n")
    env = tmp_path / "app.env"
    env.write_text("PASSWORD=changeme\nAPI_TOKEN=${API_TOKEN}\nSECRET_FILE=/run/secrets/token-file-name\n")
    result = scan(tmp_path)
    assert result["secrets"] == []
    assert result["files_scanned"] == 4


def test_high_entropy_values_only_in_credential_files(tmp_path):
    password = rand(24)
    (tmp_path / "readme.txt").write_text("password = %s\n" % password)
    netrc = tmp_path / "home" / ".netrc"
    netrc.parent.mkdir()
    netrc.write_text("machine example.org\n  login builder\n  password %s\n" % password)
    result = scan(tmp_path)
    assert result["secrets"] == [
        {"path": str(netrc), "kind": "high_entropy_secret", "offset": netrc.read_text().index(password)}
    ]
    assert password not in repr(result)


def test_given_literals_are_found_and_short_ones_refused(tmp_path):
    token = rand(40, string.ascii_lowercase)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "blob").write_bytes(b"\x00\x01" * 1000 + token.encode() + b"\x00")
    result = scan(tmp_path, patterns=[], literals=[token])
    assert result["secrets"] == [{"path": str(tmp_path / "cache" / "blob"), "kind": "given_secret", "offset": 2000}]
    assert token not in repr(result)
    with pytest.raises(ValueError, match="literal 1 is shorter than 8 bytes"):
        _sanitize.compile_patterns([], ["short"])


def test_skip_globs_and_special_files(tmp_path):
    planted = make_secrets()
    (tmp_path / "model.safetensors").write_text(block(planted))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # never opened for reading: that would block
    result = scan(tmp_path, skip=["*.safetensors"])
    assert result["secrets"] == []
    assert result["files_scanned"] == 1


def test_dockers_data_directory_is_scanned_by_default():
    assert not any(prefix.startswith("/var/lib/docker") for prefix in _sanitize.DEFAULT_SCAN_EXCLUDES)
    assert "/var" in _sanitize.DEFAULT_SCAN_ROOTS


def test_the_module_names_every_file_and_kind_and_prints_no_secret(world, capsys):
    root, places, values, _offsets, _large = world
    literal = rand(32)
    (root / "opt" / "app" / "given.txt").write_text("x" + literal)
    args = {"scan_roots": [str(root)], "scan_excludes": [], "literals": [literal]}
    with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
        image_sanitize_check.main()
    output = capsys.readouterr().out
    result = json.loads(output)
    assert exit_info.value.code == 1
    assert result["failed"] is True
    for path, kinds in places.items():
        for kind in kinds:
            assert "%s found in %s (byte " % (kind, path) in result["msg"]
    assert "given_secret found in %s (byte 1)" % (root / "opt" / "app" / "given.txt") in result["msg"]
    assert_never_shown(output, values)
    assert literal not in output


def test_the_module_does_not_read_its_own_payload(tmp_path, capsys):
    literal = rand(32)
    payload = tmp_path / "ansible-tmp-1" / "AnsiballZ_image_sanitize_check.py"
    payload.parent.mkdir()
    payload.write_text("params = %r\n" % json.dumps({"literals": [literal]}))
    leftover = tmp_path / "leftover.txt"
    leftover.write_text(literal)
    args = {
        "scan_roots": [str(tmp_path)],
        "scan_excludes": [],
        "patterns": [],
        "literals": [literal],
        "_ansible_tmpdir": str(payload.parent),
    }
    with patch_module_args(args), pytest.raises(SystemExit):
        image_sanitize_check.main()
    result = json.loads(capsys.readouterr().out)
    assert result["secrets"] == [{"path": str(leftover), "kind": "given_secret", "offset": 0}]
    assert result["files_scanned"] == 1
