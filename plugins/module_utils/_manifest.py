# -*- coding: utf-8 -*-

# Copyright: Contributors to the burst.golden_ami collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The build manifest: a JSON file that Packer's tooling reads, plus what the bake knows.

Private to this collection. ``build_manifest`` is a pure function: the same
images give the same document (its times come from the images, not from the
clock), so that writing it again changes nothing.
"""

from __future__ import annotations

import json
import os

from ansible_collections.burst.golden_ami.plugins.module_utils._aws import parse_time
from ansible_collections.burst.golden_ami.plugins.module_utils._files import read_json, write_json_atomic

MANIFEST_BUILDER_TYPE = "amazon-ebs"


def artifact_id(images_by_region, source_region):
    """Packer's ``artifact_id``: ``region:ami-…`` pairs, the source region first."""
    regions = [source_region, *sorted(r for r in images_by_region if r != source_region)]
    return ",".join(f"{region}:{images_by_region[region]['image_id']}" for region in regions)


def build_manifest(
    name,
    source_region,
    images_by_region,
    build_id=None,
    version=None,
    source_image=None,
    contents=None,
    storage=None,
):
    """The manifest document for one build.

    ``images_by_region`` maps a region to the summary of the image there
    (``image_id``, ``snapshot_ids``, ``creation_date``). ``storage`` (optional):
    what the images cost to keep per month (``_publish.image_storage``), under
    ``storage``.
    """
    source = images_by_region[source_region]
    build_time = int(parse_time(source["creation_date"]).timestamp()) if source.get("creation_date") else 0
    regions = {
        region: {"image_id": image["image_id"], "snapshot_ids": list(image.get("snapshot_ids") or [])}
        for region, image in sorted(images_by_region.items())
    }
    build = {
        "name": name,
        "builder_type": MANIFEST_BUILDER_TYPE,
        "build_time": build_time,
        "files": None,
        "artifact_id": artifact_id(images_by_region, source_region),
        "packer_run_uuid": build_id,
        "custom_data": {"version": version, "build_id": build_id},
    }
    manifest = {
        "builds": [build],
        "last_run_uuid": build_id,
        "name": name,
        "version": version,
        "build_id": build_id,
        "source_region": source_region,
        "source_image": source_image,
        "image_id": source["image_id"],
        "regions": regions,
        "contents": contents or {},
    }
    if storage is not None:
        manifest["storage"] = storage
    return manifest


def render_manifest(manifest):
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def manifest_differs(path, manifest):
    """True when the file at ``path`` does not hold ``manifest`` already."""
    try:
        return read_json(path, strict=True) != json.loads(render_manifest(manifest))
    except (OSError, ValueError):
        return True


def write_manifest(path, manifest, mode=0o644):
    """Write atomically: a reader never sees half a manifest."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise OSError(f"Directory {directory} does not exist")
    # The same text as render_manifest: indented, keys sorted, a final newline.
    write_json_atomic(path, manifest, mode=mode, sync=False)
