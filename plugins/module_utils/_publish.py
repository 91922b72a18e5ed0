# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The one commit point of a bake: promote its candidate images, or discard them.

Private to this collection. A bake captures *candidates* (``golden_ami`` with
``stage=candidate``): images and snapshots tagged ``ImageStage=candidate`` in
every region, which production never sees. ``Promotion`` is the only step that
changes what production sees: it records the SSM values it replaces (on each
region's image, in the ``PromotedOver`` tag, before changing anything), points
the parameters at the candidates, shares them and tags them ``promoted``; when
one call fails, it puts every parameter back. ``Discard`` removes a bake's
images that were never promoted, in every region, with their snapshots; an
image caught in the middle of a promotion (``ImageStage=promoting``, after an
interrupted run) first gets the SSM values it replaced put back.

``image_storage`` says what the published images cost to keep, per month, in
every region they live in (their snapshots at the list price of snapshot
storage); it never fails a publish.

``ec2`` and ``ssm`` are factories: region -> ImageApi / ParameterApi.
"""

from __future__ import annotations

import json
import time

from ansible_collections.burst.golden_ami.plugins.module_utils._aws import (
    BAKE_ID_TAG,
    BAKE_STARTED_TAG,
    PREVIOUS_VALUES_TAG,
    STAGE_CANDIDATE,
    STAGE_PROMOTED,
    STAGE_PROMOTING,
    STAGE_TAG,
    TAG_VALUE_MAX,
    AwsError,
    call,
    error_code,
    error_message,
    parse_time,
    tag_filters,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._image_options import (
    validate_region_names,
    validate_ssm_parameter_name,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._images import (
    ImageError,
    Regions,
    image_snapshot_ids,
    image_tags,
    tagged_id,
)
from ansible_collections.burst.golden_ami.plugins.module_utils._prices import PRICES_DATE, snapshot_storage_price


def reason(error):
    """An AwsError's message with AWS's message and error code, for a list of what was left."""
    if error.exception is None:
        return error.message
    code = error_code(error.exception)
    text = error.message if error.DETAIL else f"{error.message}: {error_message(error.exception)}"
    return f"{text} ({code})" if code else text


def validate_scope(bake_id, older_than_minutes, id_option):
    """One bake (its id) or stale bakes (an age), never both nor neither."""
    if bool(bake_id) == (older_than_minutes is not None):
        raise ImageError(f"give exactly one of {id_option} (one bake) and older_than_minutes (stale bakes)")
    if older_than_minutes is not None and older_than_minutes < 1:
        raise ImageError("older_than_minutes must be 1 or more")


class _Regions(Regions):
    """What Promotion and Discard share: the checked regions and the bake id tag."""

    def regions(self):
        return validate_region_names(super().regions())

    @property
    def build_tag(self):
        return tagged_id(self.params, "build_id", BAKE_ID_TAG)[1]


def previous_values(image):
    """The SSM values an image being promoted replaced in its region: {parameter: value or None}."""
    text = image_tags(image).get(PREVIOUS_VALUES_TAG)
    if not text:
        return {}
    try:
        values = json.loads(text)
    except ValueError:
        return {}
    return values if isinstance(values, dict) else {}


def restore_parameters(ssm, image_id, values, check_mode=False):
    """Put back ``values`` ({parameter: previous value or None}) where a parameter still names ``image_id``.

    Returns what was restored, one line each. A parameter that names another image
    by now was changed by someone else since, and is left alone.
    """
    restored = []
    for name, previous in sorted(values.items()):
        if ssm.get_value(name) != image_id:
            continue
        if not check_mode:
            if previous:
                ssm.put_image_id(name, previous)
            else:
                ssm.delete(name)
        restored.append(f"{name} in {ssm.region} back to {previous or '(none: deleted)'}")
    return restored


class Promotion(_Regions):
    """Point the SSM parameters of every region at the bake's images; undo everything on failure."""

    def validate(self):
        if not self.params.get("build_id"):
            raise ImageError("build_id is required: it names the bake whose candidates are promoted")
        for name in self.params.get("ssm_parameters") or []:
            validate_ssm_parameter_name(name)

    def find_images(self):
        images = {}
        for region in self.regions():
            found = self.ec2(region).find_images(tags={self.build_tag: self.params["build_id"]})
            if not found:
                raise ImageError(
                    f"No image of bake {self.params['build_id']} ({self.build_tag}) in {region}: "
                    "capture it (and copy it there) before promoting"
                )
            if len(found) > 1:
                ids = ", ".join(i["ImageId"] for i in found)
                raise ImageError(f"Several images of bake {self.params['build_id']} in {region}: {ids}")
            image = found[0]
            if image.get("State") != "available":
                raise ImageError(f"Image {image['ImageId']} in {region} is {image.get('State')}, not available")
            images[region] = image
        return images

    def run(self):
        self.validate()
        images = self.find_images()
        names = list(dict.fromkeys(self.params.get("ssm_parameters") or []))
        previous = {region: {name: self.ssm(region).get_value(name) for name in names} for region in images}
        changes = [
            (region, name, value)
            for region, values in previous.items()
            for name, value in values.items()
            if value != images[region]["ImageId"]
        ]
        # What each region's image replaces, recorded on it before anything changes (for a rollback).
        records = {
            region: {n: v for n, v in values.items() if v != images[region]["ImageId"]}
            for region, values in previous.items()
        }
        for region, values in records.items():
            record = json.dumps(values, sort_keys=True)
            if len(record) > TAG_VALUE_MAX:
                raise ImageError(
                    f"Too many SSM parameters to record for a rollback in {region} ({len(record)} characters of "
                    f"{TAG_VALUE_MAX} in one tag): promote fewer parameters at once"
                )
        if not self.check_mode:
            self.mark_promoting(images, records)
        applied = []
        try:
            for region, name, value in changes:
                image_id = images[region]["ImageId"]
                self.act(f"publish {image_id} to SSM parameter {name} in {region} (was {value or 'not set'})")
                if not self.check_mode:
                    self.ssm(region).put_image_id(name, image_id, self.params.get("ssm_parameter_description"))
                    applied.append((region, name, value))
        except ImageError as error:
            raise ImageError(self.rollback(applied, images, error), exception=error.exception) from error
        for region, image in images.items():
            self.finish(region, image)
        return {
            "changed": bool(self.actions),
            "images": {region: image["ImageId"] for region, image in images.items()},
            "ssm_parameters": {
                region: {
                    name: {"value": images[region]["ImageId"], "previous": value} for name, value in values.items()
                }
                for region, values in previous.items()
            },
            "actions": self.actions,
        }

    def mark_promoting(self, images, records):
        """Before any parameter changes: record, on each image, the values it replaces."""
        for region, image in images.items():
            values = records[region]
            if not values:
                continue
            tags = {STAGE_TAG: STAGE_PROMOTING, PREVIOUS_VALUES_TAG: json.dumps(values, sort_keys=True)}
            self.ec2(region).ensure_tags([image["ImageId"]], tags, current={image["ImageId"]: image_tags(image)})

    def rollback(self, applied, images, error):
        """Undo ``applied`` changes, newest first; the message says what was restored and what was not."""
        restored, failed = [], []
        for region, name, value in reversed(applied):
            try:
                if value:
                    self.ssm(region).put_image_id(name, value)
                else:
                    self.ssm(region).delete(name)
                restored.append(f"{name} in {region} to {value or '(none: deleted)'}")
            except ImageError as undo_error:
                failed.append(f"{name} in {region} (still {images[region]['ImageId']}: {undo_error.message})")
        for region, image in images.items():
            if failed:
                break  # keep the 'promoting' record, so that golden_ami_discard can restore them later
            try:
                self.ec2(region).ensure_tags([image["ImageId"]], {STAGE_TAG: STAGE_CANDIDATE})
            except ImageError:
                pass
        message = f"Promote failed: {error.message}."
        message += f" Restored {', '.join(restored)}." if restored else " No SSM parameter had changed yet."
        if failed:
            message += (
                f" Could NOT restore {', '.join(failed)}: run burst.golden_ami.golden_ami_discard for build "
                f"{self.params['build_id']}, which restores them from the image's {PREVIOUS_VALUES_TAG} tag."
            )
        return message

    def finish(self, region, image):
        api = self.ec2(region)
        image_id = image["ImageId"]
        granted = api.ensure_launch_permissions(image_id, self.params.get("launch_permissions"), self.check_mode)
        if granted:
            self.act(f"share {image_id} in {region} with {', '.join(granted)}")
        snapshot_ids = image_snapshot_ids(image)
        current = {image_id: image_tags(image)}
        if not self.check_mode:
            current = api.resource_tags([image_id, *snapshot_ids])
        tagged = api.ensure_tags(
            [image_id, *snapshot_ids], {STAGE_TAG: STAGE_PROMOTED}, False, self.check_mode, current
        )
        if tagged:
            self.act(f"mark {image_id} in {region} promoted")


class Discard(_Regions):
    """Remove a bake's images that were never promoted, in every region, and their snapshots."""

    def validate(self):
        validate_scope(self.params.get("build_id"), self.params.get("older_than_minutes"), "build_id")

    def select(self, api, now):
        if self.params.get("build_id"):
            return api.find_images(tags={self.build_tag: self.params["build_id"]})
        tags = {k: str(v) for k, v in (self.params.get("family_tags") or {}).items()}
        started_tag = self.params.get("started_tag") or BAKE_STARTED_TAG
        cutoff = now - self.params["older_than_minutes"] * 60
        images = []
        for image in (
            api.find_images(tags=tags) if tags else api.describe_images(filters=tag_filters({started_tag: None}))
        ):
            started = image_tags(image).get(started_tag)
            if not started or image.get("State") == "deregistered":
                continue
            try:
                if parse_time(started).timestamp() < cutoff:
                    images.append(image)
            except AwsError:
                continue
        return images

    def run(self, now=None):
        self.validate()
        now = time.time() if now is None else now
        deleted, restored, kept, left = [], [], [], []
        for region in self.regions():
            api = self.ec2(region)
            images = self.select(api, now)
            keep_snapshots = set()
            for image in images:
                image_id = image["ImageId"]
                stage = image_tags(image).get(STAGE_TAG)
                if stage == STAGE_PROMOTED:
                    kept.append({"region": region, "image_id": image_id, "reason": "promoted"})
                    keep_snapshots.update(image_snapshot_ids(image))
                    continue
                if stage is None:
                    # No stage: published in one step (golden_ami's stage=published, or an older version
                    # of this collection). It may be in production; only a retention policy removes it.
                    kept.append({"region": region, "image_id": image_id, "reason": "published (no ImageStage tag)"})
                    keep_snapshots.update(image_snapshot_ids(image))
                    continue
                in_use = self.in_use(region, image_id, image)
                if in_use:
                    left.append({"region": region, "resource": image_id, "reason": in_use})
                    keep_snapshots.update(image_snapshot_ids(image))
                    continue
                restored.extend(self.restore(region, image))
                self.act(f"deregister {image_id} ({image.get('Name')}) in {region}")
                if not self.check_mode:
                    try:
                        api.deregister_image(image_id)
                    except ImageError as e:
                        # The next image, and the next region, are still removed.
                        left.append({"region": region, "resource": image_id, "reason": reason(e)})
                        keep_snapshots.update(image_snapshot_ids(image))
                        continue
                deleted.append({"region": region, "image_id": image_id, "snapshot_ids": image_snapshot_ids(image)})
                for snapshot_id in image_snapshot_ids(image):
                    left.extend(self.delete_snapshot(api, region, snapshot_id))
            if self.params.get("build_id"):
                # Snapshots of the bake whose image is gone already (an earlier sweep stopped half way).
                deleted_snapshots = {s for d in deleted if d["region"] == region for s in d["snapshot_ids"]}
                for snapshot in api.find_snapshots({self.build_tag: self.params["build_id"]}):
                    snapshot_id = snapshot["SnapshotId"]
                    if snapshot_id in keep_snapshots or snapshot_id in deleted_snapshots:
                        continue
                    left.extend(self.delete_snapshot(api, region, snapshot_id))
        return {
            "changed": bool(self.actions),
            "deleted": deleted,
            "restored": restored,
            "kept": kept,
            "left": left,
            "actions": self.actions,
        }

    def in_use(self, region, image_id, image):
        """Why the image must stay although it was never promoted, or None."""
        for name in self.params.get("protect_ssm_parameters") or []:
            if self.ssm(region).get_value(name) == image_id and name not in previous_values(image):
                return f"SSM parameter {name} names it, and no earlier value was recorded to put back"
        return None

    def restore(self, region, image):
        values = previous_values(image)
        if not values:
            return []
        lines = restore_parameters(self.ssm(region), image["ImageId"], values, self.check_mode)
        for line in lines:
            self.act(f"restore SSM parameter {line}")
        return lines

    def delete_snapshot(self, api, region, snapshot_id):
        self.act(f"delete snapshot {snapshot_id} in {region}")
        if self.check_mode:
            return []
        try:
            api.delete_snapshot(snapshot_id, attempts=self.params.get("snapshot_attempts") or 10, sleep=self.sleep)
        except ImageError as e:
            return [{"region": region, "resource": snapshot_id, "reason": reason(e)}]
        return []


# ---------------------------------------------------------------- what the images cost to keep

GIB = 1024**3
SIZE_FULL_SNAPSHOT = "full-snapshot-size"
SIZE_VOLUME = "volume-size"


def snapshot_size(snapshot):
    """(GiB, source) of one DescribeSnapshots entry: the bytes a full snapshot stores when AWS says
    (``FullSnapshotSizeInBytes``), else the volume's size, an upper bound (``volume-size``)."""
    full = snapshot.get("FullSnapshotSizeInBytes")
    if isinstance(full, int) and not isinstance(full, bool) and full > 0:
        return round(full / GIB, 3), SIZE_FULL_SNAPSHOT
    size = snapshot.get("VolumeSize")
    if size is None:
        raise ImageError(f"Snapshot {snapshot.get('SnapshotId')} has neither FullSnapshotSizeInBytes nor VolumeSize")
    return float(size), SIZE_VOLUME


def region_storage(api, image, prices=None):
    """The storage entry of one region: the image's snapshots, their size and what they cost per month."""
    image_id = image["image_id"]
    snapshot_ids = list(image.get("snapshot_ids") or [])
    found = {}
    if snapshot_ids:
        result = call(
            f"describe the snapshots of {image_id} in {api.region}",
            api.client.describe_snapshots,
            error=ImageError,
            SnapshotIds=snapshot_ids,
        )
        found = {s["SnapshotId"]: s for s in (result or {}).get("Snapshots") or []}
    snapshots = []
    for snapshot_id in snapshot_ids:
        if snapshot_id not in found:
            raise ImageError(f"Snapshot {snapshot_id} of {image_id} in {api.region} was not found")
        size_gib, size_source = snapshot_size(found[snapshot_id])
        snapshots.append({"snapshot_id": snapshot_id, "size_gib": size_gib, "size_source": size_source})
    size_gib = round(sum(s["size_gib"] for s in snapshots), 3)
    price = snapshot_storage_price(api.region, prices)
    entry = {
        "image_id": image_id,
        "snapshots": snapshots,
        "size_gib": size_gib,
        "usd_per_gb_month": None,
        "price_source": None,
        "usd_per_month": None,
    }
    if price is not None:
        entry["usd_per_gb_month"], entry["price_source"] = price
        entry["usd_per_month"] = round(size_gib * price[0], 4)
    return entry


def image_storage(ec2, images, prices=None):
    """What keeping ``images`` costs per month, in USD, region by region (snapshot storage, standard tier).

    ``ec2``: factory region -> ImageApi. ``images``: {region: {"image_id", "snapshot_ids"}}
    (golden_ami's summaries). ``prices``: snapshot storage prices that replace the
    table's (a number, or {region: USD per GB-month}).

    A snapshot's size is ``FullSnapshotSizeInBytes`` when AWS gives it, else its
    volume's size (an upper bound: the first snapshot of an image is billed for the
    blocks in use). This never raises for a failed read or a missing price: the
    entry then has an ``error`` and no total, so that a publish never fails for it.
    """
    storage = {"currency": "USD", "prices_as_of": PRICES_DATE, "regions": {}, "total_usd_per_month": None}
    errors = []
    for region, image in sorted((images or {}).items()):
        try:
            entry = region_storage(ec2(region), image, prices)
        except AwsError as e:
            errors.append(reason(e))
            continue
        except (ValueError, TypeError, KeyError) as e:
            errors.append(f"{region}: {e}")
            continue
        storage["regions"][region] = entry
        if entry["usd_per_month"] is None:
            errors.append(
                f"No snapshot storage price for {region} in the list prices of {PRICES_DATE}: "
                "give it in snapshot_storage_prices"
            )
    if errors:
        storage["error"] = "; ".join(errors)
    else:
        storage["total_usd_per_month"] = round(sum(e["usd_per_month"] for e in storage["regions"].values()), 4)
    return storage
