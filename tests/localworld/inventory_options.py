"""burst_ec2's options at their documented defaults, for tests that call the plugin's methods directly.

``burst_ec2_options(**overrides)``: what ``get_option`` returns in a run with
an empty configuration (and ``regions`` absent: a test gives its own), with
``overrides`` on top. ``tests/unit/plugins/inventory/test_burst_ec2.py``
checks these against what ``ansible-doc`` documents.
"""

from __future__ import annotations

import copy

__all__ = ["BURST_EC2_DEFAULTS", "burst_ec2_options"]

BURST_EC2_DEFAULTS = {
    "filters": {},
    "include_filters": [],
    "exclude_filters": [],
    "burst_tags": {"Mode": "Burst"},
    "instance_states": ["pending", "running"],
    "spot_only": True,
    "hostnames": [],
    "allow_duplicated_hosts": False,
    "hostvars_prefix": None,
    "hostvars_suffix": None,
    "use_contrib_script_compatible_sanitization": False,
    "strict_permissions": True,
    "image_version_tag": "Version",
    "group_prefix": "burst_",
    "burst_groups": True,
    "instance_vars": "burst",
    "spot_prices": True,
    "health": {},
    "strict": False,
    "compose": {},
    "groups": {},
    "keyed_groups": [],
    "use_extra_vars": False,
    "leading_separator": True,
}


def burst_ec2_options(**overrides) -> dict:
    return {**copy.deepcopy(BURST_EC2_DEFAULTS), **overrides}
