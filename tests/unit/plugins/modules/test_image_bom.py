"""image_bom run as Ansible runs it: the CycloneDX document, its schema, idempotence, check mode, bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from ansible_collections.burst.golden_ami.plugins.module_utils import _bom

MODULE = "ansible_collections.burst.golden_ami.plugins.modules.image_bom"

DIGEST_VLLM = "sha256:" + "a1" * 32
DIGEST_TEI = "sha256:" + "b2" * 32
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SHA_WEIGHTS = "c3" * 32
SHA_CONFIG = "d4" * 32

OS_RELEASE = """\
PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
"""

# name, version, architecture, source, source version, section, status (as DPKG_FORMAT asks).
DPKG_LINES = [
    ("libc6", "2.39-0ubuntu8.4", "amd64", "glibc", "2.39-0ubuntu8.4", "libs", "ii "),
    ("curl", "8.5.0-2ubuntu10.6", "amd64", "curl", "8.5.0-2ubuntu10.6", "web", "ii "),
    ("g++-13", "13.3.0-6ubuntu2~24.04", "amd64", "gcc-13", "13.3.0-6ubuntu2~24.04", "devel", "ii "),
    ("libpam0g", "1:1.5.3-5ubuntu5.1", "amd64", "pam", "1.5.3-5ubuntu5.1", "libs", "ii "),
    ("removed-tool", "1.0-1", "amd64", "removed-tool", "1.0-1", "utils", "rc "),
    ("python3", "3.12.3-0ubuntu2", "amd64", "python3-defaults", "3.12.3-0ubuntu2", "python", "hi "),
]

IMAGES = [
    {"name": "vllm", "reference": "vllm/vllm-openai:v0.6.3", "digest": DIGEST_VLLM, "size": 8123456789},
    {"name": "tei", "reference": "ghcr.io/huggingface/text-embeddings-inference:1.5", "digest": DIGEST_TEI, "size": 1},
]


def hub_record():
    return {
        "format": 1,
        "name": "Qwen--Qwen2.5-7B-Instruct",
        "identity": {"source": "hub", "repo_id": "Qwen/Qwen2.5-7B-Instruct"},
        "source": "hub",
        "repo_id": "Qwen/Qwen2.5-7B-Instruct",
        "revision": "main",
        "commit_sha": COMMIT,
        "version": COMMIT,
        "files": [
            {"path": "model.safetensors", "size": 100, "sha256": SHA_WEIGHTS, "verified_with": "sha256"},
            {"path": "config.json", "size": 10, "sha256": SHA_CONFIG, "verified_with": "git_oid"},
        ],
    }


def url_record():
    return {
        "format": 1,
        "name": "tiny",
        "source": "url",
        "url": "https://cdn.example.com/tiny.bin?X-Amz-Signature=topsecretsignature",
        "version": SHA_WEIGHTS,
        "files": [{"path": "tiny.bin", "size": 5, "sha256": SHA_WEIGHTS, "verified_with": "sha256"}],
    }


def manifest(*records):
    return {"format": 1, "models": {record["name"]: record for record in records}}


@pytest.fixture
def fake_dpkg(tmp_path: Path) -> Path:
    """A directory whose dpkg-query prints DPKG_LINES, whatever format it is asked for."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    listing = tmp_path / "dpkg-listing"
    listing.write_text("".join("\t".join(fields) + "\n" for fields in DPKG_LINES))
    script = bin_dir / "dpkg-query"
    script.write_text('#!/bin/sh\n[ "$1" = -W ] && [ "$2" = -f ] || exit 2\nexec cat %s\n' % listing)
    script.chmod(0o755)
    return bin_dir


@pytest.fixture
def os_release(tmp_path: Path) -> Path:
    path = tmp_path / "os-release"
    path.write_text(OS_RELEASE)
    return path


