"""Release gates on the artifact that ``ansible-galaxy collection build`` makes.

The collection is built from this checkout into a temporary directory, as a
release would build it, and the tarball is checked: what a user installs
holds the plugins, roles, playbooks and documents, and nothing of the
development tree (tests, virtualenvs, caches, scripts, benchmarks, local
state).

Then it is used as installed: the tarball goes into an empty collections
directory together with only the collections galaxy.yml declares (and what
those declare in turn), each made into an artifact from the copy in this
virtualenv's ``ansible`` bundle and installed with ``ansible-galaxy
--offline``. With ``ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=False`` the bundle is
invisible, so a bake (``burst.golden_ami.bake``, by its name) and a launch
and teardown on the local world fail if the collection uses anything it
does not declare.
"""

from __future__ import annotations

import json
import os
import sys
import tarfile
import uuid
from pathlib import Path, PurePosixPath

import boto3
import pytest
import yaml
from release_tools import ansible_env, load_hack, run

from localworld.bakes import bake_vars, new_bake_id

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The collections of the virtualenv's ansible bundle, which the installed world must not see.
BUNDLE = (
    Path(next(p for p in sys.path if (Path(p) / "ansible_collections" / "amazon").is_dir())) / "ansible_collections"
)
BAKE_TIMEOUT_S = 420
collection_artifact = load_hack("collection_artifact")

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


def test_artifact_leaves_the_awx_project_playbooks_out(members: list[str]) -> None:
    assert _tracked("awx/playbooks/*.yml"), "the AWX project has no thin playbooks"
    assert not [m for m in members if m.startswith("awx/playbooks")]


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


def _declared(galaxy_or_manifest: dict) -> dict[str, str]:
    return dict(galaxy_or_manifest.get("dependencies") or {})


def _dependency_artifact(fqcn: str, out: Path) -> tuple[Path, dict[str, str]]:
    """A collection of the bundle as the artifact ansible-galaxy would download (hack/collection_artifact.py)."""
    tarball, dependencies, _kept, _published = collection_artifact.from_installed(
        BUNDLE.joinpath(*fqcn.split(".")), out
    )
    return tarball, dependencies


def install_with_declared_dependencies(artifact: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Install the artifact and the closure of its declared dependencies into an empty directory.

    Returns the collections directory and the environment that sees only it (not the virtualenv's bundle).
    """
    collections = tmp_path / "collections"
    out = tmp_path / "artifacts"
    out.mkdir()
    with tarfile.open(artifact) as tar:
        member = tar.extractfile("MANIFEST.json")
        assert member is not None
        wanted = list(_declared(json.load(member)["collection_info"]))
    tarballs, seen = [], set()
    while wanted:
        fqcn = wanted.pop()
        if fqcn in seen:
            continue
        seen.add(fqcn)
        assert (BUNDLE / fqcn.replace(".", "/")).is_dir(), f"{fqcn} is declared but not in the ansible bundle"
        tarball, dependencies = _dependency_artifact(fqcn, out)
        tarballs.append(tarball)
        wanted.extend(dependencies)
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "AWS_"))}
    env.update(
        {
            "ANSIBLE_CONFIG": str(config),
            "ANSIBLE_COLLECTIONS_PATH": str(collections),
            "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    result = run(
        [str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "-p", str(collections), str(artifact)]
        + [str(t) for t in tarballs],
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return collections, env


def test_installed_artifact_bakes_launches_and_tears_down(artifact: Path, aws_env, builder_image, tmp_path) -> None:
    """The artifact with only its declared dependencies: a short bake, by FQCN, then a launch and a teardown."""
    collections, env = install_with_declared_dependencies(artifact, tmp_path)
    installed = sorted(
        f"{ns.name}.{name.name}"
        for ns in (collections / "ansible_collections").iterdir()
        for name in ns.iterdir()
        if (name / "MANIFEST.json").is_file()
    )
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert set(installed) >= {"burst.golden_ami", *galaxy["dependencies"]}, installed
    listed = run([str(BIN / "ansible-galaxy"), "collection", "list", "--format", "json"], env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    # What ansible-core itself holds (ansible.builtin, ansible._protomatter) aside, only the installed collections.
    visible = sorted(c for path in json.loads(listed.stdout).values() for c in path if not c.startswith("ansible."))
    assert visible == installed, f"the bundle is visible: {visible}"

    env.update(aws_env)
    env["ANSIBLE_SHOW_CUSTOM_STATS"] = "True"
    region = aws_env["AWS_REGION"]
    bucket = f"burst-manifests-{uuid.uuid4().hex[:8]}"
    boto3.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    bake_id = new_bake_id("artifact")
    variables = bake_vars(
        bake_id,
        bake_manifest_path=str(tmp_path / "manifest.json"),
        bake_manifest_s3_uri=f"s3://{bucket}/golden/",
    )
    (tmp_path / "bake.json").write_text(json.dumps(variables))
    bake = run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            "burst.golden_ami.bake",
            "-e",
            f"@{tmp_path / 'bake.json'}",
        ],
        env=env,
        cwd=tmp_path,
        timeout=BAKE_TIMEOUT_S,
    )
    assert bake.returncode == 0, f"the installed bake:\n{bake.stdout[-6000:]}\n{bake.stderr[-3000:]}"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    image_id = manifest["image_id"]
    ssm = boto3.client("ssm").get_parameter(Name=variables["bake_ssm_parameter"])["Parameter"]["Value"]
    assert ssm == image_id
    key = f"golden/{variables['bake_image_name']}.json"
    uploaded = json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    assert uploaded == manifest
    # set_stats: what a later job gets (ansible-playbook shows it as custom stats).
    assert "CUSTOM STATS" in bake.stdout and image_id in bake.stdout.split("CUSTOM STATS", 1)[1]

    job_id = f"artifact-{uuid.uuid4().hex[:8]}"
    launch_vars = {
        "burst_region": region,
        "burst_job_id": job_id,
        "burst_image_ssm_parameter": variables["bake_ssm_parameter"],
        "burst_instance_types": ["g6e.xlarge", "g5.2xlarge"],
        "burst_market": "spot",
        "burst_spot_max_price": "1.50",
        "burst_wait_timeout": 120,
    }
    (tmp_path / "launch.json").write_text(json.dumps(launch_vars))
    # launch.yml and teardown.yml run their modules with the controller's discovered Python: this one (boto3).
    env["ANSIBLE_PYTHON_INTERPRETER"] = sys.executable
    launch = run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            "burst.golden_ami.launch",
            "burst.golden_ami.teardown",
            "-e",
            f"@{tmp_path / 'launch.json'}",
        ],
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert launch.returncode == 0, (
        f"the installed launch and teardown:\n{launch.stdout[-5000:]}\n{launch.stderr[-2000:]}"
    )
    instances = [
        i
        for r in boto3.client("ec2").describe_instances(Filters=[{"Name": "tag:BurstJobId", "Values": [job_id]}])[
            "Reservations"
        ]
        for i in r["Instances"]
    ]
    assert len(instances) == 1 and instances[0]["ImageId"] == image_id
    assert instances[0]["State"]["Name"] == "terminated"
