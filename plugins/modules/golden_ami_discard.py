#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: golden_ami_discard
short_description: Remove the images of a failed or interrupted bake that were never promoted
version_added: 0.2.0
description:
  - Finds the images of one bake (O(build_id)), or of every bake started more than O(older_than_minutes)
    ago, in the module's region and in every region of O(regions) (copies included), deregisters those
    that were never promoted and deletes their snapshots, and the bake's snapshots that no image holds
    any more.
  - Never removes an image tagged C(ImageStage=promoted), nor one without an C(ImageStage) tag (published in
    one step by M(burst.golden_ami.golden_ami)); only M(burst.golden_ami.golden_ami_prune) retires those.
  - An image caught in the middle of a promotion (C(ImageStage=promoting), after an interrupted
    M(burst.golden_ami.golden_ami_promote)) first gets the SSM values recorded in its C(PromotedOver) tag put
    back, where a parameter still names it.
  - An image that an SSM parameter of O(protect_ssm_parameters) names, with no earlier value to put back, and a
    snapshot still in use after the retries (C(InvalidSnapshot.InUse)), are left and listed in C(left), with
    the reason; the module then fails, unless O(fail_on_left=false).
author:
  - burst.golden_ami maintainers (@burst)
options:
  build_id:
    description:
      - The bake whose images are removed, the value of their O(build_id_tag) tag.
      - Exactly one of O(build_id) and O(older_than_minutes) is required.
    type: str
  build_id_tag:
    description:
      - Tag key that holds the bake id.
    type: str
    default: BakeId
extends_documentation_fragment:
  - burst.golden_ami.aws.bake_removal
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Remove the candidate images of a failed bake, in this region and in eu-west-1
  burst.golden_ami.golden_ami_discard:
    region: eu-central-1
    regions: [eu-west-1]
    build_id: "{{ bake_id }}"
    protect_ssm_parameters: [/burst/golden-ami/latest]

- name: Sweep the candidates of bakes that started more than four hours ago
  burst.golden_ami.golden_ami_discard:
    region: eu-central-1
    regions: [eu-west-1]
    older_than_minutes: 240
    family_tags: {BakeFamily: burst-golden-v}
"""

RETURN = r"""
deleted:
  description: The images deregistered, each with its region and snapshots.
  returned: always
  type: list
  elements: dict
restored:
  description: The SSM parameters put back, one line each.
  returned: always
  type: list
  elements: str
kept:
  description: Images of the bake that stay, with the reason (promoted).
  returned: always
  type: list
  elements: dict
left:
  description:
    - What could not be removed. The module fails when this list is not empty, unless O(fail_on_left=false).
  returned: always
  type: list
  elements: dict
  contains:
    region:
      description: The region of the resource.
      type: str
    resource:
      description: The id of the image or snapshot left.
      type: str
    reason:
      description: Why it was left, with AWS's error code where AWS refused.
      type: str
  sample:
    - region: eu-west-1
      resource: snap-0123456789abcdef0
      reason: "Snapshot snap-0123456789abcdef0 is still in use (InvalidSnapshot.InUse)"
actions:
  description: What the module did, or would do in check mode, one line each.
  returned: always
  type: list
  elements: str
  sample: ["deregister ami-0123456789abcdef0 (burst-golden-v1.0) in eu-central-1"]
"""

from ansible_collections.burst.golden_ami.plugins.module_utils._params import (  # noqa: E402
    aws_module,
    bake_scope_options,
    bake_scope_rules,
    exit_unless_left,
    region_factories,
    run_or_fail,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._publish import Discard  # noqa: E402


def main():
    module = aws_module(bake_scope_options("build_id", "build_id_tag"), **bake_scope_rules("build_id"))
    discard = Discard(module.params, module.region, *region_factories(module), check_mode=module.check_mode)
    result = run_or_fail(module, discard.run, actions=discard.actions)
    exit_unless_left(module, result, lambda item: f"{item['resource']} in {item['region']}: {item['reason']}")


if __name__ == "__main__":
    main()
