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
  older_than_minutes:
    description:
      - Remove the unpromoted images of every bake whose O(started_tag) is older than this (a sweep of stale bakes).
    type: int
  started_tag:
    description:
      - Tag key that holds the time (ISO 8601, UTC) at which a bake started.
    type: str
    default: BakeStarted
  family_tags:
    description:
      - With O(older_than_minutes), only images carrying all these tags (a family of bakes).
    type: dict
    default: {}
  regions:
    description:
      - Regions to search besides the module's region (the copy regions).
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
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
    description: Lists what would be removed and restored, and changes nothing.
  diff_mode:
    support: none
    description: Returns no diff; C(deleted) and C(restored) say what changed.
  idempotent:
    support: full
    description: A second run finds nothing left to remove.
"""

EXAMPLES = r"""
- name: Remove the candidates of a failed bake in every region
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
  description: What could not be removed, each with its region, resource id and reason.
  returned: always
  type: list
  elements: dict
actions:
  description: What the module did, or would do in check mode, one line each.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule  # noqa: E402
from ansible_collections.burst.golden_ami.plugins.module_utils._images import (  # noqa: E402
    ImageError,
    fail_module,
    region_factories,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._publish import Discard  # noqa: E402


def main():
    argument_spec = dict(
        build_id=dict(type="str"),
        build_id_tag=dict(type="str", default="BakeId"),
        older_than_minutes=dict(type="int"),
        started_tag=dict(type="str", default="BakeStarted"),
        family_tags=dict(type="dict", default={}),
        regions=dict(type="list", elements="str", default=[]),
        protect_ssm_parameters=dict(type="list", elements="str", default=[]),
        fail_on_left=dict(type="bool", default=True),
    )
    module = AnsibleAWSModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_one_of=[("build_id", "older_than_minutes")],
        mutually_exclusive=[("build_id", "older_than_minutes")],
    )
    if not module.region:
        module.fail_json(msg="region must be given (the region option or AWS_REGION / AWS_DEFAULT_REGION)")
    ec2, ssm = region_factories(module)

    discard = Discard(module.params, module.region, ec2, ssm, check_mode=module.check_mode)
    try:
        result = discard.run()
    except ImageError as e:
        fail_module(module, e, actions=discard.actions)
    if result["left"] and module.params["fail_on_left"]:
        lines = "; ".join(f"{item['resource']} in {item['region']}: {item['reason']}" for item in result["left"])
        module.fail_json(msg=f"Could not remove {len(result['left'])} resource(s): {lines}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
