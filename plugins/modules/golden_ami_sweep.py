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
  images:
    description:
      - Remove the bake's candidate images. V(false) for a bake that succeeded and keeps its candidate.
    type: bool
    default: true
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
extends_documentation_fragment:
  - burst.golden_ami.aws.bake_removal
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
notes:
  - bake.yml runs it at its start (stale bakes of its family) and at its end (its own resources); cleanup.yml runs it
    for an interrupted bake.
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
  description:
    - What could not be removed, the entries of M(burst.golden_ami.golden_ami_discard)'s C(left) with a C(kind)
      (C(instances), C(images), C(security_groups), C(key_pairs) or C(iam_roles)).
  returned: always
  type: list
  elements: dict
  sample:
    - kind: security_groups
      region: eu-central-1
      resource: sg-0123456789abcdef0
      reason: "DependencyViolation: resource has a dependent object (DependencyViolation)"
actions:
  description: What the module did, or would do in check mode, one line each.
  returned: always
  type: list
  elements: str
  sample: ["terminate i-0123456789abcdef0 in eu-central-1"]
"""

from ansible_collections.burst.golden_ami.plugins.module_utils._params import (  # noqa: E402
    aws_module,
    bake_scope_options,
    bake_scope_rules,
    client_factory,
    exit_unless_left,
    region_factories,
    run_or_fail,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._sweep import Sweep  # noqa: E402


def main():
    argument_spec = bake_scope_options("bake_id", "bake_id_tag")
    argument_spec.update(
        images=dict(type="bool", default=True),
        iam_path=dict(type="str", default="/burst-golden-ami/"),
        wait_timeout=dict(type="int", default=600),
    )
    module = aws_module(argument_spec, **bake_scope_rules("bake_id"))
    clients = client_factory(module)
    sweep = Sweep(module.params, module.region, clients, *region_factories(module), check_mode=module.check_mode)
    result = run_or_fail(module, sweep.run, actions=sweep.actions)
    exit_unless_left(module, result, lambda i: f"{i['kind']} {i['resource']} in {i['region']}: {i['reason']}")


if __name__ == "__main__":
    main()
