"""Release gates on the documentation: ansible-doc and antsibull-changelog.

- ``ansible-doc`` renders every module and the inventory plugin, as a user
  reads them (``ansible-doc -t <type> burst.golden_ami.<name>``).
- ``antsibull-changelog lint`` accepts the fragments, and ``antsibull-changelog
  release`` + ``generate`` produce the changelog, on a copy of the collection.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from release_tools import ansible_env, run

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PLUGIN_DIRS = {"module": "plugins/modules", "inventory": "plugins/inventory"}


def _plugins() -> list[tuple[str, str]]:
    found = []
    for plugin_type, directory in PLUGIN_DIRS.items():
        for path in sorted((REPO / directory).glob("*.py")):
            if not path.name.startswith("_"):
                found.append((plugin_type, path.stem))
    return found


def test_every_plugin_is_found() -> None:
    plugins = _plugins()
    assert ("inventory", "burst_ec2") in plugins
    assert {"golden_ami", "golden_ami_prune", "burst_instance"} <= {name for kind, name in plugins if kind == "module"}


@pytest.fixture(scope="module")
def json_docs() -> dict[str, dict]:
    """One ``ansible-doc --json`` call per plugin type, for all its plugins."""
    docs: dict[str, dict] = {}
    for plugin_type in PLUGIN_DIRS:
        names = [f"burst.golden_ami.{name}" for kind, name in _plugins() if kind == plugin_type]
        result = run(
            [str(BIN / "ansible-doc"), "-t", plugin_type, "--json", *names],
            env=ansible_env(PAGER="cat"),
        )
        assert result.returncode == 0, f"ansible-doc -t {plugin_type} --json failed:\n{result.stderr}"
        assert "[WARNING]" not in result.stderr, result.stderr
        docs.update(json.loads(result.stdout))
    return docs


@pytest.mark.parametrize(("plugin_type", "name"), _plugins())
def test_ansible_doc_renders(plugin_type: str, name: str, json_docs: dict[str, dict]) -> None:
    fqcn = f"burst.golden_ami.{name}"
    result = run(
        [str(BIN / "ansible-doc"), "-t", plugin_type, fqcn],
        env=ansible_env(PAGER="cat"),
    )
    assert result.returncode == 0, f"ansible-doc -t {plugin_type} {fqcn} failed:\n{result.stderr}"
    assert "[WARNING]" not in result.stderr, result.stderr
    assert fqcn in result.stdout
    assert "EXAMPLES" in result.stdout

    entry = json_docs[fqcn]
    doc = entry["doc"]
    assert doc.get("short_description"), f"{fqcn} has no short_description"
    assert doc.get("description"), f"{fqcn} has no description"
    assert doc.get("options"), f"{fqcn} documents no options"
    for option, spec in doc["options"].items():
        assert spec.get("description"), f"{fqcn}: option {option} has no description"
    assert entry.get("examples", "").strip(), f"{fqcn} has no EXAMPLES"
    if plugin_type == "module":
        assert entry.get("return"), f"{fqcn} has no RETURN"
        assert {"check_mode", "diff_mode"} <= set(doc.get("attributes", {})), f"{fqcn} lacks attributes"


def test_every_plugin_has_a_row_in_the_modules_page() -> None:
    """docs/modules.md lists every module and plugin the collection ships, and nothing it does not ship."""
    text = (REPO / "docs" / "modules.md").read_text(encoding="utf-8")
    table = text.split("## Every plugin", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip().split()[0].strip("`") for line in table.splitlines() if line.startswith("| `")}
    shipped = {
        path.stem
        for directory in ("modules", "inventory", "callback", "filter", "lookup")
        for path in (REPO / "plugins" / directory).glob("*.py")
        if not path.name.startswith("_")
    }
    assert shipped - rows == set(), f"docs/modules.md does not list {sorted(shipped - rows)}"
    assert rows - shipped == set(), f"docs/modules.md lists plugins that do not exist: {sorted(rows - shipped)}"


def _changelog_env() -> dict[str, str]:
    env = ansible_env(PAGER="cat")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_changelog_fragments_lint() -> None:
    result = run(
        [str(BIN / "antsibull-changelog"), "lint"],
        cwd=REPO,
        env=_changelog_env(),
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_changelog_release_and_generate_on_a_copy(tmp_path: Path) -> None:
    """Release the pending fragments into a changelog, as a release would, without touching the checkout."""
    work = tmp_path / "ansible_collections" / "burst" / "golden_ami"
    work.mkdir(parents=True)
    for name in ("galaxy.yml", "README.md", "changelogs", "plugins", "roles", "playbooks", "meta"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, work / name)
    fragments = sorted(p.name for p in (work / "changelogs" / "fragments").glob("*.yml"))
    assert fragments, "no changelog fragment to release"
    version = yaml.safe_load((work / "galaxy.yml").read_text())["version"]
    env = _changelog_env()
    env["ANSIBLE_COLLECTIONS_PATH"] = str(tmp_path)

    release = run(
        [str(BIN / "antsibull-changelog"), "release", "--version", version, "--date", "2026-01-01"],
        cwd=work,
        env=env,
    )
    assert release.returncode == 0, release.stdout + release.stderr
    generate = run(
        [str(BIN / "antsibull-changelog"), "generate"],
        cwd=work,
        env=env,
    )
    assert generate.returncode == 0, generate.stdout + generate.stderr

    changelog = (work / "CHANGELOG.rst").read_text()
    assert f"v{version}" in changelog
    changes = yaml.safe_load((work / "changelogs" / "changelog.yaml").read_text())
    release_entry = changes["releases"][version]
    # Every fragment went into the release; the plugins were discovered by ansible-doc.
    assert set(release_entry.get("fragments", [])) == set(fragments)
    assert "burst.golden_ami.golden_ami" in changelog or "golden_ami" in json.dumps(release_entry.get("modules", []))
