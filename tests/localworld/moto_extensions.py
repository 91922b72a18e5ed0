"""moto_server with what the local world needs and moto lacks: image deprecation, tags at image creation.

moto (5.2) answers EnableImageDeprecation with an error, so a bake that
deprecates its image (``deprecate_after_days``) could not run on the local
world. This script adds EnableImageDeprecation and DisableImageDeprecation to
moto's EC2 backend, as AWS documents them: the seconds are rounded to the
nearest minute, and the time is returned as the image's ``DeprecationTime`` by
DescribeImages. It also makes CreateImage and CopyImage take ``TagSpecifications``
for the image and its snapshots, as AWS does (moto 5.2 refuses snapshot tags in
CreateImage and ignores every tag in CopyImage), and CopyImage's
``CopyImageTags``. Then it runs moto's own server with the arguments it was given.

``localworld.moto.MotoServer`` runs it; run it alone as
``python -P tests/localworld/moto_extensions.py -H 127.0.0.1 -p PORT`` (``-P``: this
directory's ``moto.py`` must not shadow the package).
"""

from __future__ import annotations

import datetime
import sys

from moto.core.responses import ActionResult
from moto.ec2.exceptions import InvalidParameterValueError
from moto.ec2.responses.amis import AmisResponse
from moto.server import main

__all__ = ["deprecation_time", "install"]


def deprecation_time(value: str | datetime.datetime) -> str:
    """``DeprecateAt`` as AWS stores it: UTC, seconds rounded to the nearest minute (``...T10:00:00.000Z``)."""
    if isinstance(value, datetime.datetime):
        when = value
    else:
        try:
            when = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidParameterValueError(f"DeprecateAt {value!r} is not a date and time") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    when = when.astimezone(datetime.timezone.utc) + datetime.timedelta(seconds=30)
    return when.replace(second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _image(response: AmisResponse):
    [image] = response.ec2_backend.describe_images(ami_ids=[response._get_param("ImageId")])
    return image


def _enable_image_deprecation(self: AmisResponse) -> ActionResult:
    self.error_on_dryrun()
    image = _image(self)
    image.deprecation_time = deprecation_time(self._get_param("DeprecateAt"))
    return ActionResult({"Return": True})


def _disable_image_deprecation(self: AmisResponse) -> ActionResult:
    self.error_on_dryrun()
    _image(self).deprecation_time = None
    return ActionResult({"Return": True})


def _tags_by_type(response: AmisResponse) -> dict[str, dict[str, str]]:
    tags: dict[str, dict[str, str]] = {}
    for specification in response._get_param("TagSpecifications", []) or []:
        kind = specification.get("ResourceType")
        if kind not in ("image", "snapshot"):
            raise InvalidParameterValueError(f"TagSpecifications: resource type {kind!r} is not image or snapshot")
        for tag in specification.get("Tags", []) or []:
            tags.setdefault(kind, {})[tag["Key"]] = tag.get("Value", "")
    return tags


def _apply_tags(response: AmisResponse, image, tags: dict[str, dict[str, str]]) -> None:
    backend = response.ec2_backend
    if tags.get("image"):
        backend.create_tags([image.id], tags["image"])
    snapshot = getattr(image, "ebs_snapshot", None)
    if tags.get("snapshot") and snapshot is not None:
        backend.create_tags([snapshot.id], tags["snapshot"])


def _create_image(self: AmisResponse) -> ActionResult:
    self.error_on_dryrun()
    tags = _tags_by_type(self)
    image = self.ec2_backend.create_image(
        self._get_param("InstanceId"),
        self._get_param("Name"),
        self._get_param("Description", ""),
        tag_specifications=[],
    )
    _apply_tags(self, image, tags)
    return ActionResult({"ImageId": image.id})


def _copy_image(self: AmisResponse) -> ActionResult:
    self.error_on_dryrun()
    tags = _tags_by_type(self)
    source_region = self._get_param("SourceRegion")
    source_image_id = self._get_param("SourceImageId")
    image = self.ec2_backend.copy_image(
        source_image_id, source_region, self._get_param("Name"), self._get_param("Description")
    )
    if str(self._get_param("CopyImageTags", "false")).lower() == "true":
        from moto.ec2.models import ec2_backends

        [source] = ec2_backends[self.current_account][source_region].describe_images(ami_ids=[source_image_id])
        copied = {tag["key"]: tag["value"] for tag in source.get_tags()}
        tags["image"] = {**copied, **tags.get("image", {})}
    _apply_tags(self, image, tags)
    return ActionResult({"ImageId": image.id})


def install() -> None:
    AmisResponse.enable_image_deprecation = _enable_image_deprecation
    AmisResponse.disable_image_deprecation = _disable_image_deprecation
    AmisResponse.create_image = _create_image
    AmisResponse.copy_image = _copy_image


if __name__ == "__main__":
    install()
    sys.exit(main(sys.argv[1:]))
