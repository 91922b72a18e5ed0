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
    scans the filesystem for secrets.
  - The scan reads every regular file under O(scan_roots), of any size, as
    a stream of overlapping blocks (a secret across two blocks is found),
    Docker's and containerd's data directories included, since image layers
    and container configurations can carry secrets. It looks for private
    keys (PEM, OpenSSH, PGP, PuTTY), AWS access key ids and secret keys,
    Hugging Face, GitHub (classic and fine-grained), NGC, OpenAI and Slack
    tokens, Docker C(config.json) auths and, in files that hold credentials
    by convention (C(.aws/credentials), C(.netrc), C(.env) files, shell
    histories and the like), values named like a credential that look
    random. O(literals) adds exact strings, such as a token the build was
    given.
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
    default: [/proc, /sys, /dev, /run, /tmp, /var/tmp]
  scan_skip:
    description:
      - Globs of files the scan does not read, matched against the full
        path (C(*) crosses C(/)), for example C(*.safetensors) where the
        weights were verified against their source.
    type: list
    elements: str
    default: []
  patterns:
    description:
      - Kinds of secret to look for. C(high_entropy_secret) is the check of
        credential-named values in credential files.
    type: list
    elements: str
    choices:
      - aws_access_key_id
      - aws_secret_access_key
      - github_token
      - high_entropy_secret
      - huggingface_token
      - ngc_api_key
      - openai_api_key
      - private_key
      - registry_auth
      - slack_token
    default:
      - aws_access_key_id
      - aws_secret_access_key
      - github_token
      - huggingface_token
      - ngc_api_key
      - openai_api_key
      - private_key
      - registry_auth
      - slack_token
      - high_entropy_secret
  literals:
    description:
      - Exact strings (at least 8 bytes each) to look for as well, such as
        a token given to the build; a match is reported as kind
        C(given_secret). Never logged.
      - The file Ansible runs this module from (C(AnsiballZ_image_sanitize_check.py)
        in the task's temporary directory, which holds the module's arguments,
        these strings included, and which Ansible removes after the task) is
        not read.
    type: list
    elements: str
    default: []
  max_file_size:
    description: Files larger than this many bytes are not scanned; V(0) reads files of every size.
    type: int
    default: 0
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
  - The rules are this collection's own, written after the published
    formats of each token and in the spirit of gitleaks' rules (a keyword
    must be present before an expression runs); the module needs only
    Python's standard library on the machine.
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
      description: The kind of secret, one of O(patterns), or C(given_secret) for one of O(literals).
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

import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.burst.golden_ami.plugins.module_utils import _sanitize  # noqa: E402


def own_payload(module):
    """Glob of the file Ansible runs this module from, which holds its arguments; None when pipelined.

    Ansible writes it as ``AnsiballZ_<module>.py`` in the task's temporary directory, which it hands to the
    module as ``_ansible_tmpdir`` (and removes when the task ends).
    """
    tmpdir = getattr(module, "_tmpdir", None)
    return os.path.join(tmpdir, "AnsiballZ_*") if tmpdir else None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **_sanitize.path_list_options("absent", "keep", "empty"),
            scan_roots=dict(type="list", elements="path", default=list(_sanitize.DEFAULT_SCAN_ROOTS)),
            scan_excludes=dict(type="list", elements="path", default=list(_sanitize.DEFAULT_SCAN_EXCLUDES)),
            scan_skip=dict(type="list", elements="str", default=[]),
            patterns=dict(
                type="list",
                elements="str",
                choices=sorted(_sanitize.DEFAULT_PATTERNS),
                default=list(_sanitize.DEFAULT_PATTERNS),
            ),
            literals=dict(type="list", elements="str", default=[], no_log=True),
            max_file_size=dict(type="int", default=0),
            min_free=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    try:
        min_free = {path: int(value) for path, value in module.params["min_free"].items()}
    except (TypeError, ValueError):
        module.fail_json(msg="min_free: every value must be a number of bytes")
    if module.params["max_file_size"] < 0:
        module.fail_json(msg="max_file_size must be 0 (no limit) or a number of bytes")
    short = [i + 1 for i, literal in enumerate(module.params["literals"]) if len(literal.encode("utf-8")) < 8]
    if short:
        module.fail_json(msg="literals: item(s) %s shorter than 8 bytes" % ", ".join(map(str, short)))
    result = _sanitize.check(
        absent=module.params["absent"],
        empty=module.params["empty"],
        keep=module.params["keep"],
        scan_roots=module.params["scan_roots"],
        scan_excludes=module.params["scan_excludes"],
        patterns=module.params["patterns"],
        max_size=module.params["max_file_size"],
        min_free=min_free,
        literals=module.params["literals"],
        skip=module.params["scan_skip"] + ([own_payload(module)] if own_payload(module) else []),
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
