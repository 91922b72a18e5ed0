#!/usr/bin/python
# Copyright: burst.golden_ami contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_daemon_config
short_description: Merge options into Docker's daemon.json
version_added: 0.1.0
description:
  - Merges the given options into the JSON object held in Docker's
    C(daemon.json), recursively for nested objects such as C(runtimes) or
    C(log-opts), and writes the file only when its content changes.
  - Keys that the options do not name are kept, so settings written by
    other tools or by hand survive. Only the keys listed in O(remove) are
    dropped.
  - An existing file that is not a JSON object is reported as an error and
    left untouched.
  - The file is compared by content, not formatting, and written atomically,
    sorted and indented, only when the merge changes that content; a rerun
    with the same options reports no change.
author:
  - burst.golden_ami maintainers (@burst)
options:
  path:
    description: Path of the daemon configuration file.
    type: path
    default: /etc/docker/daemon.json
  options:
    description:
      - Daemon options to merge into the file, as C(dockerd) reads them
        (for example C(storage-driver), C(data-root), C(runtimes)).
      - Nested objects are merged key by key; any other value, lists
        included, replaces the current one.
    type: dict
    default: {}
  remove:
    description: Top-level keys to remove from the file.
    type: list
    elements: str
    default: []
  mode:
    description: Permissions of the file when this module writes it.
    type: str
    default: "0644"
  backup:
    description: Keep a timestamped copy of the previous file when the content changes.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reports what would change without writing.
  diff_mode:
    support: full
    description: Shows the file before and after the merge.
  idempotent:
    support: full
    description: A second run with the same options changes nothing.
notes:
  - Restarting Docker so that it reads the new file is left to the caller
    (a handler), so that several changes cause one restart.
"""

EXAMPLES = r"""
- name: Ensure the nested engine uses vfs and creates no bridge
  burst.golden_ami.docker_daemon_config:
    options:
      storage-driver: vfs
      bridge: none
      iptables: false
      ip6tables: false

- name: Register the NVIDIA runtime and make it the default
  burst.golden_ami.docker_daemon_config:
    options:
      default-runtime: nvidia
      runtimes:
        nvidia:
          path: nvidia-container-runtime
          args: []
  notify: Restart Docker
"""

RETURN = r"""
path:
  description: Path of the daemon configuration file.
  returned: always
  type: str
  sample: /etc/docker/daemon.json
config:
  description: The daemon configuration after the merge (what the file holds, or would hold in check mode).
  returned: always
  type: dict
  sample: {"bridge": "none", "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}}
backup_file:
  description: Path of the copy of the previous file.
  returned: when O(backup=true) and the file changed
  type: str
  sample: /etc/docker/daemon.json.12345.2026-01-01@00:00:00~
"""

import os  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.burst.golden_ami.plugins.module_utils._docker_daemon_json import (  # noqa: E402
    DaemonJsonError,
    merge_daemon_json,
    render_daemon_json,
)


def read_text(path):
    """Return the file's text, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_atomically(module, path, content, mode):
    """Write ``content`` next to ``path`` and move it into place in one step."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o755)
    fd, tmp_path = tempfile.mkstemp(prefix=".daemon.json.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.chmod(tmp_path, int(mode, 8))
        module.atomic_move(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)


def run_module():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/etc/docker/daemon.json"},
            "options": {"type": "dict", "default": {}},
            "remove": {"type": "list", "elements": "str", "default": []},
            "mode": {"type": "str", "default": "0644"},
            "backup": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    path = module.params["path"]
    mode = module.params["mode"]
    try:
        int(mode, 8)
    except ValueError:
        module.fail_json(msg=f"mode must be an octal string such as '0644', got {mode!r}")

    text = read_text(path)
    try:
        before, after = merge_daemon_json(text, module.params["options"], module.params["remove"], path)
    except DaemonJsonError as exc:
        module.fail_json(msg=str(exc), path=path)

    # Compare content, not formatting: a file written by hand or by another
    # tool that already holds these options is left as it is.
    new_text = render_daemon_json(after)
    changed = before != after or (text is None and bool(after))
    result = {"changed": changed, "path": path, "config": after}
    if module._diff:
        result["diff"] = {
            "before_header": path,
            "after_header": path,
            "before": text if text is not None else "",
            "after": new_text,
        }
    if changed and not module.check_mode:
        if module.params["backup"] and text is not None:
            result["backup_file"] = module.backup_local(path)
        write_atomically(module, path, new_text, mode)
    module.exit_json(**result)


def main():
    run_module()


if __name__ == "__main__":
    main()
