#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: golden_ami_prune
short_description: Apply a retention policy to a family of golden images
version_added: 0.1.0
description:
  - Selects the images of a family (owned by this account, by name prefix and/or tags, O(image_family)) in every
    region given, keeps the newest O(keep_newest) and/or those younger than O(max_age_days), and deregisters
    the others and deletes their snapshots.
  - Never deletes the newest image of a region, an image an SSM parameter of O(protect_ssm_parameters)
    points at, an image that an instance in any state but C(terminated) uses, the image of any version of
    any launch template (C($Default), C($Latest) and every other version, which Auto Scaling groups, fleets
    and rollbacks can launch), or the image of a launch configuration (Auto Scaling groups without templates).
  - Candidates of bakes in progress (C(ImageStage) V(candidate) or V(promoting)) are not part of the family;
    M(burst.golden_ami.golden_ami_discard) removes those.
  - A snapshot that stays in use after the retries (C(InvalidSnapshot.InUse), or not yet released by a
    just deregistered image) does not stop the run; it is listed in C(left) with the reason, and the module
    warns.
  - Each region is planned on its own; copies of one build in several regions are judged alike
    when the regions hold the same family.
  - Check mode returns the plan (the C(kept) and C(deleted) lists, with reasons) and changes nothing.
  - Pass every region the family lives in (the source region and the copy regions) in O(regions).
author:
  - burst.golden_ami maintainers (@burst)
options:
  image_family:
    description:
      - The family whose images are pruned, as M(burst.golden_ami.burst_instance) finds the newest of a family.
      - Either this or the deprecated O(name_prefix) and O(family_tags) is required.
    type: dict
    suboptions:
      name_prefix:
        description: Images whose name starts with this prefix belong to the family.
        type: str
      tags:
        description:
          - Images carrying all these tags belong to the family; a null value matches any value of the tag.
          - With O(image_family.name_prefix), an image must match both.
        type: dict
  name_prefix:
    description:
      - Deprecated, use O(image_family.name_prefix). Combined with O(image_family) when both are given.
    type: str
  family_tags:
    description:
      - Deprecated, use O(image_family.tags). Combined with O(image_family) when both are given.
    type: dict
  regions:
    description:
      - Regions to prune. Defaults to the module's region.
    type: list
    elements: str
    default: []
  keep_newest:
    description:
      - Keep the newest N images of the family in each region.
    type: int
  max_age_days:
    description:
      - Delete images older than this many days (outside the newest O(keep_newest) when both are given).
    type: int
  protect_ssm_parameters:
    description:
      - SSM parameters whose image, in each region, is never deleted.
    type: list
    elements: str
    default: []
  delete_snapshots:
    description:
      - Delete the snapshots of each deregistered image.
    type: bool
    default: true
extends_documentation_fragment:
  - burst.golden_ami.aws
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Keep the three newest golden images, and none older than 30 days beyond them
  burst.golden_ami.golden_ami_prune:
    image_family:
      name_prefix: burst-golden-v
    regions: [eu-central-1, eu-west-1]
    keep_newest: 3
    max_age_days: 30
    protect_ssm_parameters: [/burst/golden-ami]
  delegate_to: localhost
  register: pruned

- name: Show what was deleted and why
  ansible.builtin.debug:
    msg: "{{ item.image_id }} in {{ item.region }}: {{ item.reasons | join('; ') }}"
  loop: "{{ pruned.deleted }}"
  loop_control:
    label: "{{ item.image_id }}"
"""

RETURN = r"""
kept:
  description: Images kept, newest first per region, each with the reasons.
  returned: always
  type: list
  elements: dict
  contains:
    region:
      description: The region of the image.
      type: str
    image_id:
      description: The image id.
      type: str
    name:
      description: The image name.
      type: str
    creation_date:
      description: When the image was created (ISO 8601).
      type: str
    snapshot_ids:
      description: The snapshots of the image.
      type: list
      elements: str
    reasons:
      description: Why the image is kept, or deleted.
      type: list
      elements: str
  sample:
    - region: eu-central-1
      image_id: ami-0123456789abcdef0
      name: burst-golden-v1.2
      creation_date: "2030-01-02T03:04:05.000Z"
      snapshot_ids: [snap-0123456789abcdef0]
      reasons: [newest of the family, "referenced by SSM parameter /burst/golden-ami"]
deleted:
  description:
    - Images deregistered (or, in check mode, to be deregistered) with their snapshots, entries like those of
      RV(kept) whose C(reasons) say why each goes, for example C(outside the newest 3) and
      C(older than 30 days (61 days)).
  returned: always
  type: list
  elements: dict
left:
  description: Snapshots that could not be deleted, each with its region, id and reason.
  returned: always
  type: list
  elements: dict
