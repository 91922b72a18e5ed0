# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

from ansible_collections.burst.golden_ami.plugins.doc_fragments.bake import ModuleDocFragment as _Bake
from ansible_collections.burst.golden_ami.plugins.doc_fragments.launch_permissions import (
    ModuleDocFragment as _LaunchPermissions,
)


class ModuleDocFragment:
    # What every AWS module of this collection does in check mode and diff mode, and on a second run
    # (burst.golden_ami.aws), listed with amazon.aws.common.modules, amazon.aws.region.modules and
    # amazon.aws.boto3. A module that documents one of these attributes itself replaces that attribute's entry.
    DOCUMENTATION = r"""
attributes:
  check_mode:
    support: full
    description:
      - Reads what is there, returns what a real run would do (C(changed) and the same return values) and changes
        nothing.
  diff_mode:
    support: none
    description: Returns no diff; the return values say what changed, or would change.
  idempotent:
    support: full
    description: A second run with the same options changes nothing.
"""

    def __init__(self):
        # The same with the options that choose the bakes to remove, for golden_ami_discard and golden_ami_sweep
        # (burst.golden_ami.aws.bake_removal).
        self.BAKE_REMOVAL = self.DOCUMENTATION + _Bake.DOCUMENTATION
        # The same with the launch_permissions option, for golden_ami and golden_ami_promote
        # (burst.golden_ami.aws.publish).
        self.PUBLISH = self.DOCUMENTATION + _LaunchPermissions.DOCUMENTATION
