#!/usr/bin/python
# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_sanitize
short_description: Remove and empty what must not reach a machine image
version_added: 0.1.0
description:
  - Removes every path that the O(remove) shell globs match (directories
    recursively; symbolic links as links, never what they point to), except
    those matching a O(keep) glob, and empties every file the O(truncate)
    globs match.
  - Unlike the shell, C(*) also matches names that begin with a dot, so
    C(/tmp/*) leaves no hidden file behind.
  - One call handles hundreds of globs, which keeps a sanitize step fast
    over SSH. Used by the P(burst.golden_ami.image_sanitize#role) role;
    M(burst.golden_ami.image_sanitize_check) verifies the result.
author:
  - burst.golden_ami maintainers (@burst)
options:
  remove:
    description: Paths or shell globs to remove.
    type: list
    elements: path
    default: []
  keep:
    description: Globs of paths that O(remove) must leave alone (for example C(/tmp/systemd-private-*)).
    type: list
    elements: path
    default: []
  truncate:
    description: Paths or shell globs of files to empty (logs that running services hold open, C(/etc/machine-id)).
    type: list
    elements: path
    default: []
attributes:
  check_mode:
    support: full
    description: Lists what would be removed or emptied, and touches nothing.
  diff_mode:
    support: none
    description: Returns the lists of paths instead of a diff.
  idempotent:
    support: full
    description: A second run finds nothing left to do and reports no change.
"""

EXAMPLES = r"""
- name: Remove shell histories and SSH host keys, empty the machine id
  burst.golden_ami.image_sanitize:
    remove:
      - /root/.bash_history
      - /home/*/.bash_history
      - /etc/ssh/ssh_host_*
    truncate:
      - /etc/machine-id
"""

RETURN = r"""
removed:
  description: Paths removed (in check mode, that would be removed).
  returned: always
  type: list
  elements: str
  sample: [/root/.bash_history]
truncated:
  description: Files emptied (in check mode, that would be emptied).
  returned: always
  type: list
  elements: str
  sample: [/etc/machine-id]
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.common.text.converters import to_native  # noqa: E402

from ansible_collections.burst.golden_ami.plugins.module_utils import _sanitize  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec=_sanitize.path_list_options("remove", "keep", "truncate"),
        supports_check_mode=True,
    )
    try:
        removed = _sanitize.remove(module.params["remove"], module.params["keep"], dry_run=module.check_mode)
        truncated = _sanitize.truncate(module.params["truncate"], dry_run=module.check_mode)
    except OSError as exc:
        module.fail_json(msg="Could not sanitize %s: %s" % (exc.filename, to_native(exc)))
    module.exit_json(changed=bool(removed or truncated), removed=removed, truncated=truncated)


if __name__ == "__main__":
    main()