def run_module(args: dict, check_mode: bool = False, bin_dir: Path | None = None) -> dict:
    payload = {"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode}}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    if bin_dir is not None:
        env["PATH"] = str(bin_dir) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", MODULE], input=json.dumps(payload), capture_output=True, text=True, env=env, check=False
    )
    return json.loads(proc.stdout)


def module_args(tmp_path: Path, os_release: Path, **extra) -> dict:
    args = {
        "path": str(tmp_path / "image" / "bom.cdx.json"),
        "name": "burst-golden-v1.0",
        "version": "1.0",
        "properties": {"burst:bake_id": "b-1", "burst:profile": ""},
        "container_images": IMAGES,
        "models": manifest(hub_record(), url_record()),
        "os_release": str(os_release),
        "package_manager": "dpkg",
        "tool_version": "0.1.0",
    }
    args.update(extra)
    return args


def assert_valid(document: dict):
    """The document passes the CycloneDX 1.6 JSON schema, and each purl is in canonical form."""
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(document))
    assert error is None, "%s at %s" % (error.data.message, list(error.data.absolute_path))
    for component in document["components"]:
        if "purl" in component:
            assert PackageURL.from_string(component["purl"]).to_string() == component["purl"]


def by_ref(document: dict) -> dict:
    return {component["bom-ref"]: component for component in document["components"]}


def test_bill_of_materials_from_dpkg_images_and_models(tmp_path, fake_dpkg, os_release):
    result = run_module(module_args(tmp_path, os_release), bin_dir=fake_dpkg)
    assert result["changed"] is True, result
    assert result["bom"] == {"packages": 5, "container_images": 2, "models": 2, "files": 3}
    document = json.loads(Path(result["path"]).read_text())
    assert_valid(document)
    assert document["bomFormat"] == "CycloneDX" and document["specVersion"] == "1.6"
    assert (
        re.fullmatch(r"urn:uuid:[0-9a-f-]{36}", document["serialNumber"])
        and result["serial_number"] == (document["serialNumber"])
    )
    assert "timestamp" not in document["metadata"]
    root = document["metadata"]["component"]
    assert root["type"] == "operating-system" and root["name"] == "burst-golden-v1.0" and root["version"] == "1.0"
    assert root["properties"] == [{"name": "burst:bake_id", "value": "b-1"}]
    assert document["metadata"]["tools"]["components"][0]["name"] == "burst.golden_ami"
    assert document["metadata"]["tools"]["components"][0]["version"] == "0.1.0"

    components = by_ref(document)
    distro = components["os/ubuntu-24.04"]
    assert distro["type"] == "operating-system" and distro["version"] == "24.04"
    libc = components["pkg:deb/ubuntu/libc6@2.39-0ubuntu8.4?arch=amd64&distro=ubuntu-24.04&upstream=glibc"]
    assert libc["type"] == "library" and libc["name"] == "libc6"
    assert {"name": "burst:package:source", "value": "glibc"} in libc["properties"]
    curl = components["pkg:deb/ubuntu/curl@8.5.0-2ubuntu10.6?arch=amd64&distro=ubuntu-24.04"]
    assert curl["type"] == "application"
    assert curl["properties"] == [{"name": "burst:package:arch", "value": "amd64"}]
    # An epoch stays in the version; the source's version differs, so upstream names it.
    assert (
        "pkg:deb/ubuntu/libpam0g@1:1.5.3-5ubuntu5.1?arch=amd64&distro=ubuntu-24.04&upstream=pam%401.5.3-5ubuntu5.1"
        in components
    )
    assert (
        "pkg:deb/ubuntu/g%2B%2B-13@13.3.0-6ubuntu2~24.04?arch=amd64&distro=ubuntu-24.04&upstream=gcc-13" in components
    )
    assert not [ref for ref in components if "removed-tool" in ref]

    vllm = components["container/vllm"]
    assert vllm["type"] == "container" and vllm["version"] == DIGEST_VLLM
    assert vllm["purl"] == ("pkg:oci/vllm-openai@%s?repository_url=docker.io/vllm/vllm-openai&tag=v0.6.3" % DIGEST_VLLM)
    assert vllm["hashes"] == [{"alg": "SHA-256", "content": "a1" * 32}]
    tei = components["container/tei"]
    assert "repository_url=ghcr.io/huggingface/text-embeddings-inference" in tei["purl"]

    model = components["model/Qwen--Qwen2.5-7B-Instruct"]
    assert model["type"] == "machine-learning-model"
    assert (model["group"], model["name"], model["version"]) == ("Qwen", "Qwen2.5-7B-Instruct", COMMIT)
    assert model["purl"] == "pkg:huggingface/Qwen/Qwen2.5-7B-Instruct@" + COMMIT
    assert {"name": "burst:model:revision", "value": "main"} in model["properties"]
    files = {entry["name"]: entry for entry in model["components"]}
    assert files["model.safetensors"]["type"] == "file"
    assert files["model.safetensors"]["hashes"] == [{"alg": "SHA-256", "content": SHA_WEIGHTS}]
    assert files["config.json"]["hashes"] == [{"alg": "SHA-256", "content": SHA_CONFIG}]

    tiny = components["model/tiny"]
    assert tiny["externalReferences"] == [{"type": "distribution", "url": "https://cdn.example.com/tiny.bin"}]
    assert "topsecretsignature" not in Path(result["path"]).read_text()

    dependencies = {entry["ref"]: entry["dependsOn"] for entry in document["dependencies"]}
    assert dependencies["image/burst-golden-v1.0"] == [
        "os/ubuntu-24.04",
        "container/vllm",
        "container/tei",
        "model/Qwen--Qwen2.5-7B-Instruct",
        "model/tiny",
    ]
    assert len(dependencies["os/ubuntu-24.04"]) == 5


