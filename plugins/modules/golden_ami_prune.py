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
  - Selects the images of a family (owned by this account, by name prefix and/or tags) in every region
    given, keeps the newest O(keep_newest) and/or those younger than O(max_age_days), and deregisters
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
  - Check mode returns the plan and changes nothing.
  - Pass every region the family lives in (the source region and the copy regions) in O(regions).
author:
  - burst.golden_ami maintainers (@burst)
options:
  name_prefix:
    description:
      - Images whose name starts with this prefix belong to the family.
      - At least one of O(name_prefix) and O(family_tags) is required.
    type: str
  family_tags:
    description:
      - Images carrying all these tags belong to the family.
    type: dict
    default: {}
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
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
    description: Returns the kept and deleted lists, with reasons, and deletes nothing.
  diff_mode:
    support: none
    description: Returns no diff; the C(kept) and C(deleted) lists say what changes.
  idempotent:
    support: full
    description: A second run finds nothing more to delete.
"""

EXAMPLES = r"""
- name: Keep the three newest golden images, and none older than 30 days beyond them
  burst.golden_ami.golden_ami_prune:
    name_prefix: burst-golden-v
    regions: [eu-central-1, eu-west-1]
    keep_newest: 3
    max_age_days: 30
    protect_ssm_parameters: [/burst/golden-ami]
  delegate_to: localhost
  register: pruned

- name: Show what was deleted and why
  ansible.builtin.debug:
    msg: "{{ pruned.deleted | map(attribute='image_id') | list }}"
"""

RETURN = r"""
kept:
  description: Images kept, newest first per region, each with the reasons.
  returned: always
  type: list
  elements: dict
  sample:
    - region: eu-central-1
      image_id: ami-0123456789abcdef0
      name: burst-golden-v1.2
      creation_date: "2030-01-02T03:04:05.000Z"
      snapshot_ids: [snap-0123456789abcdef0]
      reasons: [newest of the family, "referenced by SSM parameter /burst/golden-ami"]
deleted:
  description: Images deregistered (or, in check mode, to be deregistered) with their snapshots and the reasons.
  returned: always
  type: list
  elements: dict
  sample:
    - region: eu-central-1
      image_id: ami-0fedcba9876543210
      name: burst-golden-v1.0
      creation_date: "2029-11-02T03:04:05.000Z"
      snapshot_ids: [snap-0fedcba9876543210]
      reasons: [outside the newest 3, older than 30 days (61 days)]
left:
  description: Snapshots that could not be deleted, each with its region, id and reason.
  returned: always
  type: list
  elements: dict
"""

import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule  # noqa: E402
from ansible_collections.burst.golden_ami.plugins.module_utils._images import (  # noqa: E402
    STAGE_CANDIDATE,
    STAGE_PROMOTING,
    STAGE_TAG,
    AutoScalingApi,
    ImageError,
    default_retry,
    fail_module,
    image_tags,
    region_factories,
    summarize_image,
    validate_region_names,
    validate_ssm_parameter_name,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._retention import plan_retention  # noqa: E402


class GoldenAmiPrune:
    """Plan and apply retention in each region. Needs no Ansible to run."""

    def __init__(self, params, region, ec2, ssm, check_mode=False, now=None, sleep=time.sleep, autoscaling=None):
        self.params = params
        self.autoscaling = autoscaling
        self.region = region
        self._ec2_factory = ec2
        self.ssm = ssm
        self._apis = {}
        self.check_mode = check_mode
        self.now = now or datetime.now(timezone.utc)
        self.sleep = sleep

    def ec2(self, region):
        if region not in self._apis:
            self._apis[region] = self._ec2_factory(region)
        return self._apis[region]

    def regions(self):
        regions = []
        for region in self.params.get("regions") or [self.region]:
            if region not in regions:
                regions.append(region)
        return regions

    def validate(self):
        params = self.params
        if not params.get("name_prefix") and not params.get("family_tags"):
            raise ImageError("give name_prefix, family_tags or both to select the image family")
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

    def family(self, api):
        filters = {}
        if self.params.get("name_prefix"):
            filters["name"] = [self.params["name_prefix"] + "*"]
        for key, value in (self.params.get("family_tags") or {}).items():
            filters[f"tag:{key}"] = [str(value)]
        images = api.describe_images(filters=filters)
        prefix = self.params.get("name_prefix") or ""
        return [
            summarize_image(i, api.region)
            for i in images
            if i.get("State") not in ("deregistered",)
            and (i.get("Name") or "").startswith(prefix)
            and image_tags(i).get(STAGE_TAG) not in (STAGE_CANDIDATE, STAGE_PROMOTING)
        ]

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
        for region in self.regions():
            api = self.ec2(region)
            images = self.family(api)
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
    argument_spec = dict(
        name_prefix=dict(type="str"),
        family_tags=dict(type="dict", default={}),
        regions=dict(type="list", elements="str", default=[]),
        keep_newest=dict(type="int"),
        max_age_days=dict(type="int"),
        protect_ssm_parameters=dict(type="list", elements="str", default=[]),
        delete_snapshots=dict(type="bool", default=True),
    )
    module = AnsibleAWSModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_one_of=[("name_prefix", "family_tags"), ("keep_newest", "max_age_days")],
    )
    region = module.region
    if not region and not module.params["regions"]:
        module.fail_json(msg="region or regions must be given")
    ec2, ssm = region_factories(module)

    def autoscaling(for_region):
        return AutoScalingApi(
            module.client("autoscaling", retry_decorator=default_retry(), region=for_region), for_region
        )

    prune = GoldenAmiPrune(module.params, region, ec2, ssm, check_mode=module.check_mode, autoscaling=autoscaling)
    try:
        result = prune.run()
    except ImageError as e:
        fail_module(module, e)
    for item in result["left"]:
        module.warn(f"Snapshot {item['snapshot_id']} in {item['region']} was left: {item['reason']}")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
