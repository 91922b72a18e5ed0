"""The execution environment definition (ansible-builder 3) and the image built from it match what is tested here.

- It ships the tarball that ``ansible-galaxy collection build`` names for the
  version in galaxy.yml, and each collection this one depends on (galaxy.yml,
  and what they depend on in turn) as a tarball of exactly the version this
  collection is tested with; Ansible and ansible-runner are those of
  requirements/dev.txt, and the Python libraries' ranges hold the tested ones.
- Nothing comes from a registry or a Galaxy server: the base image is local
  and the collections are installed offline.
- ``ansible-builder create`` renders its build context (no image is built):
  the Containerfile installs the collections from the tarballs, with apt
  behind the base image's package manager front end.
- The image (hack/build-ee.sh, a no-op when it is current) holds exactly
  these collections, documents this one's modules, and has the Python
  libraries and system packages it declares.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version
from release_tools import run

REPO = Path(__file__).resolve().parents[2]
EE_FILE = REPO / "execution-environment.yml"
SITE = Path(sys.executable).parents[1] / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
EE_COLLECTIONS = "/usr/share/ansible/collections/ansible_collections"


@pytest.fixture(scope="module")
def ee() -> dict:
    return yaml.safe_load(EE_FILE.read_text())


@pytest.fixture(scope="module")
def galaxy() -> dict:
    return yaml.safe_load((REPO / "galaxy.yml").read_text())


def _tarball_name(galaxy: dict) -> str:
    return f"{galaxy['namespace']}-{galaxy['name']}-{galaxy['version']}.tar.gz"


def _tarballs(ee: dict) -> dict[str, str]:
    """``namespace.name`` -> version, from the definition's tarballs (``<namespace>-<name>-<version>.tar.gz``)."""
    shipped = {}
    for entry in ee["dependencies"]["galaxy"]["collections"]:
        assert entry.get("type") == "file", f"{entry['name']}: every collection comes from a tarball, not Galaxy"
        match = re.fullmatch(r"collections/([a-z0-9_]+)-([a-z0-9_]+)-(.+)\.tar\.gz", entry["name"])
        assert match, entry["name"]
        shipped[f"{match[1]}.{match[2]}"] = match[3]
    return shipped


def _installed_manifest(namespace: str, name: str) -> dict:
    manifests = list(SITE.glob(f"site-packages/ansible_collections/{namespace}/{name}/MANIFEST.json"))
    assert manifests, f"{namespace}.{name} is not in the ansible bundle of this virtualenv"
    return json.loads(manifests[0].read_text())["collection_info"]


def _dev_pin(package: str) -> str:
    pins = dict(
        line.split("==", 1) for line in (REPO / "requirements" / "dev.txt").read_text().splitlines() if "==" in line
    )
    return pins[package]


def test_schema_version_and_base_image(ee: dict) -> None:
    assert ee["version"] == 3
    base = ee["images"]["base_image"]["name"]
    # A local image (hack/build-ee-base.sh): no registry host in its name, nothing to pull.
    assert base == "burst-golden-ami/debian12-ee-base:latest"
    assert "python3" in ee["dependencies"]["python_interpreter"]["python_path"]
    assert "package_system" not in ee["dependencies"]["python_interpreter"], "python3 is in the base image"
    assert ee["options"]["package_manager_path"] == "/usr/local/sbin/ee-pkgmgr"
    assert "--offline" in ee["build_arg_defaults"]["ANSIBLE_GALAXY_CLI_COLLECTION_OPTS"].split()
    for system in ee["dependencies"]["system"]:
        assert system.endswith("[platform:dpkg]"), f"{system}: the base image is Debian"


def test_ansible_is_the_tested_version(ee: dict) -> None:
    assert ee["dependencies"]["ansible_core"]["package_pip"] == f"ansible-core=={_dev_pin('ansible-core')}"
    assert ee["dependencies"]["ansible_runner"]["package_pip"] == f"ansible-runner=={_dev_pin('ansible-runner')}"


def test_ships_this_version_of_the_collection(ee: dict, galaxy: dict) -> None:
    tarball = _tarball_name(galaxy)
    assert f"collections/{tarball}" in [c["name"] for c in ee["dependencies"]["galaxy"]["collections"]], (
        "bump the tarball with galaxy.yml's version"
    )
    sources = [entry["src"] for entry in ee["additional_build_files"]]
    assert any(fnmatch.fnmatch(f".cache/ee/collections/{tarball}", src) for src in sources), sources
    assert ee["options"]["tags"] == [f"burst-golden-ami-ee:{galaxy['version']}"]


def test_collections_are_the_tested_versions(ee: dict, galaxy: dict) -> None:
    shipped = _tarballs(ee)
    assert shipped.pop(f"{galaxy['namespace']}.{galaxy['name']}") == galaxy["version"]
    # Every dependency, and theirs in turn, at the version installed here; galaxy.yml's ranges hold them.
    needed: dict[str, str] = {}
    pending = dict(galaxy["dependencies"])
    while pending:
        dependency, wanted = pending.popitem()
        namespace, name = dependency.split(".")
        info = _installed_manifest(namespace, name)
        tested = Version(info["version"])
        assert Requirement(f"x{wanted.replace(' ', '')}").specifier.contains(tested), (dependency, tested, wanted)
        needed[dependency] = info["version"]
        pending.update({d: r for d, r in info["dependencies"].items() if d not in needed})
    assert shipped == needed, "execution-environment.yml must ship exactly the tested collections"