def test_this_machines_dpkg(tmp_path):
    if not shutil.which("dpkg-query"):
        pytest.skip("no dpkg-query on this machine")
    path = tmp_path / "bom.cdx.json"
    result = run_module({"path": str(path), "name": "host", "package_manager": "auto"})
    assert result["changed"] is True, result
    listing = subprocess.run(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\n"], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    installed = [status for status in listing if len(status) > 1 and status[1] not in "nc"]
    assert result["bom"]["packages"] == len(installed) > 0
    document = json.loads(path.read_text())
    assert_valid(document)
    assert any(component["name"] == "dpkg" for component in document["components"])


def test_second_run_changes_nothing(tmp_path, fake_dpkg, os_release):
    args = module_args(tmp_path, os_release, timestamp="2026-01-01T00:00:00Z")
    first = run_module(args, bin_dir=fake_dpkg)
    path = Path(first["path"])
    before = (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino)
    second = run_module(args, bin_dir=fake_dpkg)
    assert second["changed"] is False and second["serial_number"] == first["serial_number"]
    assert (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino) == before
    assert json.loads(path.read_text())["metadata"]["timestamp"] == "2026-01-01T00:00:00Z"

    other = run_module(dict(args, timestamp="2026-01-02T00:00:00Z"), bin_dir=fake_dpkg)
    assert other["changed"] is True and other["serial_number"] != first["serial_number"]

    path.chmod(0o600)
    fixed = run_module(dict(args, timestamp="2026-01-02T00:00:00Z"), bin_dir=fake_dpkg)
    assert fixed["changed"] is True and oct(path.stat().st_mode & 0o777) == "0o644"


def test_check_mode_writes_nothing(tmp_path, fake_dpkg, os_release):
    args = module_args(tmp_path, os_release)
    result = run_module(args, check_mode=True, bin_dir=fake_dpkg)
    assert result["changed"] is True and result["bom"]["files"] == 3
    assert not (tmp_path / "image").exists()

    run_module(args, bin_dir=fake_dpkg)
    before = Path(args["path"]).read_bytes()
    result = run_module(dict(args, version="2.0"), check_mode=True, bin_dir=fake_dpkg)
    assert result["changed"] is True
    assert Path(args["path"]).read_bytes() == before
    assert sorted(os.listdir(tmp_path / "image")) == ["bom.cdx.json"]


def test_model_file_without_sha256_is_named(tmp_path, fake_dpkg, os_release):
    record = hub_record()
    del record["files"][1]["sha256"]
    result = run_module(module_args(tmp_path, os_release, models=manifest(record)), bin_dir=fake_dpkg)
    assert result["failed"] is True
    assert "model 'Qwen--Qwen2.5-7B-Instruct'" in result["msg"] and "'config.json' has no sha256" in result["msg"]
    assert not (tmp_path / "image").exists()


def test_container_image_without_digest_is_named(tmp_path, fake_dpkg, os_release):
    images = [IMAGES[0], {"name": "tei", "reference": "ghcr.io/huggingface/text-embeddings-inference:1.5"}]
    result = run_module(module_args(tmp_path, os_release, container_images=images), bin_dir=fake_dpkg)
    assert result["failed"] is True
    assert "container image 'tei' (ghcr.io/huggingface/text-embeddings-inference:1.5) has no digest" in result["msg"]
    assert not (tmp_path / "image").exists()


def test_digest_in_the_reference_is_enough(tmp_path, os_release):
    image = {"name": "base", "reference": "debian@" + DIGEST_VLLM}
    args = module_args(tmp_path, os_release, container_images=[image], models={}, package_manager="none")
    result = run_module(args)
    assert result["bom"] == {"packages": 0, "container_images": 1, "models": 0, "files": 0}
    document = json.loads(Path(result["path"]).read_text())
    assert_valid(document)
    assert by_ref(document)["container/base"]["purl"] == (
        "pkg:oci/debian@%s?repository_url=docker.io/library/debian" % DIGEST_VLLM
    )


def test_failing_package_listing_is_reported(tmp_path, fake_dpkg, os_release):
    (fake_dpkg / "dpkg-query").write_text("#!/bin/sh\necho 'database is locked' >&2\nexit 2\n")
    result = run_module(module_args(tmp_path, os_release), bin_dir=fake_dpkg)
    assert result["failed"] is True and "database is locked" in result["msg"]


def test_rpm_listing():
    """The rpm listing's parser (not run against a real rpm database here)."""
    output = (
        "bash\t(none)\t5.2.26\t3.fc40\tx86_64\tbash-5.2.26-3.fc40.src.rpm\tUnspecified\n"
        "openssl-libs\t1\t3.2.2\t3.fc40\tx86_64\topenssl-3.2.2-3.fc40.src.rpm\tSystem Environment/Libraries\n"
        "gpg-pubkey\t(none)\ta15b79cc\t63d04c2c\t(none)\t(none)\tPublic Keys\n"
    )
    release = {"ID": "fedora", "VERSION_ID": "40"}
    packages = {component["name"]: component for component in _bom.packages("rpm", output, release)}
    assert packages["bash"]["purl"] == "pkg:rpm/fedora/bash@5.2.26-3.fc40?arch=x86_64&distro=fedora-40"
    assert (
        packages["openssl-libs"]["purl"]
        == "pkg:rpm/fedora/openssl-libs@3.2.2-3.fc40?arch=x86_64&distro=fedora-40&epoch=1"
    )
    assert packages["openssl-libs"]["version"] == "1:3.2.2-3.fc40" and packages["openssl-libs"]["type"] == "library"
    assert packages["gpg-pubkey"]["purl"] == "pkg:rpm/fedora/gpg-pubkey@a15b79cc-63d04c2c?distro=fedora-40"
    for component in packages.values():
        assert PackageURL.from_string(component["purl"]).to_string() == component["purl"]
