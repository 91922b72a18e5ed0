# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The launch_permissions option of golden_ami and golden_ami_promote (module_utils/_params.py).
    DOCUMENTATION = r"""
options:
  launch_permissions:
    description:
      - Accounts, organizations and organizational units the images are shared with. Missing ones are added.
    type: dict
    suboptions:
      user_ids:
        description: AWS account ids.
        type: list
        elements: str
        default: []
      organization_arns:
        description: Organization ARNs.
        type: list
        elements: str
        default: []
      organizational_unit_arns:
        description: Organizational unit ARNs.
        type: list
        elements: str
        default: []
"""
