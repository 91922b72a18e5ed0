"""Run inventory plugins on configuration files, in one process, and print what each one made as JSON.

    python inventory_runner.py CONFIG...

Each CONFIG is a YAML file naming its plugin (``plugin:``). For each, the
plugin is loaded through Ansible's plugin loader, as ansible-inventory does,
and parsed into an inventory of its own, without cache. The output maps each
path to ``{"hosts": {name: vars}, "groups": {name: {"hosts": [...],
"children": [...]}}, "error": None}``, or to ``{"error": message}`` when the
plugin failed. Values that are not JSON (datetimes) are written as text.
"""

from __future__ import annotations

import json
import sys


def run(path):
    from ansible.errors import AnsibleError
    from ansible.inventory.data import InventoryData
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import inventory_loader

    loader = DataLoader()
    name = loader.load_from_file(path)["plugin"]
    plugin = inventory_loader.get(name)
    if plugin is None:
        return {"error": f"no inventory plugin {name}"}
    inventory = InventoryData()
    try:
        plugin.parse(inventory, loader, path, cache=False)
    except AnsibleError as e:
        return {"error": str(e)}
    except Exception as e:  # noqa: BLE001 - any failure of one plugin is reported; the others still run
        return {"error": f"{type(e).__name__}: {e}"}
    inventory.reconcile_inventory()
    hosts = {}
    for host_name, host in inventory.hosts.items():
        variables = dict(host.get_vars())
        for magic in ("inventory_file", "inventory_dir", "group_names"):
            variables.pop(magic, None)
        hosts[host_name] = variables
    groups = {
        group_name: {
            "hosts": sorted(h.name for h in group.hosts),
            "children": sorted(c.name for c in group.child_groups),
        }
        for group_name, group in inventory.groups.items()
    }
    return {"hosts": hosts, "groups": groups, "error": None}


def main(paths):
    from ansible.plugins.loader import init_plugin_loader

    init_plugin_loader()
    results = {path: run(path) for path in paths}
    json.dump(results, sys.stdout, default=str, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
