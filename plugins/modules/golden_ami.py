#!/usr/bin/python
# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: golden_ami
short_description: Capture a golden machine image from an instance, copy it and publish it
version_added: 0.1.0
description:
  - Creates an EC2 image (AMI) from an instance, waits until it is C(available), tags the image
    B(and its snapshots), optionally requires IMDSv2, shares it and schedules its deprecation.
  - Copies the image to other regions, tags the copies and their snapshots, and waits for every copy.
  - Only once every image is available, publishes each region's image id to an SSM parameter with
    C(DataType=aws:ec2:image), which launch templates resolve.
  - With O(stage=candidate), publishes nothing. The images are candidates, tagged C(ImageStage=candidate)
    with their snapshots from the moment they are created, for M(burst.golden_ami.golden_ami_promote) to
    publish once they are verified and M(burst.golden_ami.golden_ami_discard) to remove when they fail.
  - Writes a build manifest (JSON) that Packer's tooling reads, with the build's own facts added.
  - Reports what keeping the images costs per month in every region (RV(storage)), also in the manifest.
  - Idempotent. An image that already has O(name), or carries the O(build_id) tag, is returned with
    C(changed=false); a name that another build's image holds is refused. Copies are requested with a
    client token, so that a retried copy does not make a second image.
  - Everything is checked before anything is created (instance, name, regions, SSM parameter name,
    names taken in the copy regions), so that a bad input leaves nothing half published.
  - The module writes O(manifest_path) on the host it runs on; run it on the controller
    (C(connection=local) or C(delegate_to=localhost)), as AWS modules usually are.
author:
  - burst.golden_ami maintainers (@burst)