"""

import time  # noqa: E402

from ansible_collections.burst.golden_ami.plugins.module_utils._aws import utcnow  # noqa: E402
from ansible_collections.burst.golden_ami.plugins.module_utils._image_options import (  # noqa: E402
    validate_region_names,
    validate_ssm_parameter_name,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._images import (  # noqa: E402
    AutoScalingApi,
    ImageError,
    ImageFamily,
    Regions,
    summarize_image,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._params import (  # noqa: E402
    api_factory,
    aws_module,
    image_family_option,
    region_factories,
    run_or_fail,
    string_list,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._retention import plan_retention  # noqa: E402


class GoldenAmiPrune(Regions):
    """Plan and apply retention in each region. Needs no Ansible to run."""

    def __init__(self, params, region, ec2, ssm, check_mode=False, now=None, sleep=time.sleep, autoscaling=None):
        super().__init__(params, region, ec2, ssm, check_mode=check_mode, sleep=sleep)
        self.autoscaling = autoscaling
        self.now = now or utcnow()

    def regions(self):
        """The regions of ``regions``, or the module's region (pruning replaces it, it does not add to it)."""
        return list(dict.fromkeys(self.params.get("regions") or [self.region]))

    def family(self):
        """The image family: ``image_family``, and the deprecated ``name_prefix`` and ``family_tags``."""
        params = self.params
        return ImageFamily.from_option(params.get("image_family"), params.get("name_prefix"), params.get("family_tags"))

    def validate(self):
        params = self.params
        self.family()
        if params.get("keep_newest") is None and params.get("max_age_days") is None:
            raise ImageError("give keep_newest, max_age_days or both")
        if params.get("keep_newest") is not None and params["keep_newest"] < 1:
            raise ImageError("keep_newest must be 1 or more")
        if params.get("max_age_days") is not None and params["max_age_days"] < 0:
            raise ImageError("max_age_days must be 0 or more")
        for name in params.get("protect_ssm_parameters") or []:
            validate_ssm_parameter_name(name)
        regions = self.regions()
        validate_region_names(regions)
        if regions != [self.region]:
            validate_region_names(regions, known_regions=self.ec2(self.region or regions[0]).known_regions())

    def protected(self, api, region, image_ids):
        reasons = {}
        for name in self.params.get("protect_ssm_parameters") or []:
            value = self.ssm(region).get_value(name)
            if value in image_ids:
                reasons.setdefault(value, []).append(f"referenced by SSM parameter {name}")
        for image_id, instances in api.image_ids_used_by_instances(image_ids).items():
            reasons.setdefault(image_id, []).append(f"used by instance {', '.join(sorted(instances))}")
        for image_id, templates in api.image_ids_of_launch_templates().items():
            if image_id in image_ids:
                reasons.setdefault(image_id, []).append(f"launch template {', '.join(sorted(templates))}")
        if self.autoscaling is not None:
            for image_id, names in self.autoscaling(region).image_ids_of_launch_configurations().items():
                if image_id in image_ids:
                    reasons.setdefault(image_id, []).append(f"launch configuration {', '.join(sorted(names))}")
        return reasons

    def run(self):
        self.validate()
        plans = []
        family = self.family()
        for region in self.regions():
            api = self.ec2(region)
            images = [summarize_image(i, region) for i in api.family_images(family)]
            if not images:
                continue
            protected = self.protected(api, region, [i["image_id"] for i in images])
            kept, deleted = plan_retention(
                images,
                self.now,
                keep_newest=self.params.get("keep_newest"),
                max_age_days=self.params.get("max_age_days"),
                protected=protected,
            )
            plans.append((api, kept, deleted))
        # Plan every region before deleting anything: a failure while planning deletes nothing.
        left = []
        if not self.check_mode:
            for api, _kept, deleted in plans:
                for image in deleted:
                    api.deregister_image(image["image_id"])
                    if self.params.get("delete_snapshots", True):
                        for snapshot_id in image["snapshot_ids"]:
                            try:
                                api.delete_snapshot(snapshot_id, sleep=self.sleep)
                            except ImageError as e:
                                left.append({"region": api.region, "snapshot_id": snapshot_id, "reason": e.message})
        kept = [self.brief(i) for _api, k, _d in plans for i in k]
        deleted = [self.brief(i) for _api, _k, d in plans for i in d]
        return {"changed": bool(deleted), "kept": kept, "deleted": deleted, "left": left}

    @staticmethod
    def brief(image):
        keys = ("region", "image_id", "name", "creation_date", "snapshot_ids", "reasons")
        return {k: image.get(k) for k in keys}


def main():
    deprecated = dict(removed_in_version="1.0.0", removed_from_collection="burst.golden_ami")
    argument_spec = dict(
        image_family=image_family_option(),
        name_prefix=dict(type="str", **deprecated),
        family_tags=dict(type="dict", **deprecated),
        regions=string_list(),
        keep_newest=dict(type="int"),
        max_age_days=dict(type="int"),
        protect_ssm_parameters=string_list(),
        delete_snapshots=dict(type="bool", default=True),
    )
    module = aws_module(
        argument_spec,
        region_required=False,
        required_one_of=[("image_family", "name_prefix", "family_tags"), ("keep_newest", "max_age_days")],
    )
    if not module.region and not module.params["regions"]:
        module.fail_json(msg="region or regions must be given")
    autoscaling = api_factory(module, AutoScalingApi, "autoscaling")
    ec2, ssm = region_factories(module)
    prune = GoldenAmiPrune(
        module.params, module.region, ec2, ssm, check_mode=module.check_mode, autoscaling=autoscaling
    )
    result = run_or_fail(module, prune.run)
    for item in result["left"]:
        module.warn(f"Snapshot {item['snapshot_id']} in {item['region']} was left: {item['reason']}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
