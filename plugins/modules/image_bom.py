#!/usr/bin/python
# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_bom
short_description: Write the CycloneDX bill of materials of a machine image
version_added: 0.1.0
description:
  - Writes a bill of materials of the host, in CycloneDX 1.6 JSON, to O(path),
    listing its operating system, every installed OS package (name, version,
    architecture, source package, package URL), the container images given in
    O(container_images) by digest, and the models of O(models) as
    C(machine-learning-model) components, each file of a model a nested
    C(file) component with its SHA-256.
  - The image itself is the BOM's C(metadata.component), of type
    C(operating-system) (CycloneDX has no type for a machine image; that type
    covers an operating system whatever its deployment, image included).
  - The same host and inputs give the same document, so a second run reports
    no change. There is no timestamp unless O(timestamp) gives one, and the
    serial number is derived from the content.
  - OS packages come from C(dpkg-query) (Debian, Ubuntu) or C(rpm) (RHEL,
    Fedora, Amazon Linux). The rpm listing is untested on a real rpm host.
  - Standard library only; runs on the builder. Used by the bake
    (C(playbooks/tasks/bom.yml)).
author:
  - burst.golden_ami maintainers (@burst)
options:
  path:
    description: Where to write the bill of materials; its directory is created when missing.
    type: path
    default: /etc/burst/bom.cdx.json
  name:
    description: Name of the image (the C(metadata.component) of the BOM).
    type: str
    required: true
  version:
    description: Version of the image.
    type: str
    default: ""
  description:
    description: Description of the image.
    type: str
    default: ""
  properties:
    description:
      - Name and value pairs recorded on the image's component (for example C(burst:bake_id)).
      - Pairs with an empty value are left out.
    type: dict
    default: {}
  container_images:
    description:
      - Container images in the image, as the P(burst.golden_ami.image_cache#role) role's
        C(image_cache_manifest.images) lists them, each with C(name), C(reference), C(digest) and C(size).
      - An image without a digest (in C(digest) or in its reference) fails the module, naming it.
    type: list
    elements: dict
    default: []
  models:
    description:
      - The models manifest (C(<models root>/manifest.json), the
        P(burst.golden_ami.model_cache#role) role's C(model_cache_manifest)), C(format) and C(models),
        each model's record by directory name.
      - A file of a model without a sha256 fails the module, naming the model and the file.
    type: dict
    default: {}
  models_root:
    description: Directory that holds the models, recorded as each model's location.
    type: path
    default: /models
  package_manager:
    description:
      - Where OS packages come from. V(auto) uses C(dpkg-query) when present, else C(rpm).
      - V(none) lists no packages.
    type: str
    choices: [auto, dpkg, rpm, none]
    default: auto
  os_release:
    description: The os-release file that names the operating system and the distribution of package URLs.
    type: path
    default: /etc/os-release
  timestamp:
    description:
      - Time of the BOM (C(metadata.timestamp)), ISO 8601 such as C(2026-01-01T00:00:00Z).
      - Empty leaves it out, so that the document only changes when the host does.
    type: str
    default: ""
  tool_version:
    description: Version of this collection, recorded as the BOM's tool.
    type: str
    default: ""
  mode:
    description: Mode of the file.
    type: str
    default: "0644"
attributes:
  check_mode:
    support: full
    description: Builds the document and tells whether the file would change, writes nothing.
  diff_mode:
    support: none
    description: Returns the summary of the document instead of a diff.
  idempotent:
    support: full
    description: The file is rewritten only when the document changes.
notes:
  - Secrets are never recorded; model URLs are recorded without user, query string and fragment.
"""

EXAMPLES = r"""
- name: Write the bill of materials into the image
  burst.golden_ami.image_bom:
    path: /etc/burst/bom.cdx.json
    name: burst-golden-v1.0
    version: "1.0"
    properties:
      burst:bake_id: 20260101-abcdef
    container_images: "{{ image_cache_manifest.images }}"
    models: "{{ model_cache_manifest }}"
"""

RETURN = r"""
path:
  description: Path of the bill of materials.
  returned: always
  type: str
  sample: /etc/burst/bom.cdx.json
serial_number:
  description: Serial number of the document, derived from its content.
  returned: always
  type: str
  sample: urn:uuid:2f0c0f4e-3b1a-5c2d-8e4f-0a1b2c3d4e5f
bom:
  description: What the document lists.
  returned: always
  type: dict
  contains:
    packages:
      description: OS packages.
      type: int
      sample: 742
    container_images:
      description: Container images.
      type: int
      sample: 2
    models:
      description: Models.
      type: int
      sample: 1
    files:
      description: Files of the models.
      type: int
      sample: 14
"""

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.common.text.converters import to_native  # noqa: E402

from ansible_collections.burst.golden_ami.plugins.module_utils import _bom  # noqa: E402
from ansible_collections.burst.golden_ami.plugins.module_utils._files import read_json, write_json_atomic  # noqa: E402


def list_packages(module, manager, os_release):
    """The package components of the host, from dpkg-query or rpm."""
    if manager == "none":
        return []
    if manager == "auto":
        manager = next((m for m in ("dpkg", "rpm") if module.get_bin_path(_bom.package_command(m)[0])), None)
        if manager is None:
            module.fail_json(msg="Neither dpkg-query nor rpm found: set package_manager to none to list no packages")
    command = _bom.package_command(manager)
    command[0] = module.get_bin_path(command[0], required=True)
    rc, out, err = module.run_command(command)
    if rc != 0:
        module.fail_json(msg="%s failed (rc %d): %s" % (command[0], rc, err.strip()), rc=rc)
    return _bom.packages(manager, out, os_release)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", default="/etc/burst/bom.cdx.json"),
            name=dict(type="str", required=True),
            version=dict(type="str", default=""),
            description=dict(type="str", default=""),
            properties=dict(type="dict", default={}),
            container_images=dict(type="list", elements="dict", default=[]),
            models=dict(type="dict", default={}),
            models_root=dict(type="path", default="/models"),
            package_manager=dict(type="str", choices=["auto", "dpkg", "rpm", "none"], default="auto"),
            os_release=dict(type="path", default="/etc/os-release"),
            timestamp=dict(type="str", default=""),
            tool_version=dict(type="str", default=""),
            mode=dict(type="str", default="0644"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    path = params["path"]
    try:
        mode = int(params["mode"], 8)
    except ValueError:
        module.fail_json(msg="mode must be an octal string such as '0644', got %r" % params["mode"])

    os_release = _bom.read_os_release(params["os_release"])
    image = {
        "name": params["name"],
        "version": params["version"],
        "description": params["description"],
        "properties": params["properties"],
    }
    try:
        document = _bom.build(
            image,
            os_release,
            package_list=list_packages(module, params["package_manager"], os_release),
            container_images=params["container_images"],
            models=params["models"],
            models_root=params["models_root"],
            tool_version=params["tool_version"],
            timestamp=params["timestamp"],
        )
    except _bom.BomError as exc:
        module.fail_json(msg="Cannot write the bill of materials: %s" % exc, path=path)

    changed = read_json(path) != document
    if not changed:
        changed = module.set_mode_if_different(path, params["mode"], False)
    elif not module.check_mode:
        try:
            directory = os.path.dirname(path)
            if directory and not os.path.isdir(directory):
                os.makedirs(directory, mode=0o755)
            write_json_atomic(path, document, mode=mode)
        except OSError as exc:
            module.fail_json(msg="Could not write %s: %s" % (path, to_native(exc)), path=path)
    module.exit_json(changed=changed, path=path, serial_number=document["serialNumber"], bom=_bom.summary(document))


if __name__ == "__main__":
    main()
