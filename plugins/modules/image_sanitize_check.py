#!/usr/bin/python
# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_sanitize_check
short_description: Verify that a machine is fit to be captured as an image
version_added: 0.1.0
description:
  - Checks, read-only, that paths which must not reach an image are gone,
    that files which must be empty are empty, that enough space is free, and
    scans the filesystem for secrets (Hugging Face tokens, AWS keys,
    container registry auths).
  - Fails when anything remains. A finding names the file, the kind of
    secret and its byte offset; the secret's value is never returned,
    logged or printed.
  - Used by the P(burst.golden_ami.image_sanitize#role) role as the last
    step before capture.
author:
  - burst.golden_ami maintainers (@burst)
options:
  absent:
    description: Paths, shell globs allowed, that must not exist.
    type: list
    elements: path
    default: []
  keep:
    description: Globs of paths that O(absent) may still match (for example C(/tmp/systemd-private-*)).
    type: list
    elements: path
    default: []
  empty:
    description:
      - Files that must be empty when they exist (for example
        C(/etc/machine-id), which is emptied rather than deleted), or
        directories that must hold no entries.
    type: list
    elements: path
    default: []
  scan_roots:
    description:
      - Directories (or files) to scan for secrets. Symbolic links are not
        followed. An empty list disables the scan.
    type: list
    elements: path
    default: [/etc, /root, /home, /opt, /srv, /var, /models, /usr/local]
  scan_excludes:
    description: Path prefixes the scan never enters.
    type: list
    elements: path
    default: [/proc, /sys, /dev, /run, /tmp, /var/tmp, /var/lib/docker, /var/lib/containerd]
  patterns:
    description: Kinds of secret to look for.
    type: list
    elements: str
    choices: [huggingface_token, aws_access_key_id, aws_secret_access_key, registry_auth, private_key]
    default: [huggingface_token, aws_access_key_id, aws_secret_access_key, registry_auth]
  max_file_size:
    description: Files larger than this many bytes (model weights, archives) are not scanned.
    type: int
    default: 16777216
  min_free:
    description: Minimum free bytes per path, for the filesystem that holds it.
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
    description: The module only reads; it runs the same in check mode.
  diff_mode:
    support: none
    description: Returns the lists of paths instead of a diff.
  idempotent:
    support: full
    description: The module only reads, and never reports a change.
notes:
  - Documentation examples such as AWS's C(AKIAIOSFODNN7EXAMPLE) are not
    reported.
"""

EXAMPLES = r"""
- name: Verify nothing that must not be captured remains
  burst.golden_ami.image_sanitize_check:
    absent:
      - /etc/ssh/ssh_host_*
      - /root/.bash_history
      - /root/.docker/config.json
    empty:
      - /etc/machine-id
    min_free:
      /: 1073741824
"""

RETURN = r"""
remaining:
  description: Paths that should be absent but exist.
  returned: always
  type: list
  elements: str
not_empty:
  description: Files or directories that should be empty but are not.
  returned: always
  type: list
  elements: str
secrets:
  description: Files that hold a secret, with its kind and byte offset. Never the value.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The file.
      type: str
    kind:
      description: The kind of secret, one of O(patterns).
      type: str
    offset:
      description: Byte offset of the first match.
      type: int
low_space:
  description: Paths whose filesystem has less free space than O(min_free) asks.
  returned: always
  type: list
  elements: dict
files_scanned:
  description: Number of files the secret scan read.
  returned: always
  type: int
problems:
  description: One line per finding, the same lines the failure message joins.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.burst.golden_ami.plugins.module_utils import _sanitize  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=dict(
            absent=dict(type="list", elements="path", default=[]),
            keep=dict(type="list", elements="path", default=[]),
            empty=dict(type="list", elements="path", default=[]),
            scan_roots=dict(type="list", elements="path", default=list(_sanitize.DEFAULT_SCAN_ROOTS)),
            scan_excludes=dict(type="list", elements="path", default=list(_sanitize.DEFAULT_SCAN_EXCLUDES)),
            patterns=dict(
                type="list",
                elements="str",
                choices=sorted(_sanitize.SECRET_PATTERNS),
                default=list(_sanitize.DEFAULT_PATTERNS),
            ),
            max_file_size=dict(type="int", default=16 * 1024 * 1024),
            min_free=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    try:
        min_free = {path: int(value) for path, value in module.params["min_free"].items()}
    except (TypeError, ValueError):
        module.fail_json(msg="min_free: every value must be a number of bytes")
    result = _sanitize.check(
        absent=module.params["absent"],
        empty=module.params["empty"],
        keep=module.params["keep"],
        scan_roots=module.params["scan_roots"],
        scan_excludes=module.params["scan_excludes"],
        patterns=module.params["patterns"],
        max_size=module.params["max_file_size"],
        min_free=min_free,
    )
    if result["problems"]:
        module.fail_json(
            msg="The machine is not fit for capture: " + "; ".join(result["problems"]),
            changed=False,
            **result,
        )
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
