"""The collection_version lookup: an installed collection's MANIFEST.json first, a checkout's galaxy.yml second."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleLookupError

from ansible_collections.burst.golden_ami.plugins.lookup.collection_version import LookupModule, collection_info

REPO = Path(__file__).resolve().parents[4]


def test_this_checkout_reads_its_galaxy_yml():
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert LookupModule().run([]) == [f"{galaxy['namespace']}.{galaxy['name']} {galaxy['version']}"]


def test_an_installed_collection_reads_its_manifest_before_galaxy_yml(tmp_path):
    info = {"namespace": "burst", "name": "golden_ami", "version": "9.8.7", "authors": []}
    (tmp_path / "MANIFEST.json").write_text(json.dumps({"collection_info": info}))
    (tmp_path / "galaxy.yml").write_text("namespace: burst\nname: golden_ami\nversion: 0.0.1\n")
    assert collection_info(str(tmp_path)) == {"namespace": "burst", "name": "golden_ami", "version": "9.8.7"}


def test_neither_file_names_the_directory(tmp_path):
    with pytest.raises(AnsibleLookupError, match=f"Neither MANIFEST.json nor galaxy.yml found in {tmp_path}"):
        collection_info(str(tmp_path))
