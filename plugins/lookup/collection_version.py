# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: collection_version
short_description: The name and version of this collection, as installed or checked out
version_added: 0.1.0
author:
  - burst.golden_ami maintainers (@burst)
description:
  - Returns C(namespace.name version) of the burst.golden_ami collection that holds this plugin, read from the
    C(MANIFEST.json) of an installed collection, or from C(galaxy.yml) in a checkout.
  - The playbooks record it in the image manifest, the bill of materials and the bake's fingerprint, wherever they
    run from (a checkout, an installed collection, an AWX project that imports the playbooks by name).
options: {}
"""

EXAMPLES = r"""
- name: Show the collection's version
  ansible.builtin.debug:
    msg: "{{ lookup('burst.golden_ami.collection_version') }}"
    # burst.golden_ami 0.1.0
"""

RETURN = r"""
_raw:
  description: One string, C(namespace.name version).
  type: list
  elements: str
"""

import json  # noqa: E402
import os  # noqa: E402

from ansible.errors import AnsibleLookupError  # noqa: E402
from ansible.plugins.lookup import LookupBase  # noqa: E402

# plugins/lookup/collection_version.py -> the collection's root directory.
COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def collection_info(root=COLLECTION_ROOT):
    """{namespace, name, version} from root's MANIFEST.json, or else its galaxy.yml."""
    manifest = os.path.join(root, "MANIFEST.json")
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as handle:
            info = json.load(handle)["collection_info"]
    else:
        import yaml  # ansible-core depends on PyYAML

        galaxy = os.path.join(root, "galaxy.yml")
        if not os.path.isfile(galaxy):
            raise AnsibleLookupError(f"Neither MANIFEST.json nor galaxy.yml found in {root}")
        with open(galaxy, encoding="utf-8") as handle:
            info = yaml.safe_load(handle)
    return {key: info[key] for key in ("namespace", "name", "version")}


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        info = collection_info()
        return [f"{info['namespace']}.{info['name']} {info['version']}"]
