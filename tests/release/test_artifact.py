"""Release gates on the artifact that ``ansible-galaxy collection build`` makes.

The collection is built from this checkout into a temporary directory, as a
release would build it, and the tarball is checked: what a user installs
holds the plugins, roles, playbooks and documents, and nothing of the
development tree (tests, virtualenvs, caches, scripts, benchmarks, local
state).
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path, PurePosixPath

import pytest
import yaml
from release_tools import ansible_env, run

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Paths (or any path component) that must never be shipped.
FORBIDDEN_TOP_LEVEL = {
    ".venv",
    ".world",
    ".cache",
    ".ci",
    ".ansible",
    ".pytest_cache",
    ".ruff_cache",
    ".git",
    ".gitignore",
    ".yamllint",
    ".ansible-lint",
    "ansible.cfg",
    "pyproject.toml",
    "Makefile",
    "requirements",
    "hack",
    "benchmarks",
    "tests",
    "molecule",
    "build",
}
FORBIDDEN_ANYWHERE = {"__pycache__", ".pytest_cache", ".ruff_cache", ".cache", ".venv", ".world"}
FORBIDDEN_SUFFIXES = (".pyc", ".pyo", ".tar.gz", ".retry")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("galaxy-build")
    result = run(
        [str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(REPO)],
        env=ansible_env(),
    )
    assert result.returncode == 0, f"ansible-galaxy collection build failed:\n{result.stdout}\n{result.stderr}"
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    tarball = out / f"{galaxy['namespace']}-{galaxy['name']}-{galaxy['version']}.tar.gz"
    assert tarball.is_file(), f"no {tarball.name} in {sorted(p.name for p in out.iterdir())}"
    return tarball


@pytest.fixture(scope="module")
def members(artifact: Path) -> list[str]:
    with tarfile.open(artifact) as tar:
        return [m.name.rstrip("/") for m in tar.getmembers()]


@pytest.fixture(scope="module")
def manifest(artifact: Path) -> dict:
    with tarfile.open(artifact) as tar:
        member = tar.extractfile("MANIFEST.json")
        assert member is not None
        return json.load(member)


def test_artifact_ships_nothing_of_the_development_tree(members: list[str]) -> None:
    shipped = []
    for name in members:
        parts = PurePosixPath(name).parts
        if (
            parts[0] in FORBIDDEN_TOP_LEVEL
            or FORBIDDEN_ANYWHERE.intersection(parts)
            or name.endswith(FORBIDDEN_SUFFIXES)
            or PurePosixPath(name).match("manifest*.json")
        ):
            shipped.append(name)
    assert not shipped, (
        "the artifact ships development files; add them to build_ignore in galaxy.yml:\n  " + "\n  ".join(shipped)
    )


def _tracked(pattern: str) -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in REPO.glob(pattern) if "__pycache__" not in p.parts)


@pytest.mark.parametrize(
    "pattern",
    [
        "plugins/modules/*.py",
        "plugins/module_utils/*.py",
        "plugins/inventory/*.py",
        "roles/*/meta/argument_specs.yml",
        "roles/*/tasks/main.yml",
        "roles/*/README.md",
        "playbooks/*.yml",
        "playbooks/vars/*.yml",
        "docs/iam/*.json",
        "awx/*.yml",
    ],
)
def test_artifact_ships_the_collection(members: list[str], pattern: str) -> None:
    expected = _tracked(pattern)
    assert expected, f"nothing in the checkout matches {pattern}"
    missing = sorted(set(expected) - set(members))
    assert not missing, f"the artifact lacks {missing}"


def test_artifact_ships_the_release_metadata(members: list[str], manifest: dict) -> None:
    for name in ("MANIFEST.json", "FILES.json", "README.md", "meta/runtime.yml", "changelogs/changelog.yaml"):
        assert name in members, f"the artifact lacks {name}"
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"]) == ("burst", "golden_ami")
    assert set(info["dependencies"]) >= {"amazon.aws", "community.docker"}, info["dependencies"]
    assert info["license"], "galaxy.yml names no license"
    assert info["repository"] and info["documentation"] and info["issues"]


def test_artifact_installs_and_its_playbooks_parse(artifact: Path, tmp_path: Path) -> None:
    """Install the tarball beside the dependencies and syntax-check the shipped playbooks by FQCN."""
    collections = tmp_path / "collections"
    env = ansible_env()
    # Only the installed copy, then the bundle's amazon.aws and community.docker (found on sys.path).
    env["ANSIBLE_COLLECTIONS_PATH"] = str(collections)
    empty_config = tmp_path / "ansible.cfg"
    empty_config.write_text("[defaults]\n")
    env["ANSIBLE_CONFIG"] = str(empty_config)
    result = run(
        [
            str(BIN / "ansible-galaxy"),
            "collection",
            "install",
            "--no-deps",
            "--offline",
            "--force",
            "-p",
            str(collections),
            str(artifact),
        ],
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    installed = collections / "ansible_collections" / "burst" / "golden_ami"
    assert (installed / "MANIFEST.json").is_file()
    playbooks = [f"burst.golden_ami.{name}" for name in ("bake", "bake_many", "cleanup", "launch", "teardown")]
    check = run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", "localhost,", *playbooks],
        env=env,
        cwd=tmp_path,
    )
    assert check.returncode == 0, f"the artifact's playbooks:\n{check.stdout}\n{check.stderr}"
    # Each FQCN resolved to the installed copy, not to the checkout.
    for name in ("bake", "bake_many", "cleanup", "launch", "teardown"):
        assert f"playbook: {installed}/playbooks/{name}.yml" in check.stdout, check.stdout