options:
  name:
    description:
      - Name of the image, 3 to 128 characters among letters, digits, spaces and C(( ) [ ] . / - ' @ _).
      - Use a version scheme, for example C(burst-golden-v1.0).
    type: str
    required: true
  version:
    description:
      - Version of the build, tagged as C(Version) and written to the manifest.
    type: str
  build_id:
    description:
      - Identifier of the build (a CI run id, for example), tagged as O(build_id_tag).
      - An image carrying this tag is the image of this build.
    type: str
  build_id_tag:
    description:
      - Tag key that holds O(build_id).
    type: str
    default: BuildId
  instance_id:
    description:
      - Instance to capture. Required unless the image exists already.
    type: str
  description:
    description:
      - Description of the image and its copies.
    type: str
  no_reboot:
    description:
      - Do not stop the instance before capturing it. The file systems may then be inconsistent.
    type: bool
    default: false
  boot_mode:
    description:
      - Boot mode of the image. CreateImage can only override the instance's boot mode to C(uefi);
        without this option the image inherits the instance's boot mode.
    type: str
    choices: [uefi]
  imds_support:
    description:
      - Set to C(v2.0) so that instances launched from the image require IMDSv2. AWS cannot undo it.
    type: str
    choices: ['v2.0']
  tags:
    description:
      - Tags of the image, its copies and all their snapshots.
      - O(build_id_tag) and C(Version) are added from O(build_id) and O(version) unless given here, and
        C(BaseImageId) names the image the instance was launched from. Copies also get C(SourceImageId)
        and C(SourceRegion).
      - Images and snapshots are tagged when they are created, copies included.
    type: dict
    default: {}
  purge_tags:
    description:
      - Remove tags not in O(tags) from the images and snapshots (C(aws:) tags are kept).
    type: bool
    default: false
  deprecate_at:
    description:
      - Time (ISO 8601) at which the image and its copies are deprecated.
    type: str
  deprecate_after_days:
    description:
      - Deprecate the image and its copies this many days after the image's creation.
    type: int
  stage:
    description:
      - V(published) captures, copies, shares and publishes to O(ssm_parameter) in one step.
      - V(candidate) captures and copies only. The images and their snapshots are tagged C(ImageStage=candidate)
        at creation (CreateImage and CopyImage C(TagSpecifications)), so that an interrupted run leaves nothing
        untagged. No SSM parameter is written and no launch permission is given (O(ssm_parameter) and
        O(launch_permissions) are refused). An image that was promoted since keeps its C(ImageStage) tag.
    type: str
    choices: [candidate, published]
    default: published
  copy_regions:
    description:
      - Regions to copy the image to (the source region is skipped).
    type: list
    elements: str
    default: []
  copy_kms_key_ids:
    description:
      - KMS key per copy region, a dictionary from region name to key id, ARN or alias.
      - A region listed here gets an encrypted copy.
    type: dict
    default: {}
  copy_encrypted:
    description:
      - Encrypt every copy (with the region's default EBS key unless O(copy_kms_key_ids) names one).
    type: bool
    default: false
  ssm_parameter:
    description:
      - SSM parameter that receives the image id in each region, with C(DataType=aws:ec2:image).
    type: str
  ssm_parameter_description:
    description:
      - Description of the SSM parameter.
    type: str
  manifest_path:
    description:
      - Path of the manifest JSON to write. Its C(builds[].artifact_id) is Packer's C(region:ami,region:ami).
    type: path
  manifest_contents:
    description:
      - What the image holds (models with revisions, container images with digests, sizes), written to
        the manifest under C(contents).
    type: dict
    default: {}
  wait_timeout:
    description:
      - Seconds to wait for the image and each copy to become available.
    type: int
    default: 3600
  wait_poll_interval:
    description:
      - Seconds between two polls of the image states.
    type: int
    default: 15
  progress_file:
    description:
      - A file (JSON with a C(line)) rewritten at each poll with the state of every image and the progress of
        its snapshots, for M(burst.golden_ami.job_progress) to print when the module runs asynchronously.
    type: path
  snapshot_storage_prices:
    description:
      - USD per GB-month of EBS snapshot storage (standard tier) by region, for RV(storage).
      - A region given here replaces the collection's table, which holds AWS's list prices as of the date
        RV(storage.prices_as_of) names, for a few regions only. A region in neither has no price, and
        RV(storage.error) says so.
    type: dict
    default: {}
extends_documentation_fragment:
  - burst.golden_ami.aws.publish
  - burst.golden_ami.ebs_volume.block_devices
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
notes:
  - Deprecation uses EnableImageDeprecation, which some AWS emulators do not implement; the module then
    fails and says so rather than skipping it.
"""

EXAMPLES = r"""
- name: Capture the golden image, copy it and publish it
  burst.golden_ami.golden_ami:
    region: eu-central-1
    instance_id: "{{ builder_instance_id }}"
    name: "burst-golden-v{{ burst_version }}"
    version: "{{ burst_version }}"
    build_id: "{{ ci_run_id }}"
    description: Golden image for burst inference instances
    block_devices:
      - device_name: /dev/sda1
        volume_size: 80
        volume_type: gp3
        iops: 6000
        throughput: 500
        encrypted: true
    imds_support: "v2.0"
    tags:
      Project: burst
    deprecate_after_days: 7
    copy_regions: [eu-west-1]
    copy_kms_key_ids:
      eu-west-1: alias/golden-images
    ssm_parameter: /burst/golden-ami
    manifest_path: "{{ playbook_dir }}/manifest.json"
    manifest_contents:
      models:
        - id: intfloat/multilingual-e5-large
          revision: 0123456789abcdef0123456789abcdef01234567
  delegate_to: localhost
  register: golden

- name: Show the image of each region
  ansible.builtin.debug:
    msg: "{{ golden.images | dict2items | map(attribute='value.image_id') | list }}"
"""

RETURN = r"""
image_id:
  description: Id of the image in the source region; null in check mode when it would be created.
  returned: always
  type: str
  sample: ami-0123456789abcdef0
name:
  description: Name of the image.
  returned: always
  type: str
  sample: burst-golden-v1.0
region:
  description: Source region.
  returned: always
  type: str
  sample: eu-central-1
images:
  description: The image in each region (source and copies) that exists.
  returned: always
  type: dict
  contains:
    image_id:
      description: Image id in that region.
      type: str
    snapshot_ids:
      description: Snapshots of the image.
      type: list
      elements: str
    state:
      description: Image state.
      type: str
    tags:
      description: Image tags.
      type: dict
  sample:
    eu-central-1:
      image_id: ami-0123456789abcdef0
      snapshot_ids: [snap-0123456789abcdef0]
      state: available
ssm_parameters:
  description: The SSM parameter in each region and the image id it holds (or would hold).
  returned: when O(ssm_parameter) is set
  type: dict
  sample:
    eu-central-1:
      name: /burst/golden-ami
      value: ami-0123456789abcdef0
manifest:
  description: The manifest document; null in check mode when the image would be created.
  returned: always
  type: dict
storage:
  description:
    - What keeping the images costs per month, in every region they are in, also written to the manifest.
    - A snapshot's size is C(FullSnapshotSizeInBytes) when AWS gives it (the bytes a full snapshot stores),
      else the size of its volume (C(volume-size)). The first snapshot of an image is billed for the blocks
      in use, so C(volume-size) is an upper bound.
    - Prices are list prices as of RV(storage.prices_as_of) unless O(snapshot_storage_prices) gives them.
    - Reading the snapshots or pricing them never fails the task; C(error) then says what is missing and
      C(total_usd_per_month) is null.
  returned: always; null in check mode when the image would be created
  type: dict
  contains:
    currency:
      description: Always C(USD).
      type: str
    prices_as_of:
      description: The date (YYYY-MM-DD) of the collection's list prices.
      type: str
    regions:
      description:
        - Per region, C(image_id), C(snapshots) (C(snapshot_id), C(size_gib), C(size_source)
          C(full-snapshot-size) or C(volume-size)), C(size_gib), C(usd_per_gb_month), C(price_source)
          (C(table) or C(given)) and C(usd_per_month).
      type: dict
    total_usd_per_month:
      description: The sum over the regions; null when a region has no price or could not be read.
      type: float
    error:
      description: What could not be read or priced.
      type: str
      returned: when something could not be read or priced
  sample:
    currency: USD
    prices_as_of: "2026-01-21"
    regions:
      eu-central-1:
        image_id: ami-0123456789abcdef0
        snapshots:
          - snapshot_id: snap-0123456789abcdef0
            size_gib: 21.5
            size_source: full-snapshot-size
        size_gib: 21.5
        usd_per_gb_month: 0.054
        price_source: table
        usd_per_month: 1.161
    total_usd_per_month: 1.161
actions:
  description: What the module did, or would do in check mode, one line each.
  returned: always
  type: list
  elements: str
  sample: ["create image burst-golden-v1.0 from i-0123456789abcdef0 in eu-central-1"]
"""

import os  # noqa: E402
import time  # noqa: E402

from ansible_collections.burst.golden_ami.plugins.module_utils._aws import (  # noqa: E402
    BASE_IMAGE_TAG,
    BUILD_ID_TAG,
    SOURCE_IMAGE_TAG,
    SOURCE_REGION_TAG,
    STAGE_CANDIDATE,
    STAGE_PROMOTED,
    STAGE_PROMOTING,
    STAGE_TAG,
    VERSION_TAG,
    client_token,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._image_options import (  # noqa: E402
    block_device_mappings,
    deprecation_time,
    same_time,
    validate_image_name,
    validate_region_names,
    validate_ssm_parameter_name,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._images import (  # noqa: E402
    ImageError,
    Regions,
    image_snapshot_ids,
    image_tags,
    summarize_image,
    tagged_id,
    wait_for_images,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._manifest import (  # noqa: E402
    build_manifest,
    manifest_differs,
    write_manifest,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._params import (  # noqa: E402
    LAUNCH_PERMISSIONS_OPTION,
    aws_module,
    ebs_volume_options,
    region_factories,
    run_or_fail,
    string_list,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._prices import snapshot_storage_price  # noqa: E402
from ansible_collections.burst.golden_ami.plugins.module_utils._progress import ProgressFile  # noqa: E402
from ansible_collections.burst.golden_ami.plugins.module_utils._publish import image_storage  # noqa: E402


def copy_client_token(source_image_id, region, name):
    """The same copy request always carries the same token."""
    return client_token("copy", source_image_id, region, name)


class GoldenAmi(Regions):
    """Capture, converge, copy and publish one golden image. Needs no Ansible to run.

    ``ec2`` and ``ssm`` are factories: region -> ImageApi / ParameterApi.
    """

    def __init__(self, params, region, ec2, ssm, check_mode=False, warn=None, sleep=time.sleep, clock=time.monotonic):
        super().__init__(params, region, ec2, ssm, check_mode=check_mode, sleep=sleep)
        self.warn = warn or (lambda message: None)
        self.clock = clock
        self.changed = False
        self.build_id, self.build_id_tag = tagged_id(params, "build_id", BUILD_ID_TAG)
        self.base_image = None
        self._progress = None
        self._started = clock()

    # -- helpers

    def act(self, text):
        self.changed = True
        super().act(text)

    def wanted_tags(self):
        tags = {}
        if self.build_id:
            tags[self.build_id_tag] = self.build_id
        if self.params.get("version"):
            tags[VERSION_TAG] = self.params["version"]
        if self.base_image:
            tags[BASE_IMAGE_TAG] = self.base_image
        if self.params.get("stage") == STAGE_CANDIDATE:
            tags[STAGE_TAG] = STAGE_CANDIDATE
        tags.update({k: str(v) for k, v in (self.params.get("tags") or {}).items()})
        return tags

    @staticmethod
    def tags_for(image, tags):
        """``tags`` for an existing image: a candidate promoted since keeps its stage."""
        current = image_tags(image).get(STAGE_TAG)
        if STAGE_TAG in tags and current in (STAGE_PROMOTING, STAGE_PROMOTED):
            return dict(tags, **{STAGE_TAG: current})
        return tags

    @staticmethod
    def tag_specifications(tags, *resource_types):
        tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
        return [{"ResourceType": resource_type, "Tags": tag_list} for resource_type in resource_types]

    def report(self, what):
        """A progress callback for wait_for_images that rewrites ``progress_file``, or None."""
        if not self.params.get("progress_file") or self.check_mode:
            return None
        if self._progress is None:
            self._progress = ProgressFile(self.params["progress_file"], "capture")

        def write(seen):
            parts = []
            for region, (api, image_id, image) in sorted(seen.items()):
                state = (image or {}).get("State", "not visible yet")
                text = f"{image_id} in {region} {state}"
                if state == "pending":
                    snapshots = api.snapshot_progress(image_snapshot_ids(image))
                    if snapshots:
                        text += " (snapshot " + ", ".join(f"{k} {v}" for k, v in sorted(snapshots.items())) + ")"
                parts.append(text)
            elapsed = int(self.clock() - self._started)
            self._progress.update(line=f"{what}: {'; '.join(parts)} after {elapsed} s", force=True)

        return write

    def copy_regions(self):
        regions = []
        for region in self.params.get("copy_regions") or []:
            if region != self.region and region not in regions:
                regions.append(region)
        return regions

    # -- checks, before anything changes

    def validate(self):
        params = self.params
        validate_image_name(params["name"])
        if params.get("ssm_parameter"):
            validate_ssm_parameter_name(params["ssm_parameter"])
        regions = self.copy_regions()
        validate_region_names([self.region, *regions])
        unknown_kms = sorted(set(params.get("copy_kms_key_ids") or {}) - set(regions))
        if unknown_kms:
            raise ImageError(f"copy_kms_key_ids names regions that are not in copy_regions: {', '.join(unknown_kms)}")
        if params.get("deprecate_after_days") is not None and params["deprecate_after_days"] < 1:
            raise ImageError("deprecate_after_days must be 1 or more")
        if params.get("stage") == STAGE_CANDIDATE:
            wanted = params.get("launch_permissions") or {}
            if params.get("ssm_parameter") or any(wanted.get(k) for k in wanted):
                raise ImageError(
                    "stage=candidate publishes nothing: give ssm_parameter and launch_permissions to "
                    "burst.golden_ami.golden_ami_promote instead"
                )
        for region, price in sorted((params.get("snapshot_storage_prices") or {}).items()):
            try:
                snapshot_storage_price(region, {region: price})
            except ValueError as e:
                raise ImageError(f"snapshot_storage_prices: {e}") from None
        if params.get("wait_timeout", 1) < 1 or params.get("wait_poll_interval", 1) < 1:
            raise ImageError("wait_timeout and wait_poll_interval must be 1 or more")
        if regions or params.get("copy_kms_key_ids"):
            validate_region_names(regions, known_regions=self.ec2(self.region).known_regions())
        block_device_mappings(params.get("block_devices"))

    def find_own_image(self, region):
        """The image of this build in ``region``, or None; refuse a name another build holds."""
        api = self.ec2(region)
        name = self.params["name"]
        by_name = api.find_images(name=name)
        for image in by_name:
            owner_build = image_tags(image).get(self.build_id_tag)
            if self.build_id and owner_build != self.build_id:
                raise ImageError(
                    f"Image name {name!r} is already taken in {region} by {image['ImageId']} "
                    f"(build id {owner_build or 'not set'}, this build is {self.build_id})"
                )
        if len(by_name) > 1:
            ids = ", ".join(i["ImageId"] for i in by_name)
            raise ImageError(f"Several images are named {name!r} in {region}: {ids}; deregister all but one")
        if by_name:
            return by_name[0]
        if self.build_id:
            by_build = api.find_images(tags={self.build_id_tag: self.build_id})
            if by_build:
                image = by_build[0]
                self.warn(
                    f"Build {self.build_id} already made {image['ImageId']} named {image.get('Name')!r} "
                    f"in {region}; returning it instead of creating {name!r}"
                )
                return image
        return None

    # -- the steps

    def run(self):
        self.validate()
        params = self.params
        source_api = self.ec2(self.region)
        source = self.find_own_image(self.region)
        existing_copies = {region: self.find_own_image(region) for region in self.copy_regions()}

        if source is None:
            if not params.get("instance_id"):
                raise ImageError(
                    f"Image {params['name']!r} does not exist in {self.region} and no instance_id is given"
                )
            self.base_image = source_api.get_instance(params["instance_id"]).get("ImageId")
            if self.check_mode:
                return self.plan_new_image(existing_copies)
            source = self.create_image()
        else:
            self.base_image = image_tags(source).get(BASE_IMAGE_TAG)
        source = wait_for_images(
            [(source_api, source["ImageId"])],
            params["wait_timeout"],
            params["wait_poll_interval"],
            sleep=self.sleep,
            clock=self.clock,
            progress=self.report("image"),
        )[self.region]
        self.converge_image(self.region, source, self.tags_for(source, self.wanted_tags()))

        copies = self.ensure_copies(source, existing_copies)
        for region, image in copies.items():
            self.converge_image(region, image, self.tags_for(image, self.copy_tags(source)))

        images = {self.region: source, **copies}
        images = {region: self.refresh(region, image) for region, image in images.items()}
        summaries = {region: summarize_image(image, region) for region, image in images.items()}
        ssm_parameters = self.publish(summaries)
        if self.params.get("ssm_parameter"):
            for region in self.copy_regions():
                if region not in summaries:  # a copy that check mode did not make
                    self.act(f"publish the copy's image id to SSM parameter {self.params['ssm_parameter']} in {region}")
        storage = image_storage(self.ec2, summaries, self.params.get("snapshot_storage_prices"))
        manifest = self.manifest(summaries, source, storage)
        return self.result(source["ImageId"], summaries, ssm_parameters, manifest, storage)

    def copy_tags(self, source):
        return dict(self.wanted_tags(), **{SOURCE_IMAGE_TAG: source["ImageId"], SOURCE_REGION_TAG: self.region})

    def plan_new_image(self, existing_copies):
        name = self.params["name"]
        self.act(f"create image {name} from {self.params['instance_id']} in {self.region}")
        self.act(f"tag image {name} and its snapshots in {self.region}")
        for region in self.copy_regions():
            if existing_copies.get(region) is None:
                self.act(f"copy image {name} to {region}")
        if self.params.get("ssm_parameter"):
            for region in [self.region, *self.copy_regions()]:
                self.act(f"publish the image id to SSM parameter {self.params['ssm_parameter']} in {region}")
        if self.params.get("manifest_path"):
            self.act(f"write manifest {self.params['manifest_path']}")
        return self.result(None, {}, {}, None)

    def create_image(self):
        params = self.params
        request = {
            "InstanceId": params["instance_id"],
            "Name": params["name"],
            "NoReboot": bool(params.get("no_reboot")),
        }
        if params.get("description"):
            request["Description"] = params["description"]
        mappings = block_device_mappings(params.get("block_devices"))
        if mappings:
            request["BlockDeviceMappings"] = mappings
        if params.get("boot_mode"):
            request["BootModeOverride"] = params["boot_mode"]
        tags = self.wanted_tags()
        if tags:
            # The image and its snapshots carry the bake's tags from their creation: a run that
            # is killed right after CreateImage leaves nothing that a sweep by tag cannot find.
            request["TagSpecifications"] = self.tag_specifications(tags, "image", "snapshot")
        image_id = self.ec2(self.region).create_image(**request)
        self.act(f"create image {params['name']} ({image_id}) from {params['instance_id']} in {self.region}")
        return {"ImageId": image_id}

    def ensure_copies(self, source, existing_copies):
        """Request the missing copies (all at once), then wait for every copy together."""
        params = self.params
        pending = []
        for region in self.copy_regions():
            api = self.ec2(region)
            image = existing_copies.get(region)
            if image is not None:
                pending.append((api, image["ImageId"]))
                continue
            request = {
                "SourceImageId": source["ImageId"],
                "SourceRegion": self.region,
                "Name": params["name"],
                "ClientToken": copy_client_token(source["ImageId"], region, params["name"]),
            }
            if params.get("description"):
                request["Description"] = params["description"]
            kms_key = (params.get("copy_kms_key_ids") or {}).get(region)
            if kms_key or params.get("copy_encrypted"):
                request["Encrypted"] = True
            if kms_key:
                request["KmsKeyId"] = kms_key
            request["TagSpecifications"] = self.tag_specifications(self.copy_tags(source), "image", "snapshot")
            if self.check_mode:
                self.act(f"copy image {source['ImageId']} to {region}")
                continue
            image_id = api.copy_image(**request)
            self.act(f"copy image {source['ImageId']} to {region} ({image_id})")
            pending.append((api, image_id))
        if not pending:
            return {}
        return wait_for_images(
            pending,
            params["wait_timeout"],
            params["wait_poll_interval"],
            sleep=self.sleep,
            clock=self.clock,
            progress=self.report("copies"),
        )

    def converge_image(self, region, image, tags):
        """Tags on the image and its snapshots, IMDSv2, launch permissions, deprecation."""
        api = self.ec2(region)
        image_id = image["ImageId"]
        snapshot_ids = image_snapshot_ids(image)
        current = {image_id: image_tags(image)}
        current.update(api.resource_tags(snapshot_ids) if snapshot_ids else {})
        purge = bool(self.params.get("purge_tags"))
        for resource_id in api.ensure_tags([image_id, *snapshot_ids], tags, purge, self.check_mode, current):
            self.act(f"tag {resource_id} in {region}")

        if self.params.get("imds_support") == "v2.0" and image.get("ImdsSupport") != "v2.0":
            self.act(f"require IMDSv2 on {image_id} in {region}")
            if not self.check_mode:
                api.require_imds_v2(image_id)

        granted = api.ensure_launch_permissions(image_id, self.params.get("launch_permissions"), self.check_mode)
        if granted:
            self.act(f"share {image_id} in {region} with {', '.join(granted)}")

        deprecate_at = deprecation_time(
            image.get("CreationDate"), self.params.get("deprecate_at"), self.params.get("deprecate_after_days")
        )
        if deprecate_at and not same_time(deprecate_at, image.get("DeprecationTime")):
            self.act(f"deprecate {image_id} in {region} at {deprecate_at}")
            if not self.check_mode:
                api.enable_deprecation(image_id, deprecate_at)

    def refresh(self, region, image):
        if self.check_mode:
            return image
        return self.ec2(region).get_image(image["ImageId"]) or image

    def publish(self, summaries):
        """Point the SSM parameter of each region at that region's image; all images are available by now."""
        name = self.params.get("ssm_parameter")
        if not name:
            return {}
        published = {}
        for region, summary in summaries.items():
            ssm = self.ssm(region)
            if ssm.get_value(name) != summary["image_id"]:
                self.act(f"publish {summary['image_id']} to SSM parameter {name} in {region}")
                if not self.check_mode:
                    ssm.put_image_id(name, summary["image_id"], self.params.get("ssm_parameter_description"))
            published[region] = {"name": name, "value": summary["image_id"]}
        return published

    def manifest(self, summaries, source, storage=None):
        manifest = build_manifest(
            name=self.params["name"],
            source_region=self.region,
            images_by_region=summaries,
            build_id=self.build_id,
            version=self.params.get("version"),
            source_image=self.base_image,
            contents=self.params.get("manifest_contents"),
            storage=storage,
        )
        manifest["source_instance"] = source.get("SourceInstanceId")
        path = self.params.get("manifest_path")
        if path and manifest_differs(path, manifest):
            self.act(f"write manifest {path}")
            if not self.check_mode:
                try:
                    write_manifest(path, manifest)
                except OSError as e:
                    raise ImageError(f"Failed to write manifest {path}: {e}") from e
        return manifest

    def result(self, image_id, summaries, ssm_parameters, manifest, storage=None):
        result = {
            "changed": self.changed,
            "image_id": image_id,
            "name": self.params["name"],
            "region": self.region,
            "images": summaries,
            "manifest": manifest,
            "storage": storage,
            "actions": self.actions,
        }
        if self.params.get("ssm_parameter"):
            result["ssm_parameters"] = ssm_parameters
        return result


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        version=dict(type="str"),
        build_id=dict(type="str"),
        build_id_tag=dict(type="str", default=BUILD_ID_TAG),
        instance_id=dict(type="str"),
        description=dict(type="str"),
        no_reboot=dict(type="bool", default=False),
        block_devices=dict(
            type="list",
            elements="dict",
            default=[],
            options=ebs_volume_options(
                device_name=dict(type="str", required=True),
                volume_size=dict(type="int"),
                delete_on_termination=dict(type="bool"),
                snapshot_id=dict(type="str"),
                no_device=dict(type="bool", default=False),
            ),
        ),
        boot_mode=dict(type="str", choices=["uefi"]),
        imds_support=dict(type="str", choices=["v2.0"]),
        tags=dict(type="dict", default={}),
        purge_tags=dict(type="bool", default=False),
        deprecate_at=dict(type="str"),
        deprecate_after_days=dict(type="int"),
        launch_permissions=LAUNCH_PERMISSIONS_OPTION,
        stage=dict(type="str", choices=["candidate", "published"], default="published"),
        copy_regions=string_list(),
        copy_kms_key_ids=dict(type="dict", default={}, no_log=False),
        copy_encrypted=dict(type="bool", default=False),
        ssm_parameter=dict(type="str"),
        ssm_parameter_description=dict(type="str"),
        manifest_path=dict(type="path"),
        manifest_contents=dict(type="dict", default={}),
        wait_timeout=dict(type="int", default=3600),
        wait_poll_interval=dict(type="int", default=15),
        progress_file=dict(type="path"),
        snapshot_storage_prices=dict(type="dict", default={}),
    )
    module = aws_module(argument_spec, mutually_exclusive=[("deprecate_at", "deprecate_after_days")])
    params = dict(module.params)
    if params.get("manifest_path"):
        params["manifest_path"] = os.path.abspath(params["manifest_path"])
    ec2, ssm = region_factories(module)
    build = GoldenAmi(params, module.region, ec2, ssm, check_mode=module.check_mode, warn=module.warn)
    module.exit_json(**run_or_fail(module, build.run, actions=build.actions))


if __name__ == "__main__":
    main()
