"""The execution environment definition (ansible-builder 3) matches what is tested here.

- It ships the tarball that ``ansible-galaxy collection build`` names for the
  version in galaxy.yml, and the collections and libraries this collection
  is tested with satisfy its version ranges.
- ``ansible-builder create`` renders its build context (no image is built):
  the Containerfile installs the collection from the tarball.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from release_tools import run

REPO = Path(__file__).resolve().parents[2]
EE_FILE = REPO / "execution-environment.yml"
SITE = Path(sys.executable).parents[1] / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="module")
def ee() -> dict:
    return yaml.safe_load(EE_FILE.read_text())


@pytest.fixture(scope="module")
def galaxy() -> dict:
    return yaml.safe_load((REPO / "galaxy.yml").read_text())


def _tarball_name(galaxy: dict) -> str:
    return f"{galaxy['namespace']}-{galaxy['name']}-{galaxy['version']}.tar.gz"


def test_schema_version_and_base_image(ee: dict) -> None:
    assert ee["version"] == 3
    assert ee["images"]["base_image"]["name"]
    assert "python3" in ee["dependencies"]["python_interpreter"]["python_path"]
    assert "ansible-core" in ee["dependencies"]["ansible_core"]["package_pip"]
    assert "ansible-runner" in ee["dependencies"]["ansible_runner"]["package_pip"]


def test_ships_this_version_of_the_collection(ee: dict, galaxy: dict) -> None:
    tarball = _tarball_name(galaxy)
    files = [entry for entry in ee["dependencies"]["galaxy"]["collections"] if entry.get("type") == "file"]
    assert [Path(entry["name"]).name for entry in files] == [tarball], "bump the tarball with galaxy.yml's version"
    sources = [Path(entry["src"]).name for entry in ee["additional_build_files"]]
    assert tarball in sources


def _installed_collection_version(namespace: str, name: str) -> Version:
    manifests = list(SITE.glob(f"site-packages/ansible_collections/{namespace}/{name}/MANIFEST.json"))
    assert manifests, f"{namespace}.{name} is not in the ansible bundle of this virtualenv"
    return Version(json.loads(manifests[0].read_text())["collection_info"]["version"])


def test_collection_ranges_hold_the_tested_versions(ee: dict, galaxy: dict) -> None:
    wanted = {entry["name"]: entry.get("version", "*") for entry in ee["dependencies"]["galaxy"]["collections"]}
    for dependency, minimum in galaxy["dependencies"].items():
        assert dependency in wanted, f"the EE lacks {dependency}, a dependency in galaxy.yml"
        namespace, name = dependency.split(".")
        tested = _installed_collection_version(namespace, name)
        assert tested in SpecifierSet(wanted[dependency].replace(" ", "")), (dependency, tested, wanted[dependency])
        assert tested in SpecifierSet(minimum.replace(" ", "")), (dependency, tested, minimum)


def test_python_ranges_hold_the_tested_versions(ee: dict) -> None:
    from importlib.metadata import version

    python = dict(line.split(">=", 1) for line in ee["dependencies"]["python"])
    assert {"boto3", "botocore"} <= set(python)
    assert "huggingface_hub" not in " ".join(python), "huggingface_hub runs on the builder, not in the EE"
    for package, spec in python.items():
        assert Version(version(package)) in SpecifierSet(">=" + spec), (package, version(package), spec)


def test_ansible_builder_renders_the_build_context(ee: dict, galaxy: dict, tmp_path: Path) -> None:
    builder = shutil.which("ansible-builder")
    assert builder, "ansible-builder is not installed: requirements/dev.in must list it"
    work = tmp_path / "ee"
    (work / "build").mkdir(parents=True)
    shutil.copy2(EE_FILE, work / EE_FILE.name)
    # A stand-in tarball: create copies it into the context; only its name matters here.
    (work / "build" / _tarball_name(galaxy)).write_bytes(b"")
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
    assert "ansible-galaxy collection install" in text
    assert (context / "_build" / "collections" / _tarball_name(galaxy)).is_file()
    requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert f"collections/{_tarball_name(galaxy)}" in [c["name"] for c in requirements["collections"]]
    assert "boto3" in (context / "_build" / "requirements.txt").read_text()
