"""modelcar_image's build and push against the local registries, checked from the registry's side."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import secrets
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ansible_collections.burst.golden_ami.plugins.module_utils._model_record import RECORD_NAME
from ansible_collections.burst.golden_ami.plugins.module_utils._oci import OciError, Registry, model_layers
from ansible_collections.burst.golden_ami.plugins.modules.modelcar_image import build_and_push

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


def _front_client(user, password):
    def client(host):
        return Registry(host, user, password)

    return client


def test_push_through_redirects_and_tokens_that_expire_mid_push(registry, tmp_path):
    """As to ECR or GHCR: blobs come from another host, and the token runs out several times during the push."""
    from localworld.registry import RegistryFront

    user, password = "modelcar", secrets.token_urlsafe(12)
    model_dir, record = _model(tmp_path, "hf_" + secrets.token_hex(8))
    with RegistryFront(registry, token_auth=(user, password), token_uses=3) as front:
        base = f"{front.host}/standin/busybox@{registry.standins['busybox:v0.1']['digest']}"
        params = _params(model_dir, front, base, repository=f"{front.host}/kserve-models/modelcar-front")
        result = build_and_push(params, _front_client(user, password))
        assert result["pushed"] and result["uploaded_bytes"] > 5 * 1024 * 1024
        assert front.expired >= 2, "tokens ran out during the push"
        assert set(front.token_requests) == {"Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
        # The base image's config was read through the redirect; storage never saw credentials.
        assert front.storage.log and all("Authorization" not in entry["headers"] for entry in front.storage.log)
        again = build_and_push(params, _front_client(user, password))
        assert not again["changed"] and again["digest"] == result["digest"]
    status, _headers, body = registry.request(
        "GET", f"/v2/kserve-models/modelcar-front/manifests/{result['tag']}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
    )  # fmt: skip
    assert status == 200 and "sha256:" + hashlib.sha256(body).hexdigest() == result["digest"]
    assert record["commit_sha"].startswith(result["tag"])


def test_credentials_are_withheld_from_a_token_service_on_another_host(registry, tmp_path):
    from localworld.registry import RegistryFront

    user, password = "modelcar", secrets.token_urlsafe(12)
    model_dir, _record = _model(tmp_path, "hf_" + secrets.token_hex(8))
    with RegistryFront(registry, token_auth=(user, password), realm_host="localhost") as front:
        base = f"{front.host}/standin/busybox@{registry.standins['busybox:v0.1']['digest']}"
        params = _params(model_dir, front, base)
        with pytest.raises(OciError, match=r"not sent to the token service at localhost:\d+"):
            build_and_push(params, _front_client(user, password))
        assert front.token_requests and set(front.token_requests) == {None}
        assert all(password not in json.dumps(entry) for entry in front.front.log + front.storage.log)


def test_push_reports_hashing_then_uploading_progress(registry, tmp_path):
    from ansible_collections.burst.golden_ami.plugins.module_utils._progress import ProgressFile

    class Recorded(ProgressFile):
        def __init__(self):
            super().__init__(str(tmp_path / "progress.json"), "modelcar_image", every=0)
            self.seen = []

        def update(self, line=None, force=False):
            super().update(line, force)
            self.seen.append(dict(self.snapshot))

    model_dir, record = _model(tmp_path, "hf_" + secrets.token_hex(8))
    params = _params(model_dir, registry, registry.standins["busybox:v0.1"]["pinned"])
    progress = Recorded()
    result = build_and_push(params, _client(registry), progress=progress)
    files_bytes = sum(entry["size"] for entry in record["files"])
    hashing = [s for s in progress.seen if s["state"] == "hashing"]
    uploading = [s for s in progress.seen if s["state"] == "uploading"]
    assert hashing[0]["bytes_done"] == 0 and hashing[-1]["bytes_done"] == hashing[-1]["bytes_total"] == files_bytes
    layer_bytes = sum(layer["size"] for layer in result["layers"])
    assert uploading[-1]["bytes_done"] == uploading[-1]["bytes_total"] == layer_bytes
    assert [s["bytes_done"] for s in uploading] == sorted(s["bytes_done"] for s in uploading), "it only grows"
    name = f"{params['repository']}:{result['tag']}"
    assert re.fullmatch(rf"{re.escape(name)}: uploading [\d.]+ MiB of [\d.]+ MiB \(\d+%\), .*/s", uploading[-1]["line"])
    assert json.loads((tmp_path / "progress.json").read_text())["line"] == f"{name}: pushed"

    again = Recorded()
    build_and_push(params, _client(registry), progress=again)
    assert not [s for s in again.seen if s["state"] == "uploading" and s["bytes_total"]], "nothing to upload"
    assert again.seen[-1]["line"] == f"{name}: nothing to push"


def test_role_pushes_with_progress_lines_and_changes_nothing_the_second_time(registry, tmp_path):
    """The modelcar role on localhost: an asynchronous push followed by job_progress, one line per poll."""
    root = Path(__file__).resolve().parents[2]
    model_dir, record = _model(tmp_path / "models", "hf_" + secrets.token_hex(8))
    playbook = tmp_path / "modelcar.yml"
    playbook.write_text(
        json.dumps([{
            "hosts": "localhost", "connection": "local", "gather_facts": False,
            "tasks": [
                {"name": "Push", "ansible.builtin.include_role": {"name": "burst.golden_ami.modelcar"}},
                {
                    "name": "Keep",
                    "ansible.builtin.copy": {
                        "content": "{{ modelcar_images | to_json }}",
                        "dest": str(tmp_path / "images.json"),
                        "mode": "0600",
                    },
                    "when": "not ansible_check_mode",
                },
            ],
        }])
    )  # fmt: skip
    extra = {
        "modelcar_models": [{"name": model_dir.name, "repository": f"kserve-models/role-{secrets.token_hex(3)}"}],
        "modelcar_root": str(model_dir.parent),
        "modelcar_registry": registry.host,
        "modelcar_base_image": registry.standins["busybox:v0.1"]["pinned"],
        "modelcar_split_mb": 1,
        "modelcar_progress_interval": 1,
        "modelcar_python": sys.executable,
        "ansible_python_interpreter": sys.executable,
        "__modelcar_progress_file": str(tmp_path / "progress" / "{{ __modelcar_name }}.json"),
    }
    env = {**os.environ, "ANSIBLE_CONFIG": str(root / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0",
           "ANSIBLE_ASYNC_DIR": str(tmp_path / "async"), "ANSIBLE_LOCALHOST_WARNING": "0"}  # fmt: skip

    def play(*args):
        return subprocess.run(
            ["ansible-playbook", "-i", "localhost,", str(playbook), "-e", json.dumps(extra), *args],
            capture_output=True, text=True, env=env, cwd=root, timeout=300, check=False,
        )  # fmt: skip

    checked = play("--check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Follow the push" in checked.stdout and not (tmp_path / "progress").exists(), "check mode: no job"
    first = play()
    assert first.returncode == 0, first.stdout + first.stderr
    name = f"{registry.host}/{extra['modelcar_models'][0]['repository']}:{record['commit_sha'][:12]}"
    assert f"(item={name}: pushed)" in first.stdout, first.stdout
    [pushed] = json.loads((tmp_path / "images.json").read_text())
    assert pushed["tag"] == record["commit_sha"][:12] and pushed["reference"].startswith(name.rsplit(":", 1)[0] + "@")
    assert re.search(r"localhost\s+: ok=\d+\s+changed=2", first.stdout), "the push and the file it was kept in"
    second = play()
    assert second.returncode == 0, second.stdout + second.stderr
    assert re.search(r"localhost\s+: ok=\d+\s+changed=0", second.stdout), second.stdout
    assert f"(item={name}: nothing to push)" in second.stdout
    assert not list((tmp_path / "async").glob("*")), "the finished jobs were cleaned up"
