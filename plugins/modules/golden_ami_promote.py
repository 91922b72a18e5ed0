#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: golden_ami_promote
short_description: Publish a bake's verified candidate images to production, or change nothing
version_added: 0.2.0
description:
  - The only step of a bake that changes what production sees. Finds the image of O(build_id) in the
    module's region and in every region of O(regions) (the candidates that M(burst.golden_ami.golden_ami)
    made with C(stage=candidate)), checks that each is C(available), then points every SSM parameter of
    O(ssm_parameters) in each region at that region's image (C(DataType=aws:ec2:image)), shares the images
    (O(launch_permissions)) and tags them and their snapshots C(ImageStage=promoted).
  - Before any parameter changes, each image is tagged C(ImageStage=promoting) and C(PromotedOver), the
    JSON of the values it replaces in its region. When a call fails, every parameter already changed is put
    back (or deleted, when it did not exist) and the module fails saying what it restored. After an
    interrupted run, M(burst.golden_ami.golden_ami_discard) restores the values from that tag.
  - Idempotent (a second run finds every parameter pointing at the images already); check mode reports the
    parameters that would change. RV(ssm_parameters) has each value and the one it replaces.
author:
  - burst.golden_ami maintainers (@burst)
options:
  build_id:
    description:
      - The bake whose images are promoted, the value of their O(build_id_tag) tag.
    type: str
    required: true
  build_id_tag:
    description:
      - Tag key that holds O(build_id).
    type: str
    default: BakeId
  regions:
    description:
      - Regions of the copies, besides the module's region. Each must hold exactly one image of the bake.
    type: list
    elements: str
    default: []
  ssm_parameters:
    description:
      - SSM parameters that receive the image id in each region.
    type: list
    elements: str
    default: []
  ssm_parameter_description:
    description:
      - Description of parameters that are created.
    type: str
extends_documentation_fragment:
  - burst.golden_ami.aws.publish
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Promote the verified candidate of this bake in both regions
  burst.golden_ami.golden_ami_promote:
    region: eu-central-1
    build_id: "{{ bake_id }}"
    regions: [eu-west-1]
    ssm_parameters: [/burst/golden-ami/latest]
  register: promoted
"""

RETURN = r"""
images:
  description: The promoted image of each region.
  returned: success
  type: dict
  sample: {eu-central-1: ami-0123456789abcdef0, eu-west-1: ami-0fedcba9876543210}
ssm_parameters:
  description: For each region, each parameter's new value and the value it replaced (null when it did not exist).
  returned: success
  type: dict
  sample:
    eu-central-1:
      /burst/golden-ami/latest: {value: ami-0123456789abcdef0, previous: ami-0aaaaaaaaaaaaaaaa}
actions:
  description: What the module did, or would do in check mode, one line each.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.burst.golden_ami.plugins.module_utils._aws import BAKE_ID_TAG  # noqa: E402
from ansible_collections.burst.golden_ami.plugins.module_utils._params import (  # noqa: E402
    LAUNCH_PERMISSIONS_OPTION,
    aws_module,
    region_factories,
    run_or_fail,
    string_list,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._publish import Promotion  # noqa: E402


def main():
    argument_spec = dict(
        build_id=dict(type="str", required=True),
        build_id_tag=dict(type="str", default=BAKE_ID_TAG),
        regions=string_list(),
        ssm_parameters=string_list(),
        ssm_parameter_description=dict(type="str"),
        launch_permissions=LAUNCH_PERMISSIONS_OPTION,
    )
    module = aws_module(argument_spec)
    promotion = Promotion(module.params, module.region, *region_factories(module), check_mode=module.check_mode)
    module.exit_json(**run_or_fail(module, promotion.run, actions=promotion.actions))


if __name__ == "__main__":
    main()