def test_python_ranges_hold_the_tested_versions(ee: dict) -> None:
    from importlib.metadata import version

    python = {Requirement(line).name: Requirement(line) for line in ee["dependencies"]["python"]}
    assert set(python) == {"boto3", "botocore", "requests"}
    assert "huggingface_hub" not in " ".join(python), "huggingface_hub runs on the builder, not in the EE"
    for package, requirement in python.items():
        assert Version(version(package)) in requirement.specifier, (package, version(package), requirement)
        assert any(spec.operator == "<" for spec in requirement.specifier), f"{package}: give an upper bound"


def test_ansible_builder_renders_the_build_context(ee: dict, galaxy: dict, tmp_path: Path) -> None:
    builder = shutil.which("ansible-builder")
    assert builder, "ansible-builder is not installed: requirements/dev.in must list it"
    work = tmp_path / "ee"
    (work / ".cache" / "ee" / "collections").mkdir(parents=True)
    shutil.copy2(EE_FILE, work / EE_FILE.name)
    # Stand-in tarballs: create copies them into the context; only their names matter here.
    names = [Path(entry["name"]).name for entry in ee["dependencies"]["galaxy"]["collections"]]
    for name in names:
        (work / ".cache" / "ee" / "collections" / name).write_bytes(b"")
    result = run(
        [builder, "create", "-f", EE_FILE.name, "--context", str(work / "context")],
        cwd=work,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No matches" not in result.stdout + result.stderr
    context = work / "context"
    containerfile = next(p for p in (context / "Dockerfile", context / "Containerfile") if p.exists())
    text = containerfile.read_text()
    assert f'ARG EE_BASE_IMAGE="{ee["images"]["base_image"]["name"]}"' in text
    assert 'ARG ANSIBLE_GALAXY_CLI_COLLECTION_OPTS="--offline"' in text
    assert 'ARG PKGMGR="/usr/local/sbin/ee-pkgmgr"' in text
    assert "ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS" in text
    assert sorted(p.name for p in (context / "_build" / "collections").iterdir()) == sorted(names)
    requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert f"collections/{_tarball_name(galaxy)}" in [c["name"] for c in requirements["collections"]]
    assert "boto3" in (context / "_build" / "requirements.txt").read_text()
    assert "openssh-client [platform:dpkg]" in (context / "_build" / "bindep.txt").read_text()


@pytest.fixture(scope="module")
def ee_image(galaxy: dict) -> str:
    """The image of this checkout: hack/build-ee.sh builds it unless an image of the same recipe exists."""
    result = run([str(REPO / "hack" / "build-ee.sh")], cwd=REPO, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return f"burst-golden-ami-ee:{galaxy['version']}"


def _in_image(image: str, *command: str) -> str:
    result = run(["docker", "run", "--rm", "--network=none", image, *command], timeout=120)
    assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result.stdout


@pytest.mark.docker
@pytest.mark.slow
def test_image_holds_exactly_these_collections(ee: dict, ee_image: str) -> None:
    listing = json.loads(_in_image(ee_image, "ansible-galaxy", "collection", "list", "--format", "json"))
    installed = {
        name: info["version"]
        for path, found in listing.items()
        if path == EE_COLLECTIONS
        for name, info in found.items()
    }
    assert installed == _tarballs(ee)
    # Only ansible-core's own internal collection besides.
    others = {name for path, found in listing.items() if path != EE_COLLECTIONS for name in found}
    assert others <= {"ansible._protomatter"}, others
    doc = _in_image(ee_image, "ansible-doc", "burst.golden_ami.golden_ami")
    assert f"({EE_COLLECTIONS}/burst/golden_ami/plugins/modules/golden_ami.py)" in doc
    assert "Creates an EC2 image" in doc


@pytest.mark.docker
@pytest.mark.slow
def test_image_has_the_declared_libraries_and_packages(ee: dict, ee_image: str) -> None:
    versions = _in_image(ee_image, "ansible-runner", "--version") + _in_image(ee_image, "ansible", "--version")
    assert _dev_pin("ansible-runner") in versions and f"[core {_dev_pin('ansible-core')}]" in versions
    script = (
        "import json, importlib.metadata as m; "
        "print(json.dumps({p: m.version(p) for p in ('boto3', 'botocore', 'requests')}))"
    )
    found = json.loads(_in_image(ee_image, "python3", "-c", script))
    for line in ee["dependencies"]["python"]:
        requirement = Requirement(line)
        assert Version(found[requirement.name]) in requirement.specifier, (requirement, found)
    # The system packages came from bindep and apt during the build: the base image has neither.
    base = ee["images"]["base_image"]["name"]
    for tool in ("ssh", "rsync"):
        check = ["sh", "-c", f"command -v {tool}"]
        assert run(["docker", "run", "--rm", "--network=none", base, *check], timeout=60).returncode != 0, tool
        assert _in_image(ee_image, *check).strip() == f"/usr/bin/{tool}"
