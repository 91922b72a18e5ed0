#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: golden_ami_sweep
short_description: Remove everything a bake left in AWS, kind by kind, even when one kind fails
version_added: 0.2.0
description:
  - Sweeps what one bake (O(bake_id)) or every bake started more than O(older_than_minutes) ago (optionally only
    those carrying O(family_tags)) left in AWS, in this order, each kind on its own
    - instances in any state but terminated, terminated and waited for;
    - candidate images with their snapshots, in the module's region and every region of O(regions) (copies),
      through M(burst.golden_ami.golden_ami_discard), which never touches promoted images and first puts back the
      SSM values of an image caught in the middle of a promotion;
    - security groups (retried while their instances' interfaces are released), key pairs;
    - IAM roles under O(iam_path), with their inline and attached policies and instance profiles.
  - Only resources tagged O(bake_id_tag) are touched; IAM roles must also be named after the bake (by id) or be
    older than the cutoff (by age), and carry the tag.
  - A failure in one kind is listed in C(left), with the resource and the reason, and the next kind is still swept.
    The module then fails, unless O(fail_on_left=false).
  - bake.yml runs it at its start (stale bakes of its family) and at its end (its own resources); cleanup.yml runs it
    for an interrupted bake.
author:
  - burst.golden_ami maintainers (@burst)
options:
  bake_id:
    description:
      - The bake to sweep. Exactly one of O(bake_id) and O(older_than_minutes) is required.
    type: str
  bake_id_tag:
    description:
      - Tag key that holds the bake id.
    type: str
    default: BakeId
  older_than_minutes:
    description:
      - Sweep every bake whose O(started_tag) is older than this many minutes.
    type: int
  started_tag:
    description:
      - Tag key that holds the time (ISO 8601, UTC) at which a bake started.
    type: str
    default: BakeStarted
  family_tags:
    description:
      - With O(older_than_minutes), only resources carrying all these tags.
    type: dict
    default: {}
  regions:
    description:
      - Regions where the bake copied its image, besides the module's region.
    type: list
    elements: str
    default: []
  images:
    description:
      - Remove the bake's candidate images. V(false) for a bake that succeeded and keeps its candidate.
    type: bool
    default: true
  protect_ssm_parameters:
    description:
      - SSM parameters whose image is never removed unless a value to put back was recorded.
    type: list
    elements: str
    default: []
  iam_path:
    description:
      - IAM path of the bakes' temporary roles and instance profiles; empty to leave IAM alone.
    type: str
    default: /burst-golden-ami/
  wait_timeout:
    description:
      - Seconds to wait for instances to terminate, and for security groups to be released.
    type: int
    default: 600
  fail_on_left:
    description:
      - Fail when anything could not be removed.
    type: bool
    default: true
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
    description: Lists what would be removed and removes nothing.
  diff_mode:
    support: none
    description: Returns no diff; C(removed) says what was removed.
  idempotent:
    support: full
    description: A second run finds nothing left.
"""

EXAMPLES = r"""
- name: Sweep an interrupted bake in its region and its copy region
  burst.golden_ami.golden_ami_sweep:
    region: eu-central-1
    regions: [eu-west-1]
    bake_id: bake-20260101120000-abc123
    protect_ssm_parameters: [/burst/golden-ami/latest]

- name: Sweep every bake of the family that started more than five hours ago
  burst.golden_ami.golden_ami_sweep:
    region: eu-central-1
    older_than_minutes: 300
    family_tags: {BakeFamily: burst-golden-v}
"""

RETURN = r"""
removed:
  description: What was removed (or would be, in check mode), by kind.
  returned: always
  type: dict
  contains:
    instances:
      description: Instance ids terminated.
      type: list
      elements: str
    images:
      description: Images deregistered, each with its region and snapshots.
      type: list
      elements: dict
    security_groups:
      description: Security group ids deleted.
      type: list
      elements: str
    key_pairs:
      description: Key pair names deleted.
      type: list
      elements: str
    iam_roles:
      description: IAM roles deleted with their instance profiles.
      type: list
      elements: str
left:
  description: What could not be removed, each with its kind, region, resource and reason.
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
    default_retry,
    fail_module,
    region_factories,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._sweep import Sweep  # noqa: E402


def main():
    argument_spec = dict(
        bake_id=dict(type="str"),
        bake_id_tag=dict(type="str", default="BakeId"),
        older_than_minutes=dict(type="int"),
        started_tag=dict(type="str", default="BakeStarted"),
        family_tags=dict(type="dict", default={}),
        regions=dict(type="list", elements="str", default=[]),
        images=dict(type="bool", default=True),
        protect_ssm_parameters=dict(type="list", elements="str", default=[]),
        iam_path=dict(type="str", default="/burst-golden-ami/"),
        wait_timeout=dict(type="int", default=600),
        fail_on_left=dict(type="bool", default=True),
    )
    module = AnsibleAWSModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_one_of=[("bake_id", "older_than_minutes")],
        mutually_exclusive=[("bake_id", "older_than_minutes")],
    )
    if not module.region:
        module.fail_json(msg="region must be given (the region option or AWS_REGION / AWS_DEFAULT_REGION)")
    retry = default_retry()
    cache = {}

    def clients(service, region):
        if (service, region) not in cache:
            cache[(service, region)] = module.client(service, retry_decorator=retry, region=region)
        return cache[(service, region)]

    ec2, ssm = region_factories(module)
    sweep = Sweep(module.params, module.region, clients, ec2, ssm, check_mode=module.check_mode)
    try:
        result = sweep.run()
    except ImageError as e:
        fail_module(module, e, actions=sweep.actions)
    if result["left"] and module.params["fail_on_left"]:
        lines = "; ".join(f"{i['kind']} {i['resource']} in {i['region']}: {i['reason']}" for i in result["left"])
        module.fail_json(msg=f"Could not remove {len(result['left'])} resource(s): {lines}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
