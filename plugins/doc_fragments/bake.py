# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The options of the modules that remove what one bake or stale bakes left: golden_ami_discard and
    # golden_ami_sweep (module_utils/_params.py, bake_scope_options).
    DOCUMENTATION = r"""
options:
  older_than_minutes:
    description:
      - Act on every bake whose O(started_tag) is older than this many minutes (stale bakes) rather than on one bake.
      - Exactly one of the bake id and O(older_than_minutes) is required.
    type: int
  started_tag:
    description:
      - Tag key that holds the time (ISO 8601, UTC) at which a bake started.
    type: str
    default: BakeStarted
  family_tags:
    description:
      - With O(older_than_minutes), only what carries all these tags (a family of bakes).
    type: dict
    default: {}
  regions:
    description:
      - Regions where the bakes copied their images, besides the module's region.
    type: list
    elements: str
    default: []
  protect_ssm_parameters:
    description:
      - SSM parameters whose image, in each region, is never removed unless a value to put back was recorded.
    type: list
    elements: str
    default: []
  fail_on_left:
    description:
      - Fail when anything could not be removed (listed in C(left)).
    type: bool
    default: true
"""
