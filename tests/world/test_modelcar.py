"""modelcar_image's build and push against the local registries, checked from the registry's side."""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import subprocess
import tarfile
from pathlib import Path

import pytest

from ansible_collections.burst.golden_ami.plugins.module_utils._oci import OciError, Registry, model_layers
from ansible_collections.burst.golden_ami.plugins.modules.modelcar_image import RECORD_NAME, build_and_push

pytestmark = pytest.mark.docker


def _model(tmp_path: Path, token: str) -> tuple[Path, dict]:
    """A model directory as model_cache leaves it: files, a record, and a stray file the record does not list."""
    model_dir = tmp_path / "stand-in--modelcar"
    files = {
        "config.json": json.dumps({"model_type": "llama"}).encode(),
        "model-00001-of-00002.safetensors": secrets.token_bytes(3 * 1024 * 1024 + 11),
        "model-00002-of-00002.safetensors": secrets.token_bytes(2 * 1024 * 1024 + 5),
        "tokenizer/tokenizer.json": b'{"version": "1.0"}',
    }
    for path, data in files.items():
        (model_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / path).write_bytes(data)
    # What must never reach the image: a file the record does not list, holding a token.
    (model_dir / ".cache").mkdir()
    (model_dir / ".cache" / "token").write_text(token)
    record = {
        "format": 1,
        "name": "stand-in--modelcar",
        "source": "hub",
        "repo_id": "stand-in/modelcar",
        "revision": "main",
        "commit_sha": "c0ffee" + "0" * 34,
        "version": "c0ffee" + "0" * 34,
        "files": [
            {"path": path, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for path, data in sorted(files.items())
        ],
    }
    (model_dir / RECORD_NAME).write_text(json.dumps(record))
    return model_dir, record


def _params(model_dir: Path, registry, base: str, **overrides) -> dict:
    params = {
        "model_dir": str(model_dir),
        "repository": f"{registry.host}/kserve-models/stand-in-modelcar-{secrets.token_hex(3)}",
        "tag": None,
        "base_image": base,
        "platform": "linux/amd64",
        "model_path": "/models",
        "split_mb": 1,
        "labels": {},
        "force": False,
        "plain_http": None,
    }
    params.update(overrides)
    return params


def _client(registry):
    clients = {}

    def client(host):
        if host not in clients:
            clients[host] = Registry(host, registry.username, registry.password)
        return clients[host]

    return client


def test_layers_are_deterministic_and_hold_only_recorded_files(tmp_path):
    model_dir, record = _model(tmp_path, "hf_" + secrets.token_hex(8))
    first = [layer.measure() for layer in model_layers(str(model_dir), record, split_bytes=1024 * 1024)]
    second = [layer.measure() for layer in model_layers(str(model_dir), record, split_bytes=1024 * 1024)]
    assert [(layer.digest, layer.size) for layer in first] == [(layer.digest, layer.size) for layer in second]
    assert [layer.files for layer in first] == [
        ["models/config.json", "models/tokenizer/tokenizer.json"],
        ["models/model-00001-of-00002.safetensors"],
        ["models/model-00002-of-00002.safetensors"],
    ]
    members = tarfile.open(fileobj=io.BytesIO(b"".join(first[0].chunks()))).getmembers()
    assert [(m.name, m.mode, m.uid, m.gid, m.mtime) for m in members] == [
        ("models", 0o555, 0, 0, 0),
        ("models/tokenizer", 0o555, 0, 0, 0),
        ("models/config.json", 0o444, 0, 0, 0),
        ("models/tokenizer/tokenizer.json", 0o444, 0, 0, 0),
    ]


def test_a_file_that_does_not_match_its_record_fails_naming_it(tmp_path):
    model_dir, record = _model(tmp_path, "hf_x")
    shard = model_dir / "model-00002-of-00002.safetensors"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(OciError, match=r"model-00002-of-00002\.safetensors does not match its record"):
        for layer in model_layers(str(model_dir), record, split_bytes=1024 * 1024):
            layer.measure()


def test_push_holds_exactly_the_verified_files_then_changes_nothing(auth_registry, tmp_path):
    token = "hf_" + secrets.token_hex(16)
    model_dir, record = _model(tmp_path, token)
    base = auth_registry.standins["busybox:v0.1"]["pinned"]
    params = _params(model_dir, auth_registry, base)

    planned = build_and_push(params, _client(auth_registry), check_mode=True)
    assert planned["pushed"] and planned["uploaded_bytes"] == 0
    result = build_and_push(params, _client(auth_registry))
    assert result["pushed"] and result["changed"]
    assert result["digest"] == planned["digest"], "check mode predicts the digest"
    assert result["tag"] == record["commit_sha"][:12]
    assert result["reference"] == f"{params['repository']}@{result['digest']}"

    repository = params["repository"].split("/", 1)[1]
    status, _headers, body = auth_registry.request(
        "GET", f"/v2/{repository}/manifests/{result['tag']}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )  # fmt: skip
    assert status == 200 and "sha256:" + hashlib.sha256(body).hexdigest() == result["digest"]
    manifest = json.loads(body)
    blobs = {}
    for descriptor in [manifest["config"], *manifest["layers"]]:
        status, _headers, blob = auth_registry.request("GET", f"/v2/{repository}/blobs/{descriptor['digest']}")
        assert status == 200
        blobs[descriptor["digest"]] = blob
    config = json.loads(blobs[manifest["config"]["digest"]])
    assert config["config"]["Labels"]["org.opencontainers.image.revision"] == record["commit_sha"]
    assert config["config"]["Labels"]["org.opencontainers.image.source"] == "stand-in/modelcar"
    held = {}
    for descriptor in manifest["layers"]:
        with tarfile.open(fileobj=io.BytesIO(blobs[descriptor["digest"]])) as archive:
            for member in archive.getmembers():
                if member.isfile() and member.name.startswith("models/"):
                    held[member.name] = hashlib.sha256(archive.extractfile(member).read()).hexdigest()
    assert held == {f"models/{f['path']}": f["sha256"] for f in record["files"]}
    assert all(token.encode() not in blob for blob in blobs.values()), "the token is in no blob"

    again = build_and_push(params, _client(auth_registry))
    assert not again["changed"] and again["uploaded_bytes"] == 0
    assert again["digest"] == result["digest"]

    # Another model under the same tag: refused, the tag stays.
    other_dir, _other = _model(tmp_path / "other", token)
    with pytest.raises(OciError, match="tags are immutable"):
        build_and_push(_params(other_dir, auth_registry, base, repository=params["repository"]), _client(auth_registry))

    # The image runs: busybox's shell sees the model under /models, as KServe's Modelcar container does.
    pulled = f"{params['repository']}@{result['digest']}"
    login = subprocess.run(
        ["docker", "login", "--password-stdin", "-u", auth_registry.username, auth_registry.host],
        input=auth_registry.password, text=True, capture_output=True, check=False, timeout=60,
        env={**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker-config")},
    )  # fmt: skip
    assert login.returncode == 0, login.stderr
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker-config")}
    try:
        subprocess.run(["docker", "pull", pulled], env=env, check=True, capture_output=True, timeout=120)
        listed = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", pulled, "sh", "-c", "cd /models; ls -R; cat config.json"],
            env=env, capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        assert "model-00001-of-00002.safetensors" in listed.stdout and '"model_type": "llama"' in listed.stdout
        assert ".cache" not in listed.stdout
    finally:
        subprocess.run(["docker", "rmi", "-f", pulled], env=env, capture_output=True, check=False, timeout=60)
